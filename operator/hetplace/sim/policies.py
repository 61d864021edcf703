"""The policies a scenario runs under: hetplace's control loop and the baselines it is compared with.

Each policy is stepped through the true states of a trace and says, at every step, which
placements are in effect and which moves took effect. The control loops (`hetplace`, `static`,
`gpu-only`, `edge-only`) decide on what they observe at step t and their decisions take effect at
t + step, as in a cluster where telemetry is scraped, the rebalance runs and the new Deployment
becomes Ready in between. Their first placement is the deployment before traffic starts: it is
decided on the state at t = 0 and serves from t = 0. `oracle` knows each step's true state and
is placed optimally for it at that same step, with no hysteresis: the bound the others are
measured against.

With each placement a policy also says what the routes ConfigMap holds for it: per site the decided
route, then the workload's other running groups ranked as the operator ranks them
(engine.fallbacks), computed on the state the placement was decided on and kept while it runs. A
site's gateway fails over along that list (sim.failover).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

from hetplace.engine.decision import Decision
from hetplace.engine.fallbacks import RouteOption, route_options
from hetplace.engine.fleet import place_fleet
from hetplace.engine.measure import measure_fleet
from hetplace.engine.observed import planning_view
from hetplace.engine.rebalance import MoveReason, Running, change_kind, plan_moves
from hetplace.engine.snapshot import Hardware, Snapshot
from hetplace.sim import POLICIES
from hetplace.sim.trace import Conditions

SiteRoutes = Mapping[str, tuple[RouteOption, ...]]       # site -> its routes, the decided one first

# The control loops plan for the worst link and traffic seen over this window (engine.observed.planning_view).
PLANNING_WINDOW_SECONDS = 1800.0


@dataclass(frozen=True)
class PolicyMove:
    """A workload's placement changing, as it took effect."""

    workload: str
    reason: MoveReason
    decided_at_s: float
    before: str          # placement label; "" when nothing ran
    after: str
    why: str
    kind: str = "move"   # "place" | "move" (another pool or variant) | "resize" (replicas/encodings in place)


@dataclass(frozen=True)
class InEffect:
    """What runs during one step: placements by workload key, and the moves that brought them."""

    decisions: Mapping[str, Decision]
    moves: tuple[PolicyMove, ...] = ()
    unplaced: Mapping[str, str] = field(default_factory=dict)    # workload key -> why nothing runs
    routes: Mapping[str, SiteRoutes] = field(default_factory=dict)   # workload key -> what its routes ConfigMap says


class Policy(Protocol):
    def step(self, now: Conditions) -> InEffect:
        """What is in effect at `now.t_s`; called once per step, in time order."""


class RoutesConfigMaps:
    """The routes document of each placement, as written when the placement was decided: recomputed
    only for a workload whose placement changed, on the state of that moment."""

    def __init__(self) -> None:
        self._by_key: dict[str, tuple[str, SiteRoutes]] = {}

    def update(self, decisions: Mapping[str, Decision], now: Conditions) -> dict[str, SiteRoutes]:
        workloads = {w.key: w for w in now.workloads}
        held = {}
        for key, d in decisions.items():
            fingerprint = d.fingerprint()
            kept = self._by_key.get(key)
            if kept is None or kept[0] != fingerprint:
                options = route_options(workloads[key], now.pools, d) if key in workloads and d.feasible else {}
                kept = (fingerprint, {site: tuple(routes) for site, routes in options.items()})
            held[key] = kept
        self._by_key = held
        return {key: routes for key, (_, routes) in held.items()}


def placement_label(decision: Decision | None) -> str:
    """"cpu-cloud-eu/openvino-int8 x3, arm-factory-eu-1/trt-int8-orin x1"; "" when nothing runs."""
    if decision is None or not decision.feasible:
        return ""
    return ", ".join(f"{g.pool}/{g.variant} x{g.replicas}" for g in decision.groups)


class ControlLoop:
    """hetplace's rebalance cycle (docs/design.md §3 Hysteresis) on the pools it may use; each cycle's
    moves take effect one step after the state it saw. With `adapts=False` it deploys once."""

    def __init__(self, hardware: frozenset[Hardware] | None = None, *, adapts: bool = True,
                 max_moves: int = 10, time_limit_s: float = 10.0,
                 window_s: float = PLANNING_WINDOW_SECONDS) -> None:
        self._hardware = hardware
        self._window_s = window_s
        self._seen: list[Conditions] = []
        self._adapts = adapts
        self._max_moves = max_moves
        self._time_limit_s = time_limit_s
        self._running: dict[str, Running] | None = None
        self._unplaced: dict[str, str] = {}
        self._pending: tuple[PolicyMove, ...] = ()
        self._held = RoutesConfigMaps()
        self._routes: dict[str, SiteRoutes] = {}

    def step(self, now: Conditions) -> InEffect:
        if self._running is None:     # the deployment, before traffic starts: serves from t = 0
            self._running = {}
            deployment = self._cycle(now)
            return InEffect(self._decisions(), deployment, self._unplaced, self._routes)
        in_effect = InEffect(self._decisions(), self._pending, self._unplaced, self._routes)
        self._pending = self._cycle(now) if self._adapts else ()
        return in_effect

    def _decisions(self) -> dict[str, Decision]:
        return {key: running.decision for key, running in self._running.items()}

    def _cycle(self, now: Conditions) -> tuple[PolicyMove, ...]:
        # the window, and at least the previous observation (the trend needs two)
        self._seen = [c for i, c in enumerate(self._seen)
                      if c.t_s > now.t_s - self._window_s or i == len(self._seen) - 1] + [now]
        pools, workloads = planning_view([(c.pools, c.workloads) for c in self._seen])
        pools = tuple(p for p in pools if self._hardware is None or p.hardware in self._hardware)
        plan = plan_moves(workloads, Snapshot(pools), self._running, now_s=now.t_s,
                          max_moves=self._max_moves, time_limit_s=self._time_limit_s)
        moved = {m.workload for m in plan.moves if m.kind != "resize"}   # a resize in place is not a move
        self._running = {key: Running(d, now.t_s if key in moved else self._running[key].last_move_s)
                         for key, d in plan.decisions.items()}
        self._unplaced = {h.workload: h.why for h in plan.held if h.workload not in plan.decisions}
        self._routes = self._held.update(self._decisions(), now)
        return tuple(PolicyMove(m.workload, m.reason, now.t_s, placement_label(m.before), placement_label(m.after),
                                m.why, m.kind) for m in plan.moves)


class Oracle:
    """The fleet's least-cost placement for the true state of each step, in effect at that step."""

    def __init__(self, *, time_limit_s: float = 10.0) -> None:
        self._time_limit_s = time_limit_s
        self._decisions: dict[str, Decision] = {}
        self._held = RoutesConfigMaps()

    def step(self, now: Conditions) -> InEffect:
        plan = place_fleet(now.workloads, Snapshot(now.pools), time_limit_s=self._time_limit_s)
        decisions = {key: d for key, d in plan.by_key.items() if d.feasible}
        # a workload the optimum cannot place keeps what it had: tearing it down serves no one better
        decisions.update({key: d for key, d in self._decisions.items()
                          if key not in decisions and key in plan.by_key})
        placed_before = [(w, self._decisions.get(w.key)) for w in now.workloads]
        missing: dict[str, str] = {}
        for m in measure_fleet(placed_before, now.pools):
            if not m.within_slo:
                missing.setdefault(m.workload, f"{m.site}: {m.why_missed}")
        moves = []
        for w in now.workloads:
            before, after = self._decisions.get(w.key), decisions.get(w.key)
            if after is None or (before is not None and before.fingerprint() == after.fingerprint()):
                continue
            if before is None:
                reason, why = "place", "not placed yet"
            elif w.key in missing or after.cost_per_hour >= before.cost_per_hour:
                reason, why = "repair", missing.get(w.key, "the placement no longer meets the spec")
            else:
                reason, why = "saving", f"saves ${before.cost_per_hour - after.cost_per_hour:.4f}/h"
            moves.append(PolicyMove(w.key, reason, now.t_s, placement_label(before), placement_label(after), why,
                                    change_kind(before, after)))
        self._decisions = decisions
        unplaced = {key: d.reason for key, d in plan.by_key.items() if not d.feasible and key not in decisions}
        return InEffect(decisions, tuple(moves), unplaced, self._held.update(decisions, now))


def make_policy(name: str, *, time_limit_s: float = 10.0) -> Policy:
    """A fresh policy by name (one of POLICIES)."""
    if name == "hetplace":
        return ControlLoop(time_limit_s=time_limit_s)
    if name == "static":
        return ControlLoop(adapts=False, time_limit_s=time_limit_s)
    if name == "gpu-only":
        return ControlLoop(frozenset({"gpu"}), time_limit_s=time_limit_s)
    if name == "edge-only":
        return ControlLoop(frozenset({"arm"}), time_limit_s=time_limit_s)
    if name == "oracle":
        return Oracle(time_limit_s=time_limit_s)
    raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})")
