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
    EPS_S,
    INFEASIBLE_COST,
    NANO,
    Candidate,
    GroupTable,
    RouteTable,
    compute_table,
)
from hetplace.engine.queueing import service_quantile_s
from hetplace.engine.snapshot import Traffic, Workload


def _full_compute_table(w: Workload, cand: Candidate, arrival: np.ndarray, least: int):
    """Replica columns from the utilisation floor until the queue wait vanishes or the cap is hit."""
    floor_s = service_quantile_s(cand.variant.latency_ms, cand.variant.tail_latency_ms, w.percentile)
    reps, secs = compute_table(w, cand.variant, arrival, least, 8)
    while True:
        still_waits = (secs[:, -1] > floor_s + EPS_S) & np.isfinite(secs[:, -1])
        width = reps.shape[1]
        if not still_waits.any() or width >= w.replicas_max:
            return reps, secs
        more_reps, more_secs = compute_table(w, cand.variant, arrival, least, 2 * width, start=width)
        reps, secs = np.hstack([reps, more_reps]), np.hstack([secs, more_secs])


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

    by_variant: dict[str, list[int]] = {}
    for g, cand in enumerate(cands):
        by_variant.setdefault(cand.variant.name, []).append(g)
    slots = np.array([c.replicas_that_fit for c in cands])
    unit = np.array([c.replica_cost_per_hour for c in cands])
    found: list[tuple[np.ndarray, ...]] = []   # per live (variant, column): row key, subset, and values
    for name, group_ids in by_variant.items():
        reps, secs = tables[name]
        gs = np.array(group_ids)
        gi_all, ts_all = np.nonzero(base.feasible[gs])           # only groups that can meet the SLO at all
        if len(gi_all) == 0:
            continue
        g_all = gs[gi_all]
        inside = members[ts_all]                                                                  # (F, k)
        values = np.where(inside[:, :, None], routes.seconds[g_all], math.inf)                   # (F, k, E)
        flat = values.reshape(len(g_all), k * E)
        slowest_best = np.where(inside, routes.best_seconds[g_all], -math.inf).max(axis=1)       # (F,)
        fits = slots[g_all]
        ordered = np.sort(flat, axis=1)                                     # each entry's legs, fastest first
        # The fewest replicas (the MinCost point, slowest leg at its fastest) and its worst latency.
        # A column with more replicas can only help if its worst latency can beat that one's, i.e.
        # if even its fastest admissible leg plus its compute time is below it.
        fewest = base.replicas[g_all, ts_all]
        fewest_worst = slowest_best + base.compute_s[g_all, ts_all]
        for col in range(reps.shape[1]):
            r_all, t_all = reps[ts_all, col], secs[ts_all, col]                                   # (F,)
            lower_all = slo_s - secs[ts_all, col - 1] + EPS_S if col > 0 else np.full(len(ts_all), -math.inf)
            with np.errstate(invalid="ignore"):   # -inf + inf where a column is out of reach: not useful
                useful = np.nonzero((r_all == fewest) | ((r_all > fewest) & (lower_all + t_all < fewest_worst)))[0]
            if len(useful) == 0:
                continue
            r, t_comp, lower = r_all[useful], t_all[useful], lower_all[useful]
            upper = slo_s - t_comp + EPS_S
            floor = np.maximum(slowest_best[useful], np.nextafter(lower, math.inf))
            first = np.minimum((ordered[useful] < floor[:, None]).sum(axis=1), k * E - 1)
            d = ordered[useful, first]                                      # the smallest D needing r replicas
            d = np.where((d >= floor) & (d <= upper), d, math.inf)
            live = np.nonzero(np.isfinite(d) & np.isfinite(t_comp) & (r <= fits[useful]) & (r >= 1))[0]
            if len(live) == 0:
                continue
            at = useful[live]
            d_live, vals, ts, g_live = d[live], values[at], ts_all[at], g_all[at]
            earliest = (vals <= d_live[:, None, None]).argmax(axis=2)                               # (L, k)
            shift = np.where(vals == d_live[:, None, None], np.arange(E)[None, None, :] - earliest[:, :, None], 10**6)
            forced = shift.reshape(len(live), k * E).argmin(axis=1)                                 # the route setting D
            chosen = earliest
            chosen[np.arange(len(live)), forced // E] = forced % E
            found.append((g_live * width + col, ts, lower[live], r[live], t_comp[live],
                          np.rint(r[live] * unit[g_live] * NANO).astype(np.int64), chosen,
                          (chosen * inside[at]).sum(axis=1), d_live + t_comp[live]))
    return _compact(found, members, width)


def _compact(found: list[tuple[np.ndarray, ...]], members: np.ndarray, width: int) -> tuple[list[int], GroupTable]:
    """One table row per live (candidate, replica column), in candidate order (so grouped by pool)."""
    n, k = members.shape
    if not found:
        empty = np.zeros((0, n))
        return [], GroupTable(members, empty.astype(np.int64), empty.astype(np.int64) + INFEASIBLE_COST, empty,
                              np.zeros((0, n, k), dtype=np.int8), empty.astype(np.int64), empty, empty.astype(bool))
    keys, ts, lower, reps, comp, cost, enc, rank, worst = (np.concatenate(part) for part in zip(*found))
    row_keys, row = np.unique(keys, return_inverse=True)
    rows = len(row_keys)
    replicas = np.zeros((rows, n), dtype=np.int64)
    compute_s = np.full((rows, n), math.inf)
    cost_nano = np.full((rows, n), INFEASIBLE_COST, dtype=np.int64)
    encoding = np.zeros((rows, n, k), dtype=np.int8)
    rank_sum = np.zeros((rows, n), dtype=np.int64)
    worst_s = np.full((rows, n), math.inf)
    above = np.full((rows, n), math.inf)
    above[row, ts] = lower
    replicas[row, ts], compute_s[row, ts], cost_nano[row, ts] = reps, comp, cost
    encoding[row, ts], rank_sum[row, ts], worst_s[row, ts] = enc, rank, worst
    table = GroupTable(members, replicas, cost_nano, compute_s, encoding, rank_sum, worst_s,
                       cost_nano < INFEASIBLE_COST, above)
    return [int(key) // width for key in row_keys], table


def at_level(table: GroupTable, candidate_of: list[int], routes: RouteTable, w: Workload, level_s: float) -> GroupTable:
    """The frontier table with every row held under a worst latency of `level_s`, each route taking
    its earliest encoding that keeps the row's replicas minimal and its worst under the level.

    The frontier rows carry the encodings that give each group its smallest worst latency; once
    the level is known, slower but preferred encodings that still fit are the tie-break's choice.
    """
    slo_s = w.slo_latency_ms / 1000.0
    E = len(w.encodings)
    keep = table.feasible & (table.worst_s <= level_s + EPS_S)
    rows, ts = np.nonzero(keep)
    legs = routes.seconds[np.asarray(candidate_of, dtype=np.int64)[rows]]             # (F, k, E)
    inside = table.members[ts]                                                      # (F, k)
    t_comp = table.compute_s[rows, ts]
    budget = np.minimum(slo_s, level_s) - t_comp + EPS_S
    above = table.slowest_leg_above_s[rows, ts]
    chosen = (legs <= budget[:, None, None]).argmax(axis=2)                         # earliest that fits
    leg = np.where(inside, np.take_along_axis(legs, chosen[:, :, None], 2)[:, :, 0], -math.inf)
    short = leg.max(axis=1) <= above              # then one route must still set a slow enough leg
    if short.any():
        i = np.nonzero(short)[0]
        usable = (legs[i] > above[i, None, None]) & (legs[i] <= budget[i, None, None]) & inside[i][:, :, None]
        shift = np.where(usable, np.arange(E)[None, None, :] - chosen[i][:, :, None], 10**6)
        forced = shift.reshape(len(i), -1).argmin(axis=1)
        chosen[i, forced // E] = forced % E
        leg = np.where(inside, np.take_along_axis(legs, chosen[:, :, None], 2)[:, :, 0], -math.inf)
    encoding = table.encoding.copy()
    rank_sum = table.rank_sum.copy()
    worst_s = np.full_like(table.worst_s, math.inf)
    encoding[rows, ts] = chosen
    rank_sum[rows, ts] = (chosen * inside).sum(axis=1)
    worst_s[rows, ts] = leg.max(axis=1) + t_comp
    cost_nano = np.where(keep, table.cost_nano, INFEASIBLE_COST)
    return GroupTable(table.members, table.replicas, cost_nano, table.compute_s, encoding, rank_sum, worst_s,
                      keep, table.slowest_leg_above_s)
