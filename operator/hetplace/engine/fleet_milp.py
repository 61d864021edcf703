"""The global optimiser: a MILP over candidate groups of every workload (placeholder: greedy)."""

from __future__ import annotations

from typing import Sequence

from hetplace.engine.snapshot import Snapshot, Workload


def solve_fleet(workloads: Sequence[Workload], snapshot: Snapshot, *, time_limit_s: float, mip_rel_gap: float,
                clock=None):
    from hetplace.engine.fleet import FleetPlan, place_in_order
    decided = place_in_order(workloads, snapshot)
    cost = sum(d.cost_per_hour for _, d in decided if d.feasible)
    return FleetPlan(tuple(decided), cost, 0.0, "greedy", 0.0, sum(d.feasible for _, d in decided))
