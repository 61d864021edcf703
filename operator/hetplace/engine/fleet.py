"""Several workloads on shared pools and links: the whole fleet at once, or one against the rest.

`place_in_order` is the fast greedy of docs/design.md §3: each workload in turn, charged to the
snapshot. `place_fleet` is the global optimiser (a MILP over candidate groups, see
fleet_milp); the greedy is its bound and its fallback. `place_one` is the incremental path:
one changed workload decided against all the others held where they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from hetplace.engine.decision import Decision
from hetplace.engine.optimise import solve
from hetplace.engine.snapshot import Snapshot, Workload
from hetplace.engine.usage import Ledger

Clock = Callable[[], float]


@dataclass(frozen=True)
class FleetPlan:
    """Placements of a whole fleet, with how good they are known to be."""

    decisions: tuple[tuple[Workload, Decision], ...]   # in input order; infeasible ones included
    cost_per_hour: float                                # of the feasible placements
    lower_bound_per_hour: float                         # LP relaxation of the MILP (or the solo sum)
    method: str                                         # "solo-optimal" | "milp" | "milp-time-limit" | "greedy"
    solve_seconds: float = 0.0                          # measured with the injected clock; 0 without one
    placed: int = 0
    proven_bound_per_hour: float = 0.0                  # HiGHS's dual bound at the end of the search

    @property
    def gap(self) -> float:
        """Relative distance of the cost above the lower bound."""
        if self.cost_per_hour <= 0:
            return 0.0
        return max(0.0, (self.cost_per_hour - self.lower_bound_per_hour) / self.cost_per_hour)

    @property
    def proven_gap(self) -> float:
        """Relative distance of the cost above the best bound the search proved."""
        if self.cost_per_hour <= 0:
            return 0.0
        best = max(self.lower_bound_per_hour, self.proven_bound_per_hour)
        return max(0.0, (self.cost_per_hour - best) / self.cost_per_hour)

    @property
    def by_key(self) -> Mapping[str, Decision]:
        return {w.key: d for w, d in self.decisions}


def place_in_order(workloads: Iterable[Workload], snapshot: Snapshot, *,
                   explain: bool = True) -> list[tuple[Workload, Decision]]:
    """Each workload in turn on what the ones before it left; an infeasible one takes nothing."""
    decided = []
    ledger = Ledger(snapshot.pools)
    for w in workloads:
        decision = solve(w, ledger.charged(snapshot), explain=explain)
        decided.append((w, decision))
        ledger.add(w, decision)
    return decided


def place_one(w: Workload, snapshot: Snapshot, placed: Ledger, current: Decision | None = None) -> Decision:
    """The incremental path: `w` decided on what every other placed workload leaves.

    `placed` is the ledger of everything deployed, kept by the caller across decisions (adding
    and removing one placement is cheap); `current`, if `w` is among them, is taken out while
    `w` is decided and put back, so the ledger is unchanged on return.
    """
    charge = placed.remove(w) if current is not None else None
    try:
        return solve(w, placed.charged(snapshot))
    finally:
        placed.restore(w, charge)


def place_fleet(workloads: Sequence[Workload], snapshot: Snapshot, *, time_limit_s: float = 10.0,
                mip_rel_gap: float = 1e-3, clock: Clock | None = None,
                incumbent: Mapping[str, Decision] | None = None) -> FleetPlan:
    """The fleet's least-cost placement (see fleet_milp for the formulation). With `incumbent`
    (what runs now), a running placement is kept unless moving saves its minImprovementPercent."""
    from hetplace.engine.fleet_milp import solve_fleet
    return solve_fleet(workloads, snapshot, time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap, clock=clock,
                       incumbent=incumbent)
