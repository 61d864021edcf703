"""What placed workloads take from the shared pools and links, for deciding the next one."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from types import MappingProxyType
from typing import Iterable, Iterator, Mapping

from hetplace.engine.decision import Decision
from hetplace.engine.groups import EPS_S
from hetplace.engine.snapshot import Encoding, LinkState, Pool, Resources, Snapshot, Workload

Link = tuple[str, str]      # (site, pool)
# what one placement is charged with: resources per pool, load per link, tolerance per link, as
# (key, value) pairs (a ledger keeps one per placed workload: pairs take a third of what dicts take)
Charge = tuple[tuple[tuple[str, Resources], ...], tuple[tuple[Link, float], ...], tuple[tuple[Link, float], ...]]


def route_bytes_per_s(w: Workload, encoding: Encoding, requests_per_second: float) -> float:
    """What one route puts on its link: its requests and their responses (docs/design.md §3)."""
    return requests_per_second * (encoding.request_bytes + w.response_bytes)


def route_tolerance_bytes_per_s(link: LinkState, payload_bytes: float, compute_s: float, slo_s: float,
                                max_link_utilization: float) -> float:
    """The most total load its link may carry while this route still meets its SLO and the cap:
    RTT + b/(BW − L) <= SLO − t_comp  ⇔  L <= BW − b/(SLO − t_comp − RTT)."""
    bandwidth = link.bandwidth_bytes_per_s
    budget = slo_s + EPS_S - compute_s - link.rtt_ms / 1000.0
    if budget <= 0:
        return -math.inf
    return min(bandwidth * (max_link_utilization + 1e-12), bandwidth - payload_bytes / budget)


def taken_by(w: Workload, d: Decision) -> tuple[dict[str, Resources], dict[Link, float]]:
    """Resources per pool and bytes/s per (site, pool) link that a decision uses. A site's rate is
    the workload's current one when it has it (traffic moves under a deployed placement). A
    variant or encoding the spec no longer names (it was renamed under a running placement) is
    not charged: what it takes is no longer known, and the rebalance repairs that placement."""
    variants = {v.name: v for v in w.variants}
    encodings = {e.name: e for e in w.encodings}
    current = {t.site: t.requests_per_second for t in w.traffic}
    pools: dict[str, Resources] = defaultdict(Resources)
    links: dict[Link, float] = defaultdict(float)
    for g in d.groups:
        if g.variant in variants:
            pools[g.pool] = pools[g.pool].plus(variants[g.variant].resources.times(g.replicas))
        for r in g.routes:
            if r.encoding in encodings:
                rate = current.get(r.site, r.requests_per_second)
                links[(r.site, g.pool)] += route_bytes_per_s(w, encodings[r.encoding], rate)
    return dict(pools), dict(links)


def tolerances_of(w: Workload, d: Decision, pools: Mapping[str, Pool]) -> dict[Link, float]:
    """For each link a decision uses: the total load at which its route there would miss the SLO."""
    encodings = {e.name: e for e in w.encodings}
    found = {}
    for g in d.groups:
        pool = pools.get(g.pool)
        for r in g.routes:
            link = pool.link_from(r.site) if pool is not None else None
            if link is not None and r.encoding in encodings:
                payload = encodings[r.encoding].request_bytes + w.response_bytes
                found[(r.site, g.pool)] = route_tolerance_bytes_per_s(
                    link, payload, r.compute_ms / 1000.0, w.slo_latency_ms / 1000.0, w.max_link_utilization)
    return found


class _LinkLimits(Mapping[Link, float]):
    """link -> the smallest tolerance of the routes on it (a live view of the ledger)."""

    def __init__(self, by_link: dict[Link, dict[str, float]]) -> None:
        self._by_link = by_link

    def __getitem__(self, link: Link) -> float:
        tolerances = self._by_link.get(link)
        if not tolerances:
            raise KeyError(link)
        return min(tolerances.values())

    def __iter__(self) -> Iterator[Link]:
        return (link for link, tolerances in self._by_link.items() if tolerances)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class Ledger:
    """Running totals of what a set of placements takes, to charge against a snapshot: resources
    per pool, load per link, and per link the load at which a route already on it would miss
    its SLO (so the next decision cannot break the ones before it).

    Adding and removing one placement is cheap, so "everyone but this workload" costs no more
    than one placement, however large the fleet.
    """

    def __init__(self, pools: Iterable[Pool], placed: Iterable[tuple[Workload, Decision]] = ()) -> None:
        self.pools = {p.name: p for p in pools}
        self.pool_used: dict[str, Resources] = defaultdict(Resources)
        self.link_load: dict[Link, float] = defaultdict(float)
        self._tolerances: dict[Link, dict[str, float]] = defaultdict(dict)
        self.link_limit: Mapping[Link, float] = _LinkLimits(self._tolerances)
        self._charged: dict[str, Charge] = {}
        for w, d in placed:
            self.add(w, d)

    def add(self, w: Workload, d: Decision, protect: bool = True) -> None:
        """Charge `d` for `w` (replacing what `w` had). With `protect=False` its routes' tolerances
        are not kept: a placement that already misses its SLO cannot veto the moves that repair it."""
        self.remove(w)
        if not d.feasible:
            return
        pools, links = taken_by(w, d)
        tolerances = tolerances_of(w, d, self.pools) if protect else {}
        charge = (tuple(pools.items()), tuple(links.items()), tuple(tolerances.items()))
        self._charged[w.key] = charge
        self._apply(w.key, *charge, 1)

    def remove(self, w: Workload, d: Decision | None = None) -> Charge | None:
        """Take back what `w` was charged with (as it was added, even if its spec changed since);
        the charge is returned so that `restore` can put it back exactly."""
        charged = self._charged.pop(w.key, None)
        if charged is not None:
            self._apply(w.key, *charged, -1)
        return charged

    def links_of(self, key: str) -> dict[Link, float]:
        """The link load charged for one workload."""
        charge = self._charged.get(key)
        return dict(charge[1]) if charge else {}

    def restore(self, w: Workload, charge: Charge | None) -> None:
        self.remove(w)
        if charge is not None:
            self._charged[w.key] = charge
            self._apply(w.key, *charge, 1)

    def _apply(self, key: str, pools: Iterable[tuple[str, Resources]], links: Iterable[tuple[Link, float]],
               tolerances: Iterable[tuple[Link, float]], sign: int) -> None:
        for name, resources in pools:
            self.pool_used[name] = self.pool_used[name].plus(resources.times(sign))
        for link, rate in links:
            self.link_load[link] += sign * rate
        for link, tolerance in tolerances:
            if sign > 0:
                self._tolerances[link][key] = tolerance
            else:
                self._tolerances[link].pop(key, None)

    def charged(self, snap: Snapshot) -> Snapshot:
        """`snap` with everything in the ledger counted against its pools and links.

        When `snap` charges nothing of its own, the result reads the ledger's totals through a
        read-only view instead of a copy (deciding workload after workload stays linear); it
        is valid until the ledger next changes.
        """
        if not snap.pool_used and not snap.link_load_bytes_per_s and not snap.link_limit_bytes_per_s:
            return dataclasses.replace(snap, pool_used=MappingProxyType(self.pool_used),
                                       link_load_bytes_per_s=MappingProxyType(self.link_load),
                                       link_limit_bytes_per_s=MappingProxyType(self.link_limit))
        used = dict(snap.pool_used)
        for name, resources in self.pool_used.items():
            used[name] = used.get(name, Resources()).plus(resources)
        load = dict(snap.link_load_bytes_per_s)
        for key, rate in self.link_load.items():
            load[key] = load.get(key, 0.0) + rate
        limit = dict(snap.link_limit_bytes_per_s)
        for key, tolerance in self.link_limit.items():
            limit[key] = min(limit.get(key, math.inf), tolerance)
        return dataclasses.replace(snap, pool_used=used, link_load_bytes_per_s=load, link_limit_bytes_per_s=limit)


def with_placed(snap: Snapshot, w: Workload, d: Decision) -> Snapshot:
    """The snapshot after `d` is deployed: its replicas and traffic count against everyone else."""
    return Ledger(snap.pools, [(w, d)]).charged(snap)
