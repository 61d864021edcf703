"""Judge a given placement against a (possibly changed) snapshot: still feasible? at what cost?"""

from __future__ import annotations

from typing import Mapping

from hetplace.engine.decision import Decision
from hetplace.engine.diagnose import NONE, misses
from hetplace.engine.filters import first_group_rejection
from hetplace.engine.groups import candidates, group_plan, route_table
from hetplace.engine.local_search import fit_group
from hetplace.engine.snapshot import Snapshot, Workload


def evaluate(w: Workload, snap: Snapshot, assignment: Mapping[str, tuple[str, str]]) -> Decision:
    """Replicas, encodings and latency of `assignment` (site -> (pool, variant)) on `snap`."""
    plans, why = _judge(w, snap, assignment)
    if plans is None:
        return Decision(w.key, False, w.objective, 0.0, (), (), next(v for v in why.values() if v))
    cost = sum(p.cost_per_hour for p in plans)
    return Decision(w.key, True, w.objective, cost, tuple(plans), (), "current placement re-evaluated",
                    method="evaluate")


def why_sites_cannot_stay(w: Workload, snap: Snapshot, assignment: Mapping[str, tuple[str, str]],
                          encodings: Mapping[str, str] | None = None) -> dict[str, str]:
    """For each site whose current route no longer works on `snap`: why, in its own terms when its
    own route (with its current encoding, if given) is the problem, else in its group's."""
    return _judge(w, snap, assignment, encodings or {})[1]


def _judge(w: Workload, snap: Snapshot, assignment: Mapping[str, tuple[str, str]],
           encodings: Mapping[str, str] | None = None):
    """(plans, {}) when every route still works, else (None, site -> reason) for the sites that fail."""
    encodings = encodings or {}
    sites = tuple(sorted(w.traffic, key=lambda t: t.site))
    pools = {p.name: p for p in snap.pools}
    variants = {v.name: v for v in w.variants}
    missing = [t.site for t in sites if t.site not in assignment]
    if missing:
        return None, {site: "it has no route" for site in missing}
    pairs = sorted(set(assignment.values()))
    members_of = {pair: tuple(s for s, t in enumerate(sites) if assignment[t.site] == pair) for pair in pairs}
    why: dict[str, str] = {}
    live = []
    for pair in pairs:
        pool_name, variant_name = pair
        if pool_name not in pools or variant_name not in variants:
            problem = f"{pool_name}/{variant_name} no longer exists"
        else:
            verdict = first_group_rejection(w, pools[pool_name], variants[variant_name], snap)
            problem = f"{pool_name}/{variant_name}: {verdict.reason}" if verdict else None
        if problem:
            why.update({sites[s].site: problem for s in members_of[pair]})
        else:
            live.append(pair)
    cands = candidates(w, snap, [(pools[p], variants[v]) for p, v in live])
    routes = route_table(w, snap, sites, cands)
    found = misses(w, sites, cands, routes) if cands else None
    plans = []
    index = {e.name: i for i, e in enumerate(w.encodings)}
    for g, pair in enumerate(live):
        members = members_of[pair]
        for s in members:   # a route whose own encoding no longer fits says so, even if its group still works
            e = index.get(encodings.get(sites[s].site, ""))
            if e is not None and found.kind[g, s, e] != NONE and found.ratio[g, s, e] > 1:
                why[sites[s].site] = f"{pair[0]}/{pair[1]} no longer fits it: {found.describe(g, s, e)}"
        fit = fit_group(w, sites, members, g, cands[g], routes)
        if fit is not None:
            plans.append(group_plan(w, sites, cands[g], g, routes, members, fit.encodings, fit.replicas,
                                    fit.compute_s))
            continue
        own = {s: found.closest(g, s) for s in members}
        failing = {s: m for s, m in own.items() if m is not None and found.ratio[m] > 1}
        worst = max(failing.values(), default=None, key=lambda m: (found.kind[m], found.ratio[m]))
        together = (f"{pair[0]}/{pair[1]} no longer meets the SLO: " + found.describe(*worst)) if worst else \
            f"{pair[0]}/{pair[1]} no longer meets the SLO for its sites together"
        for s in members:
            if sites[s].site not in why:
                why[sites[s].site] = (f"{pair[0]}/{pair[1]} no longer meets the SLO: {found.describe(*failing[s])}"
                                      if s in failing else together)
    if len(plans) < len(live) or len(live) < len(pairs):
        return None, dict(sorted(why.items()))
    return plans, dict(sorted(why.items()))


def assignment_of(decision: Decision) -> dict[str, tuple[str, str]]:
    """site -> (pool, variant) of a decision."""
    return {r.site: (g.pool, g.variant) for g in decision.groups for r in g.routes}


def encodings_of(decision: Decision) -> dict[str, str]:
    """site -> encoding of a decision."""
    return {r.site: r.encoding for g in decision.groups for r in g.routes}
