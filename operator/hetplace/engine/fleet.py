"""Several workloads on shared pools: decided one after another, each charged to the snapshot.

This is the fast greedy of DESIGN §3 (its warm start and fallback); the global optimiser over
all workloads at once is a later milestone.
"""

from __future__ import annotations

from typing import Iterable

from hetplace.engine.decision import Decision
from hetplace.engine.optimise import solve
from hetplace.engine.snapshot import Snapshot, Workload
from hetplace.engine.usage import with_placed


def place_in_order(workloads: Iterable[Workload], snapshot: Snapshot) -> list[tuple[Workload, Decision]]:
    """Each workload in turn on what the ones before it left; an infeasible one takes nothing."""
    decided = []
    for w in workloads:
        decision = solve(w, snapshot)
        decided.append((w, decision))
        if decision.feasible:
            snapshot = with_placed(snapshot, w, decision)
    return decided
