"""For MinLatency: every (candidate, subset) as a short frontier of (replicas, worst latency).

A group's replicas are the fewest that meet the SLO for its routes' slowest leg D, so its worst
route takes D + compute(r(D)). A slower encoding on one route can raise D enough to need one
more replica, whose shorter queue makes every other route faster. So a group is not one option
but one per replica count r: the smallest achievable D that needs exactly r replicas, with the
encodings that reach it. Each becomes a row of a table shaped like GroupTable, so the same
search runs over it; rows of one candidate share its pool, and the search keeps one per pool.
"""

from __future__ import annotations

import math

import numpy as np

from hetplace.engine.groups import (
    _EPS_S,
    INFEASIBLE_COST,
    NANO,
    Candidate,
    GroupTable,
    RouteTable,
    compute_table,
)
from hetplace.engine.snapshot import Traffic, Workload


def _full_compute_table(w: Workload, cand: Candidate, arrival: np.ndarray, least: int):
    """Replica columns from the utilisation floor until the queue wait vanishes or the cap is hit."""
    width = 8
    while True:
        reps, secs = compute_table(w, cand.variant, arrival, np.int64(least), width)
        floor_s = cand.variant.tail_latency_ms / 1000.0 if w.percentile >= 90 else cand.variant.latency_ms / 1000.0
        still_waits = (secs[:, -1] > floor_s + _EPS_S) & np.isfinite(secs[:, -1])
        if not still_waits.any() or width >= w.replicas_max:
            return reps, secs
        width *= 2


def frontier_table(
    w: Workload, sites: tuple[Traffic, ...], cands: list[Candidate], routes: RouteTable, base: GroupTable
) -> tuple[list[int], GroupTable]:
    """Rows (candidate index per row) and their table; `base` is the MinCost table of the same inputs."""
    k = len(sites)
    n = 1 << k
    E = len(w.encodings)
    members = base.members
    rps = np.array([t.requests_per_second for t in sites], dtype=float)
    arrival = members.astype(float) @ rps
    slo_s = w.slo_latency_ms / 1000.0
    least = max(w.replicas_min, 1)
    tables = {}
    for c in cands:
        if c.variant.name not in tables:
            tables[c.variant.name] = _full_compute_table(w, c, arrival, least)
    width = max(reps.shape[1] for reps, _ in tables.values())

    rows: list[int] = []
    G2 = len(cands) * width
    replicas = np.zeros((G2, n), dtype=np.int64)
    compute_s = np.full((G2, n), math.inf)
    cost_nano = np.full((G2, n), INFEASIBLE_COST, dtype=np.int64)
    encoding = np.zeros((G2, n, k), dtype=np.int8)
    rank_sum = np.zeros((G2, n), dtype=np.int64)
    worst_s = np.full((G2, n), math.inf)

    for g, cand in enumerate(cands):
        reps, secs = tables[cand.variant.name]
        t_idx = np.nonzero(base.feasible[g])[0]
        legs = routes.seconds[g]                                            # (k, E)
        inside = members[t_idx]                                             # (F, k)
        values = np.where(inside[:, :, None], legs[None, :, :], math.inf)   # (F, k, E)
        flat = values.reshape(len(t_idx), k * E)
        slowest_best = np.where(inside, routes.best_seconds[g][None, :], -math.inf).max(axis=1)   # (F,)
        for col in range(width):
            row = g * width + col
            rows.append(g)
            if col >= reps.shape[1] or len(t_idx) == 0:
                continue
            r = reps[t_idx, col]
            t_comp = secs[t_idx, col]
            upper = slo_s - t_comp + _EPS_S
            lower = slo_s - secs[t_idx, col - 1] + _EPS_S if col > 0 else np.full(len(t_idx), -math.inf)
            ok = (flat >= slowest_best[:, None]) & (flat <= upper[:, None]) & (flat > lower[:, None])
            d = np.where(ok, flat, math.inf).min(axis=1)                    # smallest D needing r
            live = np.isfinite(d) & np.isfinite(t_comp) & (r <= cand.replicas_that_fit) & (r >= 1)
            if not live.any():
                continue
            ts, d, r, t_comp, members_f, vals = t_idx[live], d[live], r[live], t_comp[live], inside[live], values[live]
            earliest = (vals <= d[:, None, None]).argmax(axis=2)            # (L, k) earliest leg within D
            exact = vals == d[:, None, None]                                 # where a leg is exactly D
            shift = np.where(exact, np.arange(E)[None, None, :] - earliest[:, :, None], 10**6)
            flat_shift = shift.reshape(len(ts), k * E)
            forced = flat_shift.argmin(axis=1)                               # the route that sets D
            chosen = earliest.copy()
            chosen[np.arange(len(ts)), forced // E] = forced % E
            replicas[row, ts] = r
            compute_s[row, ts] = t_comp
            cost_nano[row, ts] = np.rint(r * cand.replica_cost_per_hour * NANO).astype(np.int64)
            encoding[row, ts] = chosen
            rank_sum[row, ts] = (chosen * members_f).sum(axis=1)
            worst_s[row, ts] = d + t_comp
    table = GroupTable(members, replicas, cost_nano, compute_s, encoding, rank_sum, worst_s,
                       cost_nano < INFEASIBLE_COST)
    return rows, table
