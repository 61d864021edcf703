"""Run a trace under each policy and score every step: what each route's requests really got, and
what the placements in effect cost. With the gateway on (the site side is part of the
installation), a route that fails is served in the same step by the first live fallback its site
holds; each step is also measured without it, to count the route-steps the gateway saved."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from hetplace.engine.measure import RouteMeasure, measure_fleet
from hetplace.sim.failover import fail_over
from hetplace.sim.policies import PolicyMove, make_policy
from hetplace.sim.trace import Disruption, Trace

RouteKey = tuple[str, str]          # (workload NAMESPACE/NAME, site)


@dataclass(frozen=True)
class StepOutcome:
    """One step under one policy: its cost, each route as measured, and the moves that took effect."""

    t_s: float
    cost_per_hour: float
    routes: tuple[RouteMeasure, ...]
    moves: tuple[PolicyMove, ...] = ()
    unplaced: Mapping[str, str] = field(default_factory=dict)     # workload key -> why nothing runs
    saved_route_steps: int = 0    # routes that missed the SLO without the gateway and met it with it


def attainment(routes: Iterable[RouteMeasure]) -> float:
    """The request-weighted share within the SLO: Σ rps·within / Σ rps (1.0 when nothing was asked)."""
    asked = met = 0.0
    for r in routes:
        asked += r.requests_per_second
        met += r.requests_per_second if r.within_slo else 0.0
    return met / asked if asked > 0 else 1.0


@dataclass(frozen=True)
class PolicyRun:
    """A whole trace under one policy."""

    policy: str
    steps: tuple[StepOutcome, ...]

    @property
    def slo_attainment(self) -> float:
        return attainment(r for s in self.steps for r in s.routes)

    @property
    def mean_cost_per_hour(self) -> float:
        return sum(s.cost_per_hour for s in self.steps) / len(self.steps) if self.steps else 0.0

    @property
    def migrations(self) -> int:
        """Moves of a running workload to another pool or variant (a new Deployment, make-before-break);
        a first placement and a resize in place are not ones."""
        return sum(m.kind == "move" for s in self.steps for m in s.moves)

    @property
    def resizes(self) -> int:
        """Changes of replicas or encodings in place."""
        return sum(m.kind == "resize" for s in self.steps for m in s.moves)

    @property
    def worst_latency_ms(self) -> float:
        """The slowest route-step (inf when a route went unserved)."""
        return max((r.latency_ms for s in self.steps for r in s.routes), default=0.0)

    def route_attainment(self) -> dict[RouteKey, float]:
        by_route: dict[RouteKey, list[RouteMeasure]] = defaultdict(list)
        for s in self.steps:
            for r in s.routes:
                by_route[(r.workload, r.site)].append(r)
        return {key: attainment(routes) for key, routes in by_route.items()}

    def missed_route_steps(self) -> int:
        return sum(not r.within_slo and r.requests_per_second > 0 for s in self.steps for r in s.routes)

    @property
    def fallback_route_steps(self) -> int:
        """Route-steps a gateway served from a fallback (within the SLO or not)."""
        return sum(r.fallback for s in self.steps for r in s.routes)

    @property
    def saved_route_steps(self) -> int:
        """Route-steps that would have missed the SLO (or gone unserved) without the gateway and met it with it."""
        return sum(s.saved_route_steps for s in self.steps)


@dataclass(frozen=True)
class Simulation:
    """A trace run under several policies, in the order they were asked for."""

    trace: Trace
    runs: Mapping[str, PolicyRun]
    disruptions: tuple[Disruption, ...]
    gateway: bool = True

    @property
    def routes(self) -> list[RouteKey]:
        """Every (workload, site) that had traffic at some step, in order of first appearance."""
        seen: dict[RouteKey, None] = {}
        for run in self.runs.values():
            for s in run.steps:
                seen.update({(r.workload, r.site): None for r in s.routes})
        return list(seen)

    def worst_routes(self, most: int) -> list[RouteKey]:
        """The `most` routes with the lowest attainment under any policy, in order of first appearance."""
        by_policy = [run.route_attainment() for run in self.runs.values()]
        routes = self.routes
        worst = set(sorted(routes, key=lambda key: min((a.get(key, 1.0) for a in by_policy), default=1.0))[:most])
        return [key for key in routes if key in worst]

    @property
    def slo_latency_ms(self) -> dict[str, float]:
        return {w.key: w.slo_latency_ms for w in self.trace.workloads}


def simulate(trace: Trace, policies: Sequence[str], *, gateway: bool = True, time_limit_s: float = 10.0,
             on_step: Callable[[str], None] | None = None) -> Simulation:
    """Step every policy through the trace; `gateway`: sites fail over to the fallbacks of their routes
    (False: a failed route stays unserved until a decision moves it); `on_step(policy)` is called
    after each step (progress)."""
    states = list(trace.conditions())
    runs = {}
    for name in policies:
        policy = make_policy(name, time_limit_s=time_limit_s)
        steps = []
        for now in states:
            effect = policy.step(now)
            placed = [(w, effect.decisions.get(w.key)) for w in now.workloads]
            # a placement on a pool that is down still costs: it is deployed, it just serves nothing
            cost = math.fsum(d.cost_per_hour for d in effect.decisions.values() if d.feasible)
            unaided = measure_fleet(placed, now.pools)
            routes, saved = unaided, 0
            rerouted = fail_over(placed, now.pools, effect.routes, unaided) if gateway else {}
            if rerouted:
                routes = measure_fleet(placed, now.pools, rerouted=rerouted)
                saved = sum(r.requests_per_second > 0 and r.within_slo and not before.within_slo
                            for before, r in zip(unaided, routes, strict=True))
            steps.append(StepOutcome(now.t_s, cost, tuple(routes), effect.moves, effect.unplaced, saved))
            if on_step is not None:
                on_step(name)
        runs[name] = PolicyRun(name, tuple(steps))
    return Simulation(trace, runs, trace.disruptions(), gateway)
