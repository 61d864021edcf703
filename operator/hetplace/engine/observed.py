"""Observed conditions (link bandwidth, traffic) laid over the declared pools and workloads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Sequence

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


CORRECTION_BOUNDS = (0.5, 4.0)


def correction_factor(observed_ms: float, profile_ms: float) -> float:
    """Observed over profiled service time, bounded to [0.5, 4] so one odd reading cannot make a
    pool look free or useless."""
    low, high = CORRECTION_BOUNDS
    if profile_ms <= 0 or not observed_ms > 0:
        return 1.0
    return min(high, max(low, observed_ms / profile_ms))


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


def planning_view(history: Sequence[tuple[tuple[Pool, ...], tuple[Workload, ...]]]) -> tuple[tuple[Pool, ...],
                                                                                            tuple[Workload, ...]]:
    """The conditions to plan for, from recent observations (oldest first, the latest last): each
    link at the lowest bandwidth and highest RTT, each site at the highest traffic seen in the
    window — and, where its last two observations rise, one more step of that rise.

    A control loop acts one cycle after it observes, so sizing for the latest sample alone is
    undone by the next noisy or rising one; like the HPA's stabilisation window, planning for the
    worst of the recent past keeps a placement from flapping. Pools up or down are as observed last.
    """
    pools, workloads = history[-1]
    if len(history) == 1:
        return pools, workloads
    bandwidth: dict[tuple[str, str], list[float]] = {}
    rtt: dict[tuple[str, str], float] = {}
    for past_pools, _ in history:
        for p in past_pools:
            for site, link in p.links.items():
                bandwidth.setdefault((p.name, site), []).append(link.bandwidth_kbps)
                rtt[(p.name, site)] = max(rtt.get((p.name, site), 0.0), link.rtt_ms)
    rates: dict[tuple[str, str], list[float]] = {}
    for _, past_workloads in history:
        for w in past_workloads:
            for t in w.traffic:
                rates.setdefault((w.key, t.site), []).append(t.requests_per_second)

    def worst_bandwidth(seen: list[float]) -> float:
        return min(seen)      # links drop in steps, not ramps: a trend would only amplify noise

    def worst_rate(seen: list[float]) -> float:
        trend = seen[-1] - seen[-2] if len(seen) > 1 else 0.0
        return max(max(seen), seen[-1] + max(trend, 0.0))

    planned_pools = tuple(
        dataclasses.replace(p, links={site: LinkState(worst_bandwidth(bandwidth[(p.name, site)]), rtt[(p.name, site)])
                                      for site in p.links})
        for p in pools)
    planned_workloads = tuple(
        dataclasses.replace(w, traffic=tuple(Traffic(t.site, worst_rate(rates[(w.key, t.site)])) for t in w.traffic))
        for w in workloads)
    return planned_pools, planned_workloads
