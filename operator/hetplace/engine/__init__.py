"""Pure placement: a snapshot of pools and a workload in, a decision out. No I/O, no clock."""

from hetplace.engine.compare import describe_moves
from hetplace.engine.decision import Decision, GroupPlan, Rejection, RoutePlan
from hetplace.engine.evaluate import assignment_of, evaluate
from hetplace.engine.optimise import solve
from hetplace.engine.snapshot import Snapshot

__all__ = [
    "Decision", "GroupPlan", "Rejection", "RoutePlan", "Snapshot",
    "assignment_of", "describe_moves", "evaluate", "solve",
]
