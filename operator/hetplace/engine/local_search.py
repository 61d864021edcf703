"""Placement for workloads with more sites than the exact subset search handles.

A greedy start (heaviest site first) and the best single-group start, each improved by moving
one site at a time while the objective improves. Not proven optimal; the decision says so with
method "local-search".
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


Assignment = dict[int, tuple[int, ...]]   # candidate -> the sites it serves


class _Search:
    """Scores assignments of sites to candidates under the workload's objective and rules."""

    def __init__(self, w: Workload, sites: tuple[Traffic, ...], cands: list[Candidate], routes: RouteTable):
        self.w, self.sites, self.cands, self.routes = w, sites, cands, routes
        self.pool_of = [c.pool.name for c in cands]
        self._fits: dict[tuple[int, tuple[int, ...]], GroupFit | None] = {}

    def fit(self, g: int, members: tuple[int, ...]) -> GroupFit | None:
        if (g, members) not in self._fits:
            self._fits[(g, members)] = fit_group(self.w, self.sites, members, g, self.cands[g], self.routes)
        return self._fits[(g, members)]

    def key(self, assign: Assignment):
        """The objective's key, or None when a group fails or a rule (maxPools, one per pool) breaks."""
        if len(assign) > self.w.max_pools or len({self.pool_of[g] for g in assign}) < len(assign):
            return None
        fits = {g: self.fit(g, m) for g, m in assign.items()}
        if any(f is None for f in fits.values()):
            return None
        cost, ranks, worst = _total(fits)
        return (worst, cost, ranks) if self.w.objective == "MinLatency" else (cost, ranks, worst)

    def move(self, assign: Assignment, s: int, to: int) -> Assignment:
        out = {g: tuple(x for x in m if x != s) for g, m in assign.items()}
        out[to] = tuple(sorted(out.get(to, ()) + (s,)))
        return {g: m for g, m in out.items() if m}

    def greedy(self) -> Assignment | None:
        """Heaviest sites first: each joins the group (open or new) that leaves the best key."""
        assign: Assignment = {}
        order = sorted(range(len(self.sites)), key=lambda s: (-self.sites[s].requests_per_second, self.sites[s].site))
        for s in order:
            scored = [(k, g) for g in range(len(self.cands)) if (k := self.key(self.move(assign, s, g))) is not None]
            if not scored:
                return None
            assign = self.move(assign, s, min(scored)[1])
        return assign

    def improve(self, assign: Assignment) -> Assignment:
        """Move one site at a time to any group while the key improves."""
        best = self.key(assign)
        for _ in range(MAX_ROUNDS):
            better = False
            for s in range(len(self.sites)):
                for g in range(len(self.cands)):
                    trial = self.move(assign, s, g)
                    k = self.key(trial)
                    if k is not None and k < best:
                        assign, best, better = trial, k, True
            if not better:
                break
        return assign


def solve_many_sites(w: Workload, snap: Snapshot, sites: tuple[Traffic, ...], cands: list[Candidate],
                     rejected: list[Rejection]) -> Decision:
    routes = route_table(w, snap, sites, cands)
    search = _Search(w, sites, cands, routes)
    pool_of = search.pool_of
    everyone = tuple(range(len(sites)))
    starts = [a for a in [search.greedy()] + [{g: everyone} for g in range(len(cands))]
              if a is not None and search.key(a) is not None]
    if not starts:
        return Decision(w.key, False, w.objective, 0.0, (), tuple(rejected),
                        f"no assignment of the {len(sites)} sites found by local search meets the SLO and "
                        f"spec.constraints.maxPools={w.max_pools}", method="local-search")
    # improve the greedy start and the best single-group start; keep the better
    seeds = [starts[0]] + sorted(starts[1:], key=search.key)[:1]
    assign = min((search.improve(a) for a in seeds), key=search.key)
    fits = {h: search.fit(h, m) for h, m in assign.items()}
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
