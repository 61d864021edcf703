"""What placed workloads take from the shared pools and links, for deciding the next one."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Iterable

from hetplace.engine.decision import Decision
from hetplace.engine.snapshot import Encoding, Resources, Snapshot, Workload


def route_bytes_per_s(w: Workload, encoding: Encoding, requests_per_second: float) -> float:
    """What one route puts on its link: its requests and their responses (DESIGN §3)."""
    return requests_per_second * (encoding.request_bytes + w.response_bytes)


def taken_by(w: Workload, d: Decision) -> tuple[dict[str, Resources], dict[tuple[str, str], float]]:
    """Resources per pool and bytes/s per (site, pool) link that a decision uses. A site's rate is
    the workload's current one when it has it (traffic moves under a deployed placement)."""
    variants = {v.name: v for v in w.variants}
    encodings = {e.name: e for e in w.encodings}
    current = {t.site: t.requests_per_second for t in w.traffic}
    pools: dict[str, Resources] = defaultdict(Resources)
    links: dict[tuple[str, str], float] = defaultdict(float)
    for g in d.groups:
        pools[g.pool] = pools[g.pool].plus(variants[g.variant].resources.times(g.replicas))
        for r in g.routes:
            rate = current.get(r.site, r.requests_per_second)
            links[(r.site, g.pool)] += route_bytes_per_s(w, encodings[r.encoding], rate)
    return dict(pools), dict(links)


class Ledger:
    """Running totals of what a set of placements takes, to charge against a snapshot.

    Adding and removing one placement is cheap, so "everyone but this workload" costs no more
    than one placement, however large the fleet.
    """

    def __init__(self, placed: Iterable[tuple[Workload, Decision]] = ()) -> None:
        self.pool_used: dict[str, Resources] = defaultdict(Resources)
        self.link_load: dict[tuple[str, str], float] = defaultdict(float)
        for w, d in placed:
            self.add(w, d)

    def add(self, w: Workload, d: Decision, sign: int = 1) -> None:
        if not d.feasible:
            return
        pools, links = taken_by(w, d)
        for name, resources in pools.items():
            self.pool_used[name] = self.pool_used[name].plus(resources.times(sign))
        for key, rate in links.items():
            self.link_load[key] += sign * rate

    def remove(self, w: Workload, d: Decision) -> None:
        self.add(w, d, sign=-1)

    def charged(self, snap: Snapshot) -> Snapshot:
        """`snap` with everything in the ledger counted against its pools and links."""
        used = dict(snap.pool_used)
        for name, resources in self.pool_used.items():
            used[name] = used.get(name, Resources()).plus(resources)
        load = dict(snap.link_load_bytes_per_s)
        for key, rate in self.link_load.items():
            load[key] = load.get(key, 0.0) + rate
        return dataclasses.replace(snap, pool_used=used, link_load_bytes_per_s=load)


def with_placed(snap: Snapshot, w: Workload, d: Decision) -> Snapshot:
    """The snapshot after `d` is deployed: its replicas and traffic count against everyone else."""
    return Ledger([(w, d)]).charged(snap)
