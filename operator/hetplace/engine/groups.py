"""Every candidate group (pool, variant) evaluated for every subset of sites, vectorised.

A group's replicas depend on the total arrival rate of its routes and on its slowest network
leg, so for each subset T of sites and each group g this module finds the minimal replicas,
the cost, the preferred encodings and the worst predicted latency. The optimiser then only
combines table rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hetplace.engine.cost import replica_cost_per_hour, replicas_that_fit
from hetplace.engine.filters import Verdict, accuracy_met, link_exists, link_utilization_verdict
from hetplace.engine.network import transfer
from hetplace.engine.queueing import compute_latency_s, min_replicas_for_utilization
from hetplace.engine.snapshot import Pool, Resources, Snapshot, Traffic, Variant, Workload

NANO = 1_000_000_000  # costs are compared as integer nano-dollars per hour: exact sums, exact ties
INFEASIBLE_COST = np.iinfo(np.int64).max // 4
_EPS_S = 1e-9


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
    utilization: np.ndarray      # (G, k, E)
    verdicts: dict[tuple[int, int], list[Verdict]]  # why (g, s) lost encodings

    @property
    def best_seconds(self) -> np.ndarray:  # (G, k)
        return self.seconds.min(axis=2)


def route_table(w: Workload, snap: Snapshot, sites: tuple[Traffic, ...], cands: list[Candidate]) -> RouteTable:
    G, k, E = len(cands), len(sites), len(w.encodings)
    seconds = np.full((G, k, E), math.inf)
    utilization = np.full((G, k, E), math.inf)
    verdicts: dict[tuple[int, int], list[Verdict]] = {}
    for g, cand in enumerate(cands):
        for s, t in enumerate(sites):
            missing = link_exists(t.site, cand.pool)
            if missing:
                verdicts[(g, s)] = [missing]
                continue
            link = cand.pool.link_from(t.site)
            background = snap.link_load_bytes_per_s.get((t.site, cand.pool.name), 0.0)
            found: list[Verdict] = []
            for e, enc in enumerate(w.encodings):
                weak = accuracy_met(w, cand.variant, enc)
                if weak:
                    found.append(weak)
                    continue
                leg = transfer(link, enc.request_bytes, w.response_bytes, t.requests_per_second,
                               background, w.max_link_utilization)
                utilization[g, s, e] = leg.link_utilization
                if not leg.fits:
                    found.append(link_utilization_verdict(t.site, cand.pool, enc, leg.link_utilization,
                                                          w.max_link_utilization))
                    continue
                seconds[g, s, e] = leg.seconds
            if found:
                verdicts[(g, s)] = found
    return RouteTable(seconds, utilization, verdicts)


@dataclass
class GroupTable:
    """Per (candidate g, site subset T): replicas, cost, encoding ranks and worst latency."""

    members: np.ndarray      # (n, k) bool: site s in subset T
    replicas: np.ndarray     # (G, n) int
    cost_nano: np.ndarray    # (G, n) int64, INFEASIBLE_COST where infeasible
    compute_s: np.ndarray    # (G, n)
    encoding: np.ndarray     # (G, n, k) chosen encoding index per site
    rank_sum: np.ndarray     # (G, n)
    worst_s: np.ndarray      # (G, n)

    @property
    def feasible(self) -> np.ndarray:
        return self.cost_nano < INFEASIBLE_COST


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
    w: Workload, variant: Variant, arrival: np.ndarray, least: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each subset's arrival rate: replicas r_lo..r_lo+width-1 and their compute latency."""
    r_lo = np.maximum(
        min_replicas_for_utilization(arrival, variant.latency_ms, variant.concurrency, w.max_utilization),
        least,
    )
    replicas = r_lo[:, None] + np.arange(width)[None, :]
    seconds = compute_latency_s(
        replicas, variant.concurrency, np.broadcast_to(arrival[:, None], replicas.shape),
        variant.latency_ms, variant.tail_latency_ms, w.percentile,
    )
    seconds = np.where(replicas <= w.replicas_max, seconds, math.inf)
    return replicas, seconds


def group_table(
    w: Workload, sites: tuple[Traffic, ...], cands: list[Candidate], routes: RouteTable
) -> GroupTable:
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
            ok = secs[None, :, :] <= need[:, :, None] + _EPS_S
            found = ok.any(axis=2)
            # widen only where the last column still waits and more replicas are allowed
            last_waits = secs[:, -1] > variant.tail_latency_ms / 1000.0 + _EPS_S
            more = (~found) & np.isfinite(need) & last_waits[None, :] & (reps[:, -1] < w.replicas_max)[None, :]
            more &= (reps[:, -1] > 0)[None, :]
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
    leg_budget = slo_s - compute_s                         # (G, n)
    fits = routes.seconds[:, None, :, :] <= leg_budget[:, :, None, None] + _EPS_S   # (G, n, k, E)
    encoding = fits.argmax(axis=3)                         # (G, n, k)
    rank_sum = (encoding * members[None, :, :]).sum(axis=2)
    leg = np.take_along_axis(
        np.broadcast_to(routes.seconds[:, None, :, :], fits.shape), encoding[..., None], 3
    )[..., 0]
    leg = np.where(members[None, :, :], leg, -math.inf)
    worst_s = leg.max(axis=2) + compute_s
    worst_s = np.where(feasible, worst_s, math.inf)
    return GroupTable(members, replicas, cost_nano, compute_s, encoding, rank_sum, worst_s)


def candidates(w: Workload, snap: Snapshot, passed: list[tuple[Pool, Variant]]) -> list[Candidate]:
    return [
        Candidate(
            pool,
            v,
            replica_cost_per_hour(pool, v.resources),
            min(w.replicas_max, replicas_that_fit(pool, v.resources, snap.pool_used.get(pool.name, Resources()))),
        )
        for pool, v in passed
    ]
