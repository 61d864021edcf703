"""Exact single-workload placement: a pool, variant and encoding for every site, at least cost.

Sites are partitioned into groups; a group is one (pool, variant) and every pool hosts at most
one group. A dynamic programme over site subsets that ignores the one-group-per-pool rule gives
a lower bound; a branch and bound guided by that bound restores the rule, and usually finishes
on its first dive. Keys compare lexicographically: (cost, encoding ranks, worst latency), so
the tie-breaks of DESIGN §3 are part of the optimum, and candidates are visited in name order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hetplace.engine.decision import Decision, GroupPlan, Rejection
from hetplace.engine.diagnose import explain_infeasible, explain_rejections
from hetplace.engine.filters import first_group_rejection
from hetplace.engine.groups import (
    INFEASIBLE_COST,
    NANO,
    Candidate,
    GroupTable,
    RouteTable,
    candidates,
    group_plan,
    group_table,
    route_table,
)
from hetplace.engine.snapshot import Snapshot, Traffic, Workload

# The subset tables grow as 2^sites; beyond this many sites of one workload the search is
# a local search from the best single group (reported as method "local-search").
EXACT_SITE_LIMIT = 10

Key = tuple[int, int, float]
ZERO: Key = (0, 0, -math.inf)
WORST: Key = (INFEASIBLE_COST * 64, 0, math.inf)


def _plus(a: Key, b: Key) -> Key:
    return (a[0] + b[0], a[1] + b[1], max(a[2], b[2]))


@dataclass(frozen=True)
class Option:
    key: Key
    group: int
    pool: str


def _options_per_subset(table: GroupTable, cands: list[Candidate], keep: int, allowed: np.ndarray) -> list[list[Option]]:
    """For every subset, its best few groups on distinct pools, best first."""
    G, n = table.cost_nano.shape
    cost = np.where(allowed, table.cost_nano, INFEASIBLE_COST)
    order = np.lexsort(
        (np.broadcast_to(np.arange(G)[:, None], (G, n)).T, table.worst_s.T, table.rank_sum.T, cost.T), axis=-1
    )  # (n, G)
    usable = allowed.any(axis=0)
    out: list[list[Option]] = [[] for _ in range(n)]
    for T in np.nonzero(usable)[0]:
        seen: set[str] = set()
        picked = out[T]
        for g in order[T]:
            if cost[g, T] >= INFEASIBLE_COST:
                break
            pool = cands[g].pool.name
            if pool in seen:
                continue
            seen.add(pool)
            picked.append(Option((int(cost[g, T]), int(table.rank_sum[g, T]), float(table.worst_s[g, T])), int(g), pool))
            if len(picked) >= keep:
                break
    return out


def _submasks(mask: int):
    sub = mask
    while True:
        yield sub
        if sub == 0:
            return
        sub = (sub - 1) & mask


def _relaxed_bounds(options: list[list[Option]], k: int, groups: int) -> list[list[Key]]:
    """bound[S][j]: best key covering sites S with at most j groups, pools allowed to repeat."""
    n = 1 << k
    bound = [[WORST] * (groups + 1) for _ in range(n)]
    bound[0] = [ZERO] * (groups + 1)
    for S in range(1, n):
        low = S & -S
        rest = S ^ low
        row = bound[S]
        for sub in _submasks(rest):
            opts = options[sub | low]
            if not opts:
                continue
            c0, r0, l0 = opts[0].key
            prev = bound[S ^ (sub | low)]
            for j in range(1, groups + 1):
                p0, p1, p2 = prev[j - 1]
                if p0 >= INFEASIBLE_COST:
                    continue
                cand = (c0 + p0, r0 + p1, l0 if l0 > p2 else p2)
                if cand < row[j]:
                    row[j] = cand
    return bound


def _branch_and_bound(options: list[list[Option]], bound: list[list[Key]], k: int, groups: int):
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
            rest_bound = bound[S ^ T][left - 1]
            if rest_bound[0] >= INFEASIBLE_COST:
                continue
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


def _search(table: GroupTable, cands: list[Candidate], k: int, groups: int, allowed: np.ndarray):
    options = _options_per_subset(table, cands, keep=min(groups, k), allowed=allowed)
    bound = _relaxed_bounds(options, k, groups)
    if bound[(1 << k) - 1][groups][0] >= INFEASIBLE_COST:
        return None, bound
    return _branch_and_bound(options, bound, k, groups), bound


def _cheapest_with_each(table: GroupTable, bound: list[list[Key]], groups: int) -> np.ndarray:
    """Per candidate: a lower bound on the cost of any placement that uses it, in nano-$/h."""
    n = table.cost_nano.shape[1]
    rest = np.array([min(bound[(n - 1) ^ T][groups - 1][0], INFEASIBLE_COST) for T in range(n)], dtype=np.int64)
    total = np.where(table.feasible, table.cost_nano + rest[None, :], INFEASIBLE_COST)
    return total.min(axis=1)


def _pools_needed(table: GroupTable, cands: list[Candidate], k: int) -> int | None:
    """The fewest groups that could serve every site (a lower bound), None if no number can."""
    if not table.feasible.any():
        return None
    options = _options_per_subset(table, cands, keep=k, allowed=table.feasible)
    bound = _relaxed_bounds(options, k, k)[(1 << k) - 1]
    return next((j for j in range(1, k + 1) if bound[j][0] < INFEASIBLE_COST), None)


def _min_latency(table: GroupTable, cands: list[Candidate], k: int, groups: int, budget_nano: int | None):
    """Smallest worst-route latency (then least cost) whose cost stays within the budget."""
    levels = np.unique(table.worst_s[table.feasible])
    best = None
    lo, hi = 0, len(levels) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        found, _ = _search(table, cands, k, groups, table.feasible & (table.worst_s <= levels[mid]))
        if found is not None and (budget_nano is None or found[0][0] <= budget_nano):
            best, hi = found, mid - 1
        else:
            lo = mid + 1
    return best


def _group_plan(w: Workload, sites: tuple[Traffic, ...], cand: Candidate, g: int, T: int,
                table: GroupTable, routes: RouteTable) -> GroupPlan:
    members = tuple(s for s in range(len(sites)) if table.members[T, s])
    encodings = tuple(int(table.encoding[g, T, s]) for s in members)
    return group_plan(w, sites, cand, g, routes, members, encodings, int(table.replicas[g, T]),
                      float(table.compute_s[g, T]))


def solve(w: Workload, snap: Snapshot) -> Decision:
    """Place one workload on the snapshot's pools. Pure and deterministic."""
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
        from hetplace.engine.local_search import solve_many_sites

        return solve_many_sites(w, snap, sites, cands, rejected)
    routes = route_table(w, snap, sites, cands)
    table = group_table(w, sites, cands, routes)
    groups = max(1, min(w.max_pools, k))
    budget_nano = None if w.max_cost_per_hour is None else int(round(w.max_cost_per_hour * NANO))
    found, bound = _search(table, cands, k, groups, table.feasible) if table.feasible.any() else (None, None)
    if w.objective == "MinLatency" and found is not None:
        found = _min_latency(table, cands, k, groups, budget_nano)
    over_budget = found is not None and budget_nano is not None and found[0][0] > budget_nano
    if found is None or over_budget:
        reason = explain_infeasible(w, sites, cands, routes, table, found[0][0] / NANO if over_budget else None,
                                    _pools_needed(table, cands, k))
        return Decision(w.key, False, w.objective, 0.0, (), tuple(rejected), reason)
    plans = tuple(sorted(
        (_group_plan(w, sites, cands[opt.group], opt.group, T, table, routes) for T, opt in found[1]),
        key=lambda p: (p.pool, p.variant),
    ))
    cost = found[0][0] / NANO
    rejected += explain_rejections(w, sites, cands, routes, table, plans, cost,
                                   _cheapest_with_each(table, bound, groups) / NANO)
    why = f"{w.objective}: {len(plans)} group(s), ${cost:.4f}/h, worst p{w.percentile:g} " \
          f"{max(p.worst_latency_ms for p in plans):.1f} ms <= SLO {w.slo_latency_ms:g} ms"
    return Decision(w.key, True, w.objective, cost, plans, tuple(sorted(rejected, key=lambda r: (r.pool, r.variant))), why)
