"""What placed workloads take from the shared pools and links, for deciding the next one."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from hetplace.engine.decision import Decision
from hetplace.engine.snapshot import Resources, Snapshot, Workload


def taken_by(w: Workload, d: Decision) -> tuple[dict[str, Resources], dict[tuple[str, str], float]]:
    """Resources per pool and bytes/s per (site, pool) link that a decision uses."""
    variants = {v.name: v for v in w.variants}
    encodings = {e.name: e for e in w.encodings}
    pools: dict[str, Resources] = defaultdict(Resources)
    links: dict[tuple[str, str], float] = defaultdict(float)
    for g in d.groups:
        pools[g.pool] = pools[g.pool].plus(variants[g.variant].resources.times(g.replicas))
        for r in g.routes:
            links[(r.site, g.pool)] += r.requests_per_second * (encodings[r.encoding].request_bytes + w.response_bytes)
    return dict(pools), dict(links)


def with_placed(snap: Snapshot, w: Workload, d: Decision) -> Snapshot:
    """The snapshot after `d` is deployed: its replicas and traffic count against everyone else."""
    pools, links = taken_by(w, d)
    used = dict(snap.pool_used)
    for name, resources in pools.items():
        used[name] = used.get(name, Resources()).plus(resources)
    load = dict(snap.link_load_bytes_per_s)
    for key, rate in links.items():
        load[key] = load.get(key, 0.0) + rate
    return dataclasses.replace(snap, pool_used=used, link_load_bytes_per_s=load)
