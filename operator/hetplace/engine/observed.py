"""Observed conditions (link bandwidth, traffic) laid over the declared pools and workloads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

from hetplace.engine.snapshot import LinkState, Pool, Traffic, Workload


@dataclass(frozen=True)
class LinkObservation:
    site: str
    pool: str
    bandwidth_kbps: float
    rtt_ms: float


@dataclass(frozen=True)
class TrafficObservation:
    workload: str      # NAMESPACE/NAME
    site: str
    requests_per_second: float


def with_links(pools: Iterable[Pool], observations: Iterable[LinkObservation]) -> tuple[Pool, ...]:
    """Pools whose links are replaced (or added) by what was observed."""
    by_pool: dict[str, dict[str, LinkState]] = {}
    for o in observations:
        by_pool.setdefault(o.pool, {})[o.site] = LinkState(o.bandwidth_kbps, o.rtt_ms)
    return tuple(
        dataclasses.replace(p, links={**p.links, **by_pool[p.name]}) if p.name in by_pool else p for p in pools
    )


def with_traffic(workload: Workload, observations: Iterable[TrafficObservation]) -> Workload:
    """The workload with observed request rates per site; a site seen for the first time is added."""
    rates = {o.site: o.requests_per_second for o in observations if o.workload == workload.key}
    if not rates:
        return workload
    declared = {t.site for t in workload.traffic}
    traffic = tuple(Traffic(t.site, rates.get(t.site, t.requests_per_second)) for t in workload.traffic)
    traffic += tuple(Traffic(site, rps) for site, rps in sorted(rates.items()) if site not in declared)
    return dataclasses.replace(workload, traffic=traffic)
