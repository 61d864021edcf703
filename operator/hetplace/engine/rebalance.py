"""Which running workloads move this cycle, and why: the global target filtered by hysteresis.

A running workload moves (docs/design.md §3 "Hysteresis") when
  - its deployed placement no longer meets its spec under the observed conditions (a route over
    its SLO or unserved, a pool down, a constraint it now breaks) and a feasible one exists —
    an SLO repair, which does not wait for the cooldown: a broken placement left alone for
    `cooldownSeconds` costs requests, and a repair cannot flap because the placement it leaves
    is broken; or
  - the new placement saves at least `minImprovementPercent` of its cost AND its last move is
    older than `cooldownSeconds`.
At most `max_moves` migrations (moves to another pool or variant; resizing in place is not one)
per cycle, repairs first (most traffic first), then the largest savings. Workloads not yet placed are placed; that is not a move.

Each move is re-checked against what stays: its new placement must fit beside every workload
that holds (capacity, link bandwidth), and no workload that meets its SLO may miss it because
of the move. A move that fails the check is re-solved on what the others leave (the
incremental path) and dropped if that does not meet the rule either.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

from hetplace.engine.decision import Decision
from hetplace.engine.evaluate import assignment_of, evaluate
from hetplace.engine.filters import hardware_matches, namespace_allowed, pool_allowed, pool_is_up, region_allowed
from hetplace.engine.fleet import Clock, FleetPlan, place_fleet
from hetplace.engine.measure import measure_fleet
from hetplace.engine.optimise import solve
from hetplace.engine.snapshot import Resources, Snapshot, Workload
from hetplace.engine.cost import replicas_that_fit
from hetplace.engine.usage import Charge, Ledger, taken_by, tolerances_of

MoveReason = Literal["place", "repair", "saving"]
_CONSTRAINT_FILTERS = (pool_is_up, hardware_matches, region_allowed, pool_allowed, namespace_allowed)


@dataclass(frozen=True)
class Running:
    """What is deployed for a workload, and when (seconds, caller's clock) it last changed."""

    decision: Decision
    last_move_s: float | None = None


@dataclass(frozen=True)
class Move:
    workload: str
    reason: MoveReason
    before: Decision | None
    after: Decision
    saving_per_hour: float
    why: str

    @property
    def kind(self) -> str:
        return change_kind(self.before, self.after)


def change_kind(before: Decision | None, after: Decision) -> str:
    """"resize" when every site stays on its pool and variant (replicas or encodings change in
    place, no new Deployment), "move" when one changes, "place" for a first placement."""
    if before is None:
        return "place"
    return "resize" if assignment_of(before) == assignment_of(after) else "move"


@dataclass(frozen=True)
class Hold:
    workload: str
    why: str


@dataclass(frozen=True)
class MovePlan:
    """The outcome of one rebalance cycle."""

    moves: tuple[Move, ...]
    held: tuple[Hold, ...]
    decisions: Mapping[str, Decision]     # what runs after the moves, by workload key
    target: FleetPlan                      # the global optimum the moves head for
    broken: tuple[str, ...] = field(default=())   # keys still missing their SLO after this cycle

    @property
    def migrations(self) -> int:
        """Moves to another pool or variant (a resize in place is not one)."""
        return sum(m.kind == "move" for m in self.moves)


def plan_moves(workloads: Sequence[Workload], snapshot: Snapshot, running: Mapping[str, Running], now_s: float,
               *, max_moves: int = 10, time_limit_s: float = 10.0, clock: Clock | None = None) -> MovePlan:
    """One rebalance cycle on observed `workloads` (current traffic) and `snapshot` (current links,
    pools down); `running` holds what is deployed."""
    by_key = {w.key: w for w in workloads}
    deployed = {k: r.decision for k, r in running.items() if k in by_key and r.decision.feasible}
    problems = _problems(workloads, snapshot, deployed)
    target = place_fleet(workloads, snapshot, time_limit_s=time_limit_s, clock=clock,
                         incumbent={k: d for k, d in deployed.items() if k not in problems})
    wanted = target.by_key

    candidates: list[tuple[tuple, Workload, MoveReason, str]] = []
    held: list[Hold] = []
    for w in workloads:
        after = wanted[w.key]
        before = deployed.get(w.key)
        if before is None:
            if after.feasible:
                candidates.append(((1, 0.0, w.key), w, "place", "not placed yet"))
            else:
                held.append(Hold(w.key, f"no placement meets the spec: {after.reason}"))
            continue
        if w.key in problems:
            traffic = sum(t.requests_per_second for t in w.traffic)
            if after.feasible:
                candidates.append(((0, -traffic, w.key), w, "repair", problems[w.key]))
            else:
                held.append(Hold(w.key, f"{problems[w.key]}; no feasible placement to repair it: {after.reason}"))
            continue
        if after.fingerprint() == before.fingerprint():
            continue
        saving = before.cost_per_hour - after.cost_per_hour
        needed = before.cost_per_hour * w.min_improvement_percent / 100.0
        if saving <= 0 or saving + 1e-12 < needed:
            held.append(Hold(w.key, f"saves ${max(saving, 0):.4f}/h, under minImprovementPercent "
                                    f"{w.min_improvement_percent:g}% (${needed:.4f}/h)"))
            continue
        last = running[w.key].last_move_s
        if last is not None and now_s - last < w.cooldown_seconds:
            held.append(Hold(w.key, f"moved {now_s - last:.0f} s ago, within cooldownSeconds "
                                    f"{w.cooldown_seconds:g}"))
            continue
        candidates.append(((2, -saving, w.key), w, "saving", f"saves ${saving:.4f}/h"))

    state = dict(deployed)
    ledger = Ledger(snapshot.pools)
    for key, d in state.items():      # a placement already missing its SLO cannot veto its repair
        ledger.add(by_key[key], d, protect=key not in problems)
    moves: list[Move] = []
    charges: dict[str, Charge | None] = {}

    def try_move(w: Workload, reason: MoveReason, why: str, scale_first: bool = False) -> str | None:
        """Apply w's move if it still fits beside everything else and harms no one; else say why not.
        With `scale_first`, the same pools and variants re-sized for now are tried before the target."""
        before = state.get(w.key)
        charge = ledger.remove(w)
        charged = ledger.charged(snapshot)
        after = None
        if scale_first and before is not None:
            resized = evaluate(w, charged, assignment_of(before))
            after = resized if resized.feasible else None
        after = after or _fit_beside(w, wanted[w.key], charged)
        verdict = _acceptable(w, reason, before, after)
        if verdict is None and not _harms_no_one(w, after, workloads, state, snapshot, ledger):
            verdict = "it would push another workload over its SLO"
        if verdict is not None:
            ledger.restore(w, charge)
            return verdict
        charges[w.key] = charge
        ledger.add(w, after)
        state[w.key] = after
        saving = before.cost_per_hour - after.cost_per_hour if before is not None else 0.0
        moves.append(Move(w.key, reason, before, after, saving, why))
        return None

    def undo(move: Move) -> None:
        w = by_key[move.workload]
        ledger.restore(w, charges.pop(w.key))
        if move.before is not None:
            state[w.key] = move.before
        else:
            state.pop(w.key, None)
        moves.remove(move)

    def joint_repair(w: Workload, why: str) -> bool:
        """Move w and every workload tied to it (sharing a pool or link, transitively) that the
        target moves, all at once: the target is one consistent placement, so what one move at a
        time could not fit may fit together. Kept only if nothing that met its SLO misses it and
        no pool is over capacity."""
        group = _tied_to(w.key, wanted, state, by_key)
        changing = [k for k in group if k not in state or wanted[k].fingerprint() != state[k].fingerprint()]
        if any(not wanted[k].feasible for k in changing) or len(changing) > budget_left():
            return False
        touched = _pools_and_links([wanted[k] for k in changing] + [state[k] for k in changing if k in state])

        def within_slo_around() -> set[tuple[str, str]]:
            around = [o for o in workloads if o.key in state and _uses(state[o.key], touched)]
            return _within_slo(around, state, snapshot, _background(snapshot, ledger, around))

        before = within_slo_around()
        applied = []
        for key in changing:
            other = by_key[key]
            charges[key] = ledger.remove(other)
            ledger.add(other, wanted[key])
            previous = state.get(key)
            state[key] = wanted[key]
            saving = previous.cost_per_hour - wanted[key].cost_per_hour if previous is not None else 0.0
            applied.append(Move(key, "repair", previous, wanted[key], saving,
                                why if key == w.key else f"moves with {w.key} to repair it"))
        moves.extend(applied)
        after = within_slo_around()
        over = any(_over_capacity(p, ledger.pool_used.get(p.name), snapshot) for p in snapshot.pools)
        repaired = all((w.key, t.site) in after for t in w.traffic)
        if before - after or over or not repaired:
            for move in reversed(applied):
                undo(move)
            return False
        return True

    def budget_left() -> int:
        return max_moves - sum(m.kind == "move" for m in moves)

    for _, w, reason, why in sorted(candidates, key=lambda c: c[0]):
        if reason != "place" and budget_left() <= 0:
            held.append(Hold(w.key, f"{why}, but this cycle already has max {max_moves} moves"))
            continue
        verdict = try_move(w, reason, why, scale_first=reason == "repair")
        if verdict is not None and reason == "repair":
            # The target may have made room for this repair by moving workloads that hysteresis
            # holds (a saving too small to be worth a move on its own): a repair is worth it.
            room = []
            for blocker in _in_the_way(w, wanted, state, moves, by_key):
                if budget_left() <= 1:
                    break
                if try_move(by_key[blocker], "repair", f"makes room to repair {w.key}") is None:
                    room.append(moves[-1])
            verdict = try_move(w, reason, why, scale_first=True) if room else verdict
            if verdict is not None:
                for move in reversed(room):
                    undo(move)
            if verdict is not None and joint_repair(w, why):
                verdict = None
        if verdict is not None:
            held.append(Hold(w.key, f"{why}, but {verdict}"))

    moved = {m.workload for m in moves}
    held = [h for h in held if h.workload not in moved]
    final = [(w, state.get(w.key)) for w in workloads]
    broken = sorted({m.workload for m in measure_fleet(final, snapshot.pools, snapshot.link_load_bytes_per_s)
                     if not m.within_slo})
    return MovePlan(tuple(moves), tuple(sorted(held, key=lambda h: h.workload)), state, target, tuple(broken))


def _problems(workloads: Sequence[Workload], snapshot: Snapshot, deployed: Mapping[str, Decision]) -> dict[str, str]:
    """Deployed workloads whose placement no longer meets their spec, with the first reason."""
    pools = {p.name: p for p in snapshot.pools}
    problems: dict[str, str] = {}
    for w in workloads:
        d = deployed.get(w.key)
        if d is None:
            continue
        variants = {v.name: v for v in w.variants}
        encodings = {e.name for e in w.encodings}
        for g in d.groups:
            pool, variant = pools.get(g.pool), variants.get(g.variant)
            gone = [r.encoding for r in g.routes if r.encoding not in encodings]
            if pool is None or variant is None:
                problems[w.key] = f"{g.pool}/{g.variant} no longer exists"
                break
            if gone:
                problems[w.key] = f"encoding {gone[0]} is no longer in the spec"
                break
            verdict = next((v for f in _CONSTRAINT_FILTERS if (v := f(w, pool, variant, snapshot))), None)
            if verdict is not None:
                problems[w.key] = f"{g.pool}/{g.variant}: {verdict.reason}"
                break
    placed = [(w, deployed[w.key]) for w in workloads if w.key in deployed and w.key not in problems]
    for m in measure_fleet(placed, snapshot.pools, snapshot.link_load_bytes_per_s):
        if not m.within_slo and m.workload not in problems:
            problems[m.workload] = f"{m.site}: {m.why_missed}"
    return problems


def _pools_and_links(decisions: Sequence[Decision]) -> tuple[set[str], set[tuple[str, str]]]:
    pools = {g.pool for d in decisions for g in d.groups}
    links = {(r.site, g.pool) for d in decisions for g in d.groups for r in g.routes}
    return pools, links


def _uses(d: Decision, touched: tuple[set[str], set[tuple[str, str]]]) -> bool:
    pools, links = _pools_and_links([d])
    return bool(pools & touched[0] or links & touched[1])


def _tied_to(key: str, wanted: Mapping[str, Decision], state: Mapping[str, Decision],
             by_key: Mapping[str, Workload]) -> set[str]:
    """Workloads reachable from `key` through shared pools or links of their current or target placements."""
    placements = {k: [d for d in (state.get(k), wanted.get(k)) if d is not None and d.feasible] for k in by_key}
    group, frontier = {key}, [key]
    while frontier:
        touched = _pools_and_links(placements[frontier.pop()])
        for other, ds in placements.items():
            if other not in group and any(_uses(d, touched) for d in ds):
                group.add(other)
                frontier.append(other)
    return group


def _background(snapshot: Snapshot, ledger: Ledger, measured: Sequence[Workload]) -> dict[tuple[str, str], float]:
    """Link load of everything in the ledger but the workloads about to be measured (who add their own)."""
    load: dict[tuple[str, str], float] = defaultdict(float, snapshot.link_load_bytes_per_s)
    for key, rate in ledger.link_load.items():
        load[key] += rate
    for o in measured:
        for key, rate in ledger.links_of(o.key).items():
            load[key] -= rate
    return load


def _over_capacity(pool, used: Resources | None, snapshot: Snapshot) -> bool:
    if used is None:
        return False
    total = pool.capacity.plus(snapshot.pool_used.get(pool.name, Resources()).times(-1))
    return (used.cpu_cores > total.cpu_cores + 1e-9 or used.memory_bytes > total.memory_bytes * (1 + 1e-9)
            or used.accelerators > total.accelerators)


def _in_the_way(w: Workload, wanted: Mapping[str, Decision], state: Mapping[str, Decision], moves: Sequence[Move],
                by_key: Mapping[str, Workload]) -> list[str]:
    """Running workloads the target moves away from the pools or links that w's target uses."""
    touched = _pools_and_links([wanted[w.key]])
    moved = {m.workload for m in moves}
    return sorted(key for key, current in state.items()
                  if key != w.key and key not in moved and key in by_key and wanted[key].feasible
                  and wanted[key].fingerprint() != current.fingerprint() and _uses(current, touched))


def _fit_beside(w: Workload, target: Decision, charged: Snapshot) -> Decision:
    """The target placement as it is when it fits on what the others leave; else re-fitted there
    (replicas and encodings for the load of the moment); else the best placement there."""
    if target.feasible:
        if _fits_as_is(w, target, charged):
            return target
        refit = evaluate(w, charged, assignment_of(target))
        if refit.feasible:
            return refit
    return solve(w, charged)


def _fits_as_is(w: Workload, d: Decision, snap: Snapshot) -> bool:
    """Capacity for every group, and every route within its own tolerance and the link's limit."""
    pools = {p.name: p for p in snap.pools}
    variants = {v.name: v for v in w.variants}
    encodings = {e.name for e in w.encodings}
    for g in d.groups:
        pool, variant = pools.get(g.pool), variants.get(g.variant)
        if pool is None or variant is None or pool.down or \
                any(r.encoding not in encodings or pool.link_from(r.site) is None for r in g.routes):
            return False
        if g.replicas > replicas_that_fit(pool, variant.resources, snap.pool_used.get(pool.name, Resources())):
            return False
    tolerance = tolerances_of(w, d, pools)
    return all(snap.link_load_bytes_per_s.get(link, 0.0) + load
               <= min(tolerance[link], snap.link_limit_bytes_per_s.get(link, math.inf))
               for link, load in taken_by(w, d)[1].items())


def _acceptable(w: Workload, reason: MoveReason, before: Decision | None, after: Decision) -> str | None:
    """None when `after` still satisfies the rule that made it a candidate, else why not."""
    if not after.feasible:
        return f"no placement fits beside the workloads that stay ({after.reason})"
    if reason == "saving":
        saving = before.cost_per_hour - after.cost_per_hour
        if saving + 1e-12 < before.cost_per_hour * w.min_improvement_percent / 100.0:
            return f"beside the workloads that stay it would save only ${max(saving, 0):.4f}/h"
        if after.fingerprint() == before.fingerprint():
            return "beside the workloads that stay the best placement is the current one"
    return None


def _harms_no_one(w: Workload, after: Decision, workloads: Sequence[Workload], state: Mapping[str, Decision],
                  snapshot: Snapshot, ledger: Ledger) -> bool:
    """No other workload sharing a link with `after` goes from meeting its SLO to missing it
    (`w` is out of the ledger while this is asked)."""
    links = _pools_and_links([after])[1]
    sharing = [o for o in workloads if o.key != w.key and o.key in state and _uses(state[o.key], (set(), links))]
    if not sharing:
        return True
    background = _background(snapshot, ledger, sharing)
    without = _within_slo(sharing, state, snapshot, background)
    for key, rate in taken_by(w, after)[1].items():
        background[key] += rate
    return without <= _within_slo(sharing, state, snapshot, background)


def _within_slo(measured: Sequence[Workload], state: Mapping[str, Decision], snapshot: Snapshot,
                background: Mapping[tuple[str, str], float]) -> set[tuple[str, str]]:
    """(workload, site) of the measured workloads' routes that meet their SLO over `background`."""
    return {(m.workload, m.site) for m in measure_fleet([(o, state[o.key]) for o in measured], snapshot.pools,
                                                        background) if m.within_slo}
