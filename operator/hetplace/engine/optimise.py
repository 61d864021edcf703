"""Exact single-workload placement: a pool, variant and encoding for every site, at least cost.

Sites are partitioned into groups; a group is one (pool, variant) and every pool hosts at most
one group. A dynamic programme over site subsets that ignores the one-group-per-pool rule gives
a lower bound; a branch and bound guided by that bound restores the rule, and usually finishes
on its first dive. Keys compare lexicographically: (cost, encoding ranks, worst latency), so
the tie-breaks of docs/design.md §3 are part of the optimum, and candidates are visited in name order.

MinLatency bisects on the worst route latency: at each level the same search finds the cheapest
placement whose groups all stay under it, over a table where each group may also take more
replicas (latency_frontier), starting from a bottleneck lower bound that is usually the answer.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from hetplace.engine.decision import Decision, GroupPlan, Rejection
from hetplace.engine.diagnose import explain_infeasible, explain_rejections
from hetplace.engine.filters import first_group_rejection
from hetplace.engine.latency_frontier import at_level, frontier_table
from hetplace.engine.local_search import solve_many_sites
from hetplace.engine.groups import (
    INFEASIBLE_COST,
    NANO,
    Candidate,
    GroupTable,
    RouteTable,
    candidates,
    group_plan,
    group_table,
    pool_starts,
    route_table,
)
from hetplace.engine.snapshot import Snapshot, Traffic, Workload

# The subset tables grow as 2^sites; beyond this many sites of one workload the search is
# a local search from the best single group (reported as method "local-search").
EXACT_SITE_LIMIT = 10

# Search keys compare lexicographically: (cost and encoding ranks packed into one integer, worst
# latency). Packing keeps sums exact and lets the lower bound run vectorised.
RANK_SPAN = 128                       # > sites x (encodings - 1) for every exact-size workload
PACKED_INFEASIBLE = 1 << 62
Key = tuple[int, float]
ZERO: Key = (0, -math.inf)
WORST: Key = (PACKED_INFEASIBLE, math.inf)


def _pack(cost_nano: int, rank_sum: int) -> int:
    return cost_nano * RANK_SPAN + rank_sum


def _plus(a: Key, b: Key) -> Key:
    return (a[0] + b[0], a[1] if a[1] > b[1] else b[1])


@dataclass(frozen=True)
class Option:
    key: Key
    group: int
    pool: str


@dataclass(frozen=True)
class Ranking:
    """Each subset's candidates in objective order, computed once and reused under any mask."""

    order: np.ndarray        # (n, G): candidate indices, best first
    position: np.ndarray     # (G, n): where each candidate stands in its subset's order
    pool_starts: np.ndarray  # first candidate index of each pool (candidates come grouped by pool)


def _ranking(table: GroupTable, cands: list[Candidate]) -> Ranking:
    G, n = table.cost_nano.shape
    packed = np.where(table.feasible, table.cost_nano * RANK_SPAN + table.rank_sum, PACKED_INFEASIBLE)
    # lexsort is stable, so ties keep candidate (name) order
    order = np.lexsort((table.worst_s.T, packed.T), axis=-1)
    position = np.empty((G, n), dtype=np.int64)
    position[order, np.arange(n)[:, None]] = np.arange(G)[None, :]
    return Ranking(order, position, pool_starts(cands))


def _options_per_subset(table: GroupTable, cands: list[Candidate], ranking: Ranking, keep: int,
                        allowed: np.ndarray) -> list[list[Option]]:
    """For every subset, its best few groups on distinct pools, best first."""
    G, n = table.cost_nano.shape
    never = G + 1
    position = np.where(allowed, ranking.position, never)
    per_pool = np.minimum.reduceat(position, ranking.pool_starts, axis=0)       # (P, n)
    keep = min(keep, per_pool.shape[0])
    best_pools = np.argsort(per_pool, axis=0, kind="stable")[:keep]             # (keep, n)
    best_positions = np.take_along_axis(per_pool, best_pools, axis=0)          # (keep, n)
    out: list[list[Option]] = [[] for _ in range(n)]
    for i, T in zip(*np.nonzero(best_positions < never)):
        g = int(ranking.order[T, best_positions[i, T]])
        out[T].append(Option((_pack(int(table.cost_nano[g, T]), int(table.rank_sum[g, T])),
                              float(table.worst_s[g, T])), g, cands[g].pool.name))
    for opts in out:
        opts.sort(key=lambda o: (o.key, o.group))
    return out


def _submasks(mask: int):
    sub = mask
    while True:
        yield sub
        if sub == 0:
            return
        sub = (sub - 1) & mask


@functools.lru_cache(maxsize=None)
def _subset_pairs(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (S, T) with T a subset of S holding S's lowest site, grouped by S; and where each S starts."""
    covers, blocks = [], []
    for S in range(1, 1 << k):
        low = S & -S
        for sub in _submasks(S ^ low):
            covers.append(S)
            blocks.append(sub | low)
    covers_arr = np.array(covers, dtype=np.int64)
    return covers_arr, np.array(blocks, dtype=np.int64), np.searchsorted(covers_arr, np.arange(1, 1 << k))


def _relaxed_bounds(options: list[list[Option]], k: int, groups: int) -> np.ndarray:
    """bound[j, S]: least packed (cost, ranks) covering sites S with at most j groups, pools allowed
    to repeat. Worst latency is left out, which keeps it a lower bound of the full key."""
    n = 1 << k
    head = np.array([opts[0].key[0] if opts else PACKED_INFEASIBLE for opts in options], dtype=np.int64)
    covers, blocks, starts = _subset_pairs(k)
    bound = np.full((groups + 1, n), PACKED_INFEASIBLE, dtype=np.int64)
    bound[:, 0] = 0
    for j in range(1, groups + 1):
        via = np.minimum(head[blocks] + bound[j - 1, covers ^ blocks], PACKED_INFEASIBLE)
        bound[j, 1:] = np.minimum(np.minimum.reduceat(via, starts), bound[j - 1, 1:])
    return bound


def _branch_and_bound(options: list[list[Option]], bound: np.ndarray, k: int, groups: int):
    """Exact search with distinct pools; returns (key, [(subset, option)]) or None."""
    best: list = [WORST, None]

    def dive(S: int, left: int, used: frozenset[str], acc: Key, path: list) -> None:
        if S == 0:
            if acc < best[0]:
                best[0], best[1] = acc, list(path)
            return
        if left == 0:
            return
        low = S & -S
        moves = []
        for sub in _submasks(S ^ low):
            T = sub | low
            rest = int(bound[left - 1, S ^ T])
            if rest >= PACKED_INFEASIBLE:
                continue
            rest_bound = (rest, -math.inf)
            for opt in options[T]:
                if opt.pool in used:
                    continue
                b = _plus(_plus(acc, opt.key), rest_bound)
                if b < best[0]:
                    moves.append((b, T, opt.group, opt))
        moves.sort(key=lambda m: (m[0], m[1], m[2]))
        for b, T, _, opt in moves:
            if b >= best[0]:
                break
            path.append((T, opt))
            dive(S ^ T, left - 1, used | {opt.pool}, _plus(acc, opt.key), path)
            path.pop()

    dive((1 << k) - 1, groups, frozenset(), ZERO, [])
    return None if best[1] is None else (best[0], best[1])


def _search(table: GroupTable, cands: list[Candidate], ranking: Ranking, k: int, groups: int,
            allowed: np.ndarray):
    options = _options_per_subset(table, cands, ranking, keep=min(groups, k), allowed=allowed)
    bound = _relaxed_bounds(options, k, groups)
    if bound[groups, (1 << k) - 1] >= PACKED_INFEASIBLE:
        return None, bound
    return _branch_and_bound(options, bound, k, groups), bound


def _cheapest_with_each(table: GroupTable, bound: np.ndarray, groups: int) -> np.ndarray:
    """Per candidate: a lower bound on the cost of any placement that uses it, in nano-$/h."""
    n = table.cost_nano.shape[1]
    packed = bound[groups - 1, (n - 1) ^ np.arange(n)]
    rest = np.where(packed >= PACKED_INFEASIBLE, INFEASIBLE_COST, packed // RANK_SPAN)
    total = np.where(table.feasible & (rest[None, :] < INFEASIBLE_COST), table.cost_nano + rest[None, :],
                     INFEASIBLE_COST)
    return total.min(axis=1)


def _pools_needed(table: GroupTable, cands: list[Candidate], k: int) -> int | None:
    """The fewest groups that could serve every site (a lower bound), None if no number can."""
    if not table.feasible.any():
        return None
    options = _options_per_subset(table, cands, _ranking(table, cands), keep=k, allowed=table.feasible)
    bound = _relaxed_bounds(options, k, k)[:, (1 << k) - 1]
    return next((j for j in range(1, k + 1) if bound[j] < PACKED_INFEASIBLE), None)


def _latency_floor(table: GroupTable, k: int, groups: int) -> float:
    """A lower bound on the worst route latency: the bottleneck version of the relaxed programme."""
    fastest = np.where(table.feasible, table.worst_s, math.inf).min(axis=0)       # (n,) per subset
    covers, blocks, starts = _subset_pairs(k)
    bound = np.full((groups + 1, 1 << k), math.inf)
    bound[:, 0] = -math.inf
    for j in range(1, groups + 1):
        via = np.maximum(fastest[blocks], bound[j - 1, covers ^ blocks])
        bound[j, 1:] = np.minimum(np.minimum.reduceat(via, starts), bound[j - 1, 1:])
    return float(bound[groups, (1 << k) - 1])


def _min_latency(table: GroupTable, cands: list[Candidate], ranking: Ranking, k: int, groups: int,
                 budget_nano: int | None, cheapest_worst_s: float):
    """The smallest worst-route latency a placement within the budget can have.

    Bisects over the worst latencies the table can produce, between a lower bound (the relaxed
    bottleneck programme) and the latency of the cheapest placement, trying the lower bound first.
    """
    floor = _latency_floor(table, k, groups)
    levels = np.unique(table.worst_s[table.feasible & (table.worst_s >= floor) & (table.worst_s <= cheapest_worst_s)])

    def within(level: float):
        found, _ = _search(table, cands, ranking, k, groups, table.feasible & (table.worst_s <= level))
        ok = found is not None and (budget_nano is None or found[0][0] // RANK_SPAN <= budget_nano)
        return found if ok else None

    if len(levels) and within(levels[0]) is not None:
        return float(levels[0])
    best = None
    lo, hi = 1, len(levels) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if within(levels[mid]) is not None:
            best, hi = float(levels[mid]), mid - 1
        else:
            lo = mid + 1
    return best


def _group_plan(w: Workload, sites: tuple[Traffic, ...], cand: Candidate, g: int, row: int, T: int,
                table: GroupTable, routes: RouteTable) -> GroupPlan:
    """Candidate g's plan for subset T, read from `row` of the table that was searched."""
    members = tuple(s for s in range(len(sites)) if table.members[T, s])
    encodings = tuple(int(table.encoding[row, T, s]) for s in members)
    return group_plan(w, sites, cand, g, routes, members, encodings, int(table.replicas[row, T]),
                      float(table.compute_s[row, T]))


def solve(w: Workload, snap: Snapshot, *, explain: bool = True) -> Decision:
    """Place one workload on the snapshot's pools. Pure and deterministic. With `explain=False`
    the options that lost on cost are not explained (the filters' rejections still are)."""
    sites = tuple(sorted(w.traffic, key=lambda t: t.site))
    variants = sorted(w.variants, key=lambda v: v.name)
    rejected: list[Rejection] = []
    passed = []
    for pool in snap.pools:
        matching = [v for v in variants if v.hardware == pool.hardware]
        if not matching:
            rejected.append(Rejection(pool.name, "", "HardwareMatch", f"no variant runs on {pool.hardware}"))
        for v in matching:
            verdict = first_group_rejection(w, pool, v, snap)
            if verdict:
                rejected.append(Rejection(pool.name, v.name, verdict.filter, verdict.reason))
            else:
                passed.append((pool, v))
    cands = candidates(w, snap, passed)
    k = len(sites)
    if k > EXACT_SITE_LIMIT:
        return solve_many_sites(w, snap, sites, cands, rejected)
    routes = route_table(w, snap, sites, cands)
    groups = max(1, min(w.max_pools, k))
    table = group_table(w, sites, cands, routes, keep=groups)
    budget_nano = None if w.max_cost_per_hour is None else int(round(w.max_cost_per_hour * NANO))
    cheapest, bound = _search(table, cands, _ranking(table, cands), k, groups, table.scored) \
        if table.feasible.any() else (None, None)
    over_budget = cheapest is not None and budget_nano is not None and cheapest[0][0] // RANK_SPAN > budget_nano
    if cheapest is None or over_budget:
        reason = explain_infeasible(w, sites, cands, routes, table,
                                    cheapest[0][0] // RANK_SPAN / NANO if over_budget else None,
                                    _pools_needed(table, cands, k))
        return Decision(w.key, False, w.objective, 0.0, (), tuple(rejected), reason)
    found, plan_table, candidate_of = cheapest, table, list(range(len(cands)))
    if w.objective == "MinLatency":
        candidate_of, plan_table = frontier_table(w, sites, cands, routes, table)
        row_cands = [cands[g] for g in candidate_of]
        level = _min_latency(plan_table, row_cands, _ranking(plan_table, row_cands), k, groups, budget_nano,
                             cheapest[0][1])
        if level is None:   # not expected: the cheapest placement is within budget and under its own level
            found, plan_table, candidate_of = cheapest, table, list(range(len(cands)))
        else:
            plan_table = at_level(plan_table, candidate_of, routes, w, level)
            found, _ = _search(plan_table, row_cands, _ranking(plan_table, row_cands), k, groups, plan_table.feasible)
    plans = tuple(sorted(
        (_group_plan(w, sites, cands[candidate_of[opt.group]], candidate_of[opt.group], opt.group, T, plan_table,
                     routes) for T, opt in found[1]),
        key=lambda p: (p.pool, p.variant),
    ))
    cost = found[0][0] // RANK_SPAN / NANO
    if explain:
        cheapest_with = _cheapest_with_each(table, bound, groups)
        rejected += explain_rejections(w, sites, cands, routes, table, plans, cost,
                                       np.where(cheapest_with < INFEASIBLE_COST, cheapest_with / NANO, np.inf))
    why = f"{w.objective}: {len(plans)} group(s), ${cost:.4f}/h, worst p{w.percentile:g} " \
          f"{max(p.worst_latency_ms for p in plans):.1f} ms <= SLO {w.slo_latency_ms:g} ms"
    return Decision(w.key, True, w.objective, cost, plans, tuple(sorted(rejected, key=lambda r: (r.pool, r.variant))), why)
