"""Every candidate group (pool, variant) evaluated for every subset of sites, vectorised.

A group's replicas depend on the total arrival rate of its routes and on its slowest network
leg, so for each subset T of sites and each group g this module finds the minimal replicas,
the cost, the preferred encodings and the worst predicted latency. The optimiser then only
combines table rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hetplace.engine.cost import replica_cost_per_hour, replicas_that_fit
from hetplace.engine.decision import GroupPlan, RoutePlan
from hetplace.engine.filters import Verdict, accuracy_met, link_exists, link_utilization_verdict
from hetplace.engine.queueing import compute_latency_s, min_replicas_for_utilization, service_quantile_s
from hetplace.engine.snapshot import Pool, Resources, Snapshot, Traffic, Variant, Workload

NANO = 1_000_000_000  # costs are compared as integer nano-dollars per hour: exact sums, exact ties
INFEASIBLE_COST = np.iinfo(np.int64).max // 4
EPS_S = 1e-9  # latency comparisons tolerate float noise of a nanosecond


@dataclass(frozen=True)
class Candidate:
    """A (pool, variant) that passed the group filters."""

    pool: Pool
    variant: Variant
    replica_cost_per_hour: float
    replicas_that_fit: int


@dataclass
class RouteTable:
    """Network legs of every (candidate, site, encoding); inf where a route filter failed."""

    seconds: np.ndarray          # (G, k, E)
    utilization: np.ndarray      # (G, k, E), inf where no link or accuracy too low
    has_link: np.ndarray         # (G, k)
    accurate: np.ndarray         # (G, E)
    # (G, k): the utilisation a route may bring its link to: maxLinkUtilization, or less where the
    # routes already on the link would miss their SLO beyond it
    link_cap: np.ndarray

    best_seconds: np.ndarray = field(init=False)   # (G, k): each route's fastest leg

    def __post_init__(self) -> None:
        self.best_seconds = self.seconds.min(axis=2)

    def verdicts(self, w: Workload, sites: tuple[Traffic, ...], cands: list[Candidate], g: int, s: int) -> list[Verdict]:
        """The route filters that failed for site s on candidate g, one per encoding at most."""
        cand, site = cands[g], sites[s].site
        if not self.has_link[g, s]:
            return [link_exists(site, cand.pool)]
        found = []
        for e, enc in enumerate(w.encodings):
            if not self.accurate[g, e]:
                found.append(accuracy_met(w, cand.variant, enc))
            elif not np.isfinite(self.seconds[g, s, e]):
                found.append(link_utilization_verdict(site, cand.pool, enc, float(self.utilization[g, s, e]),
                                                      w.max_link_utilization, float(self.link_cap[g, s])))
        return found


def route_table(w: Workload, snap: Snapshot, sites: tuple[Traffic, ...], cands: list[Candidate]) -> RouteTable:
    """u = (traffic already on the link + this route) / BW; t = RTT + b / (BW·(1−u)), vectorised."""
    G, k = len(cands), len(sites)
    bandwidth = np.full((G, k), np.nan)
    rtt_s = np.zeros((G, k))
    background = np.zeros((G, k))
    limit = np.full((G, k), math.inf)
    for g, cand in enumerate(cands):
        for s, t in enumerate(sites):
            link = cand.pool.link_from(t.site)
            if link is not None:
                bandwidth[g, s] = link.bandwidth_bytes_per_s
                rtt_s[g, s] = link.rtt_ms / 1000.0
                background[g, s] = snap.link_load_bytes_per_s.get((t.site, cand.pool.name), 0.0)
                limit[g, s] = snap.link_limit_bytes_per_s.get((t.site, cand.pool.name), math.inf)
    has_link = ~np.isnan(bandwidth)
    accurate = np.array([[accuracy_met(w, c.variant, e) is None for e in w.encodings] for c in cands],
                        dtype=bool).reshape(G, len(w.encodings))
    payload = np.array([e.request_bytes + w.response_bytes for e in w.encodings], dtype=float)   # (E,)
    rps = np.array([t.requests_per_second for t in sites], dtype=float)                        # (k,)
    with np.errstate(invalid="ignore", divide="ignore"):
        utilization = (background[:, :, None] + rps[None, :, None] * payload[None, None, :]) / bandwidth[:, :, None]
        link_cap = np.minimum(w.max_link_utilization, limit / bandwidth)
        fits = (utilization <= link_cap[:, :, None] + 1e-12) & (utilization < 1.0)
        seconds = rtt_s[:, :, None] + payload[None, None, :] / (bandwidth[:, :, None] * (1.0 - utilization))
    usable = has_link[:, :, None] & accurate[:, None, :]
    utilization = np.where(usable, utilization, math.inf)
    seconds = np.where(usable & fits, seconds, math.inf)
    return RouteTable(seconds, utilization, has_link, accurate, np.where(has_link, link_cap, w.max_link_utilization))


@dataclass
class GroupTable:
    """Per (candidate g, site subset T): replicas, cost, encoding ranks and worst latency."""

    members: np.ndarray      # (n, k) bool: site s in subset T
    replicas: np.ndarray     # (G, n) int
    cost_nano: np.ndarray    # (G, n) int64, INFEASIBLE_COST where infeasible
    compute_s: np.ndarray    # (G, n)
    encoding: np.ndarray     # (G, n, k) chosen encoding index per site, where scored
    rank_sum: np.ndarray     # (G, n), where scored
    worst_s: np.ndarray      # (G, n), inf where not scored
    scored: np.ndarray       # (G, n) bool: feasible entries whose tie-break keys were computed
    # (G, n): the slowest leg must exceed this for the replicas to be minimal (latency frontier rows)
    slowest_leg_above_s: np.ndarray | None = None
    feasible: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.feasible = self.cost_nano < INFEASIBLE_COST


def subset_members(k: int) -> np.ndarray:
    n = 1 << k
    return ((np.arange(n)[:, None] >> np.arange(k)[None, :]) & 1).astype(bool)


def _subset_max(per_site: np.ndarray) -> np.ndarray:
    """(G, k) -> (G, 2^k): max over the sites of each subset (-inf for the empty one)."""
    G, k = per_site.shape
    out = np.full((G, 1 << k), -math.inf)
    for s in range(k):
        half = 1 << s
        out[:, half: 2 * half] = np.maximum(out[:, :half], per_site[:, s: s + 1])
    return out


def compute_table(
    w: Workload, variant: Variant, arrival: np.ndarray, least: int, width: int, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """For each subset's arrival rate: replicas r_lo+start..r_lo+width-1 and their compute latency."""
    r_lo = np.maximum(
        min_replicas_for_utilization(arrival, variant.latency_ms, variant.concurrency, w.max_utilization),
        least,
    )
    replicas = r_lo[:, None] + np.arange(start, width)[None, :]
    seconds = compute_latency_s(
        replicas, variant.concurrency, np.broadcast_to(arrival[:, None], replicas.shape),
        variant.latency_ms, variant.tail_latency_ms, w.percentile,
    )
    seconds = np.where(replicas <= w.replicas_max, seconds, math.inf)
    return replicas, seconds


def pool_starts(cands: list[Candidate]) -> np.ndarray:
    """Index of each pool's first candidate (candidates come grouped by pool)."""
    return np.array([g for g in range(len(cands)) if g == 0 or cands[g].pool.name != cands[g - 1].pool.name],
                    dtype=np.int64)


def contenders(cost_nano: np.ndarray, feasible: np.ndarray, starts: np.ndarray, keep: int) -> np.ndarray:
    """(G, n) mask: per subset, each pool's cheapest variants among the `keep` cheapest pools (ties kept).

    The exact search only ever looks at a subset's best `keep` pools, and cost orders first, so
    the tie-break keys are needed for these entries alone.
    """
    if len(starts) == 0:
        return feasible
    per_pool = np.minimum.reduceat(cost_nano, starts, axis=0)                 # (P, n)
    keep = min(keep, per_pool.shape[0])
    cutoff = np.partition(per_pool, keep - 1, axis=0)[keep - 1]               # (n,)
    pool_of = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, cost_nano.shape[0])))
    return feasible & (cost_nano == per_pool[pool_of]) & (cost_nano <= cutoff[None, :])


def group_table(
    w: Workload, sites: tuple[Traffic, ...], cands: list[Candidate], routes: RouteTable, keep: int | None = None
) -> GroupTable:
    """Replicas and cost of every (candidate, subset); tie-break keys for all feasible entries, or,
    with `keep`, only for the contenders of a search that keeps that many pools per subset."""
    k = len(sites)
    G = len(cands)
    n = 1 << k
    members = subset_members(k)
    rps = np.array([t.requests_per_second for t in sites], dtype=float)
    arrival = members.astype(float) @ rps
    slo_s = w.slo_latency_ms / 1000.0
    least = max(w.replicas_min, 1)
    worst_net = _subset_max(routes.best_seconds)          # (G, n)
    budget = slo_s - worst_net                             # compute time each group may spend

    replicas = np.zeros((G, n), dtype=np.int64)
    compute_s = np.full((G, n), math.inf)
    by_variant: dict[str, list[int]] = {}
    for g, c in enumerate(cands):
        by_variant.setdefault(c.variant.name, []).append(g)
    for gs in by_variant.values():
        variant = cands[gs[0]].variant
        idx = np.array(gs)
        need = budget[idx]                                 # (Gv, n)
        width = 8
        while True:
            reps, secs = compute_table(w, variant, arrival, least, width)
            ok = secs[None, :, :] <= need[:, :, None] + EPS_S
            found = ok.any(axis=2)
            # widen only where the last column still waits and more replicas are allowed
            last_waits = secs[:, -1] > service_quantile_s(variant.latency_ms, variant.tail_latency_ms,
                                                          w.percentile) + EPS_S
            more = (~found) & np.isfinite(need) & last_waits[None, :] & (reps[:, -1] < w.replicas_max)[None, :]
            if not more.any() or width >= w.replicas_max:
                break
            width *= 4
        first = ok.argmax(axis=2)
        chosen_r = np.take_along_axis(np.broadcast_to(reps, (len(gs),) + reps.shape), first[:, :, None], 2)[..., 0]
        chosen_s = np.take_along_axis(np.broadcast_to(secs, (len(gs),) + secs.shape), first[:, :, None], 2)[..., 0]
        replicas[idx] = np.where(found, chosen_r, 0)
        compute_s[idx] = np.where(found, chosen_s, math.inf)

    slots = np.array([c.replicas_that_fit for c in cands])[:, None]
    unit = np.array([c.replica_cost_per_hour for c in cands])[:, None]
    feasible = np.isfinite(compute_s) & (replicas <= slots) & (replicas >= 1)
    feasible[:, 0] = False
    cost_nano = np.where(feasible, np.rint(replicas * unit * NANO), INFEASIBLE_COST).astype(np.int64)

    # Preferred encoding per site: the earliest whose leg still fits beside the compute time.
    scored = feasible if keep is None else contenders(cost_nano, feasible, pool_starts(cands), keep)
    g_idx, t_idx = np.nonzero(scored)
    legs = routes.seconds[g_idx]                                          # (F, k, E)
    fits = legs <= (slo_s - compute_s[g_idx, t_idx] + EPS_S)[:, None, None]
    chosen = fits.argmax(axis=2)                                          # (F, k)
    inside = members[t_idx]                                               # (F, k)
    encoding = np.zeros((G, n, k), dtype=np.int8)
    encoding[g_idx, t_idx] = chosen
    rank_sum = np.zeros((G, n), dtype=np.int64)
    rank_sum[g_idx, t_idx] = (chosen * inside).sum(axis=1)
    leg = np.take_along_axis(legs, chosen[:, :, None], 2)[:, :, 0]
    worst_s = np.full((G, n), math.inf)
    worst_s[g_idx, t_idx] = np.where(inside, leg, -math.inf).max(axis=1) + compute_s[g_idx, t_idx]
    return GroupTable(members, replicas, cost_nano, compute_s, encoding, rank_sum, worst_s, scored)


def candidates(w: Workload, snap: Snapshot, passed: list[tuple[Pool, Variant]]) -> list[Candidate]:
    return [
        Candidate(
            pool,
            w.variant_on(pool.name, v),
            replica_cost_per_hour(pool, v.resources),
            min(w.replicas_max, replicas_that_fit(pool, v.resources, snap.pool_used.get(pool.name, Resources()))),
        )
        for pool, v in passed
    ]


def group_plan(w: Workload, sites: tuple[Traffic, ...], cand: Candidate, g: int, routes: RouteTable,
               members: tuple[int, ...], encodings: tuple[int, ...], replicas: int, compute_s: float) -> GroupPlan:
    """The plan of candidate g serving `members` with the given encodings, replicas and compute time."""
    plans = tuple(
        RoutePlan(
            site=sites[s].site,
            encoding=w.encodings[e].name,
            requests_per_second=sites[s].requests_per_second,
            predicted_latency_ms=(float(routes.seconds[g, s, e]) + compute_s) * 1000.0,
            network_ms=float(routes.seconds[g, s, e]) * 1000.0,
            compute_ms=compute_s * 1000.0,
            link_utilization=float(routes.utilization[g, s, e]),
        )
        for s, e in zip(members, encodings)
    )
    return GroupPlan(cand.pool.name, cand.variant.name, replicas, replicas * cand.replica_cost_per_hour, plans)
