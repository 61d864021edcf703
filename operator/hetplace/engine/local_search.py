"""Placement for workloads with more sites than the exact subset search handles: greedy assignment, heaviest site first.

Not proven optimal; the decision says so with method "local-search".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hetplace.engine.decision import Decision, Rejection
from hetplace.engine.groups import EPS_S, NANO, Candidate, RouteTable, group_plan, route_table
from hetplace.engine.queueing import compute_latency_s, min_replicas_for_utilization
from hetplace.engine.snapshot import Snapshot, Traffic, Workload

MAX_ROUNDS = 50


@dataclass(frozen=True)
class GroupFit:
    key: tuple[int, int, float]
    replicas: int
    compute_s: float
    encodings: tuple[int, ...]


def fit_group(w: Workload, sites: tuple[Traffic, ...], members: tuple[int, ...], g: int,
              cand: Candidate, routes: RouteTable) -> GroupFit | None:
    """Minimal replicas, cost and preferred encodings of candidate g serving `members`."""
    if not members:
        return None
    best_net = routes.best_seconds[g, list(members)]
    if not np.all(np.isfinite(best_net)):
        return None
    slo_s = w.slo_latency_ms / 1000.0
    lam = sum(sites[s].requests_per_second for s in members)
    v = cand.variant
    r_lo = max(int(min_replicas_for_utilization(np.array([lam]), v.latency_ms, v.concurrency, w.max_utilization)[0]),
               w.replicas_min, 1)
    top = min(w.replicas_max, cand.replicas_that_fit)
    if r_lo > top:
        return None
    reps = np.arange(r_lo, top + 1)
    secs = compute_latency_s(reps, v.concurrency, np.full(len(reps), lam), v.latency_ms, v.tail_latency_ms,
                             w.percentile)
    ok = np.nonzero(secs <= slo_s - best_net.max() + EPS_S)[0]
    if len(ok) == 0:
        return None
    r, compute_s = int(reps[ok[0]]), float(secs[ok[0]])
    encodings = tuple(int(np.argmax(routes.seconds[g, s] <= slo_s - compute_s + EPS_S)) for s in members)
    worst = max(routes.seconds[g, s, e] for s, e in zip(members, encodings)) + compute_s
    return GroupFit((int(round(r * cand.replica_cost_per_hour * NANO)), sum(encodings), float(worst)),
                    r, compute_s, encodings)


def _total(fits: dict[int, GroupFit]) -> tuple[int, int, float]:
    return (sum(f.key[0] for f in fits.values()), sum(f.key[1] for f in fits.values()),
            max((f.key[2] for f in fits.values()), default=-math.inf))


def solve_many_sites(w: Workload, snap: Snapshot, sites: tuple[Traffic, ...], cands: list[Candidate],
                     rejected: list[Rejection]) -> Decision:
    routes = route_table(w, snap, sites, cands)
    pool_of = [c.pool.name for c in cands]
    assign: dict[int, list[int]] = {}
    # Heaviest sites first: each joins the group (open or new) that raises the total least.
    for s in sorted(range(len(sites)), key=lambda s: (-sites[s].requests_per_second, sites[s].site)):
        best = None
        for g, cand in enumerate(cands):
            opened = g in assign
            if not opened and (len(assign) >= w.max_pools or any(pool_of[h] == pool_of[g] for h in assign)):
                continue
            trial = {h: m for h, m in assign.items()}
            trial[g] = sorted(trial.get(g, []) + [s])
            fits = {h: fit_group(w, sites, tuple(m), h, cands[h], routes) for h, m in trial.items()}
            if any(f is None for f in fits.values()):
                continue
            cost, ranks, worst = _total(fits)
            key = (worst, cost, ranks) if w.objective == "MinLatency" else (cost, ranks, worst)
            if best is None or key < best[0]:
                best = (key, g)
        if best is None:
            return Decision(w.key, False, w.objective, 0.0, (), tuple(rejected),
                            f"site {sites[s].site} has no route within the SLO next to the sites placed so far "
                            f"(local search over {len(sites)} sites)", method="local-search")
        assign.setdefault(best[1], []).append(s)
        assign[best[1]].sort()
    fits = {h: fit_group(w, sites, tuple(m), h, cands[h], routes) for h, m in assign.items()}
    plans = [
        group_plan(w, sites, cands[g], g, routes, tuple(members), fits[g].encodings, fits[g].replicas, fits[g].compute_s)
        for g, members in sorted(assign.items(), key=lambda kv: pool_of[kv[0]])
    ]
    cost = _total(fits)[0] / NANO
    if w.max_cost_per_hour is not None and cost > w.max_cost_per_hour + 1e-9:
        return Decision(w.key, False, w.objective, 0.0, (), tuple(rejected),
                        f"the placement found costs ${cost:.4f}/h, over spec.policy.maxCostPerHour "
                        f"${w.max_cost_per_hour:g}/h", method="local-search")
    return Decision(w.key, True, w.objective, cost, tuple(plans), tuple(rejected),
                    f"local search over {len(sites)} sites: ${cost:.4f}/h", method="local-search")
