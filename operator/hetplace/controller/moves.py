"""Make-before-break moves as a pure state machine (docs/design.md §4): what to run, where routes point,
what to delete, and the phase to report — from what is observed ready and the time.

A move from `old` to `new` first runs both: groups only in `new` are created, groups in both keep
the larger of their two replica counts. Routes keep pointing at `old` until every group of
`new` is ready (Deployment available and, by the caller, the model ready through tritonclient);
then routes switch and what only `old` had is deleted, and kept groups take their new size. A
move not ready by its timeout goes back: the new-only groups are deleted and routes stay on
`old`, with the reason. With a drain time, the old-only groups outlive the routes switch by it
(clients that read the routes late still reach them), and a switched move never goes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

from hetplace.engine.decision import Decision

GroupKey = tuple[str, str]          # (pool, variant)
Phase = Literal["Placed", "Migrating"]


@dataclass(frozen=True)
class InFlight:
    """A move under way: from `old` (None for a first placement) to `new`, since `started_s`."""

    old: Decision | None
    new: Decision
    started_s: float
    timeout_s: float
    drain_s: float = 0.0                 # how long old groups outlive the routes switch
    switched_s: float | None = None      # when routes switched to `new` (None: not yet)


@dataclass(frozen=True)
class Step:
    """What the apply layer does now, and what status says."""

    run: Mapping[GroupKey, int]      # groups to exist, with their replicas
    delete: tuple[GroupKey, ...]     # groups to remove
    routes: Decision                 # the placement the routes ConfigMap points at
    phase: Phase
    reason: str                      # condition reason: Moving | Draining | Moved | MoveTimedOut | Placed
    message: str
    finished: bool


def _groups(d: Decision | None) -> dict[GroupKey, int]:
    return {(g.pool, g.variant): g.replicas for g in d.groups} if d is not None and d.feasible else {}


def names_of(keys) -> str:
    return ", ".join(f"{pool}/{variant}" for pool, variant in sorted(keys))


def advance(move: InFlight, ready: Mapping[GroupKey, bool], now_s: float) -> Step:
    """The next step of `move`, given which groups are ready now."""
    old, new = _groups(move.old), _groups(move.new)
    if move.old is None or not old:     # nothing serving to protect: deploy and route at once
        waiting = [k for k in new if not ready.get(k, False)]
        return Step(new, (), move.new, "Placed", "Placed",
                    # readiness is the Ready condition's to say: this message stays as the groups become ready
                    f"placed on {names_of(new)}",
                    finished=not waiting)
    not_ready = [k for k in new if not ready.get(k, False)]
    gone = tuple(sorted(k for k in old if k not in new))
    both = {k: max(old.get(k, 0), new.get(k, 0)) for k in old.keys() | new.keys()}
    switched = move.switched_s is not None or not not_ready
    if gone and switched and (move.switched_s is None or now_s - move.switched_s < move.drain_s):
        if move.drain_s > 0:
            # routes point at `new`; clients that read them late still reach the old groups meanwhile
            return Step(both, (), move.new, "Migrating", "Draining",
                        f"routes switched to {names_of(new)}; {names_of(gone)} removed after {move.drain_s:g} s",
                        finished=False)
    if not not_ready or move.switched_s is not None:
        return Step(new, gone, move.new, "Placed", "Moved",
                    f"{names_of(new)} ready; routes switched" + (f", {names_of(gone)} removed" if gone else ""),
                    finished=True)
    waited = now_s - move.started_s
    if waited > move.timeout_s:
        created = tuple(sorted(k for k in new if k not in old))
        return Step(old, created, move.old, "Placed", "MoveTimedOut",
                    f"{names_of(not_ready)} not ready after {waited:.0f} s (timeout {move.timeout_s:g} s); "
                    f"kept {names_of(old)}" + (f", removed {names_of(created)}" if created else ""),
                    finished=True)
    return Step(both, (), move.old, "Migrating", "Moving",
                # no running count of seconds here: status is rewritten only when something changes
                f"waiting for {names_of(not_ready)} to be ready (timeout {move.timeout_s:g} s); "
                f"routes stay on {names_of(old)}", finished=False)
