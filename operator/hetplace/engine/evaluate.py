"""Judge a given placement against a (possibly changed) snapshot: still feasible? at what cost?"""

from __future__ import annotations

from typing import Mapping

from hetplace.engine.decision import Decision
from hetplace.engine.diagnose import misses
from hetplace.engine.filters import first_group_rejection
from hetplace.engine.groups import candidates, group_plan, route_table
from hetplace.engine.local_search import fit_group
from hetplace.engine.snapshot import Snapshot, Workload


def evaluate(w: Workload, snap: Snapshot, assignment: Mapping[str, tuple[str, str]]) -> Decision:
    """Replicas, encodings and latency of `assignment` (site -> (pool, variant)) on `snap`."""
    sites = tuple(sorted(w.traffic, key=lambda t: t.site))
    pools = {p.name: p for p in snap.pools}
    variants = {v.name: v for v in w.variants}
    missing = [t.site for t in sites if t.site not in assignment]
    if missing:
        return Decision(w.key, False, w.objective, 0.0, (), (), f"no route for site(s) {', '.join(missing)}")
    pairs = sorted(set(assignment.values()))
    for pool_name, variant_name in pairs:
        if pool_name not in pools or variant_name not in variants:
            return Decision(w.key, False, w.objective, 0.0, (), (),
                            f"{pool_name}/{variant_name} no longer exists")
        verdict = first_group_rejection(w, pools[pool_name], variants[variant_name], snap)
        if verdict:
            return Decision(w.key, False, w.objective, 0.0, (), (), f"{pool_name}/{variant_name}: {verdict.reason}")
    cands = candidates(w, snap, [(pools[p], variants[v]) for p, v in pairs])
    routes = route_table(w, snap, sites, cands)
    plans = []
    for g, pair in enumerate(pairs):
        members = tuple(s for s, t in enumerate(sites) if assignment[t.site] == pair)
        fit = fit_group(w, sites, members, g, cands[g], routes)
        if fit is None:
            found = misses(w, sites, cands, routes)
            # the member route that misses worst is the one that breaks the group
            worst = max((found.closest(g, s) for s in members), default=None,
                        key=lambda m: (-1, 0.0) if m is None else (found.kind[m], found.ratio[m]))
            detail = found.describe(*worst) if worst is not None else "a route filter fails"
            return Decision(w.key, False, w.objective, 0.0, (), (), f"{pair[0]}/{pair[1]} no longer meets the SLO: {detail}")
        plans.append(group_plan(w, sites, cands[g], g, routes, members, fit.encodings, fit.replicas, fit.compute_s))
    cost = sum(p.cost_per_hour for p in plans)
    return Decision(w.key, True, w.objective, cost, tuple(plans), (), "current placement re-evaluated",
                    method="evaluate")


def assignment_of(decision: Decision) -> dict[str, tuple[str, str]]:
    """site -> (pool, variant) of a decision."""
    return {r.site: (g.pool, g.variant) for g in decision.groups for r in g.routes}
