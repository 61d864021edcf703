"""A workload's status from a decision and what is observed: phase, metav1-shaped conditions
(Valid, Placed, SLOMet, TelemetryFresh, Ready), placements, cost, the decision and the closest
rejections. Pure: the time is passed in, and a condition keeps its lastTransitionTime while its
status does not change (so `kubectl wait` and alerts see real transitions only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

from hetplace.api.status import (
    MAX_REJECTED,
    ComputePoolStatus,
    Condition,
    Decision as DecisionStatus,
    InferenceWorkloadStatus,
    Migration,
    Phase,
    PlacementStatus,
    PoolResources,
    Rejection,
    RouteStatus,
)
from hetplace.engine.decision import Decision
from hetplace.engine.snapshot import Pool, Resources
from hetplace.render.names import group_name

CONDITION_TYPES = ("Valid", "Placed", "SLOMet", "TelemetryFresh", "Ready")


@dataclass(frozen=True)
class Observed:
    """One condition as the caller sees it now."""

    status: bool | None          # None: Unknown
    reason: str
    message: str = ""


def workload_status(name: str, generation: int, decision: Decision | None, phase: Phase, now: datetime,
                    observed: dict[str, Observed], previous: InferenceWorkloadStatus | None = None,
                    decided_at: datetime | None = None, moving_to: Decision | None = None,
                    move_started: datetime | None = None, routes_switched: datetime | None = None,
                    leaving: Decision | None = None,
                    observed_ms: Mapping[str, float] | None = None,
                    deleted_pools: frozenset[str] = frozenset()) -> InferenceWorkloadStatus:
    """`decision` is what runs (None when nothing does); `observed` gives each condition type;
    `moving_to` the placement being brought up since `move_started`, while a move is under way."""
    conditions = conditions_of(CONDITION_TYPES, observed, previous.conditions if previous else [], generation, now)
    running = decision if decision is not None and decision.feasible else None
    placements = placements_of(name, running, observed_ms, deleted_pools)
    return InferenceWorkloadStatus(
        observed_generation=generation, phase=phase, conditions=conditions, placements=placements,
        summary=", ".join(f"{p.pool}/{p.variant} x{p.replicas}" for p in placements)[:1024],
        cost_per_hour=round(running.cost_per_hour, 6) if running else None,
        decision=DecisionStatus(at=decided_at or now, reason=decision.reason[:4096],
                                fingerprint=decision.fingerprint()) if decision is not None else None,
        migration=Migration(target=placements_of(name, moving_to), started_at=move_started or now,
                            reason=moving_to.reason[:4096], routes_switched_at=routes_switched,
                            leaving=placements_of(name, leaving, None, deleted_pools))
        if moving_to is not None else None,
        rejected=_rejected(decision, previous),
    )


def _rejected(decision: Decision | None, previous: InferenceWorkloadStatus | None) -> list[Rejection]:
    """Why the other options lost, as the engine said when it decided: a placement read back from
    status (no engine run) keeps the reasons written with it."""
    if (decision is not None and not decision.rejected and previous is not None and previous.decision is not None
            and previous.decision.fingerprint == decision.fingerprint()):
        return list(previous.rejected)
    return [Rejection(pool=r.pool, variant=r.variant, reason=f"{r.filter}: {r.reason}")
            for r in (decision.rejected if decision is not None else ())][:MAX_REJECTED]


def conditions_of(kinds: tuple[str, ...], observed: dict[str, Observed], previous: list[Condition], generation: int,
                  now: datetime) -> list[Condition]:
    """metav1 conditions of `kinds`; each keeps its lastTransitionTime while its status stays."""
    unknown = set(observed) - set(kinds)
    if unknown:
        raise ValueError(f"unknown condition types {sorted(unknown)}; known: {', '.join(kinds)}")
    before = {c.type: c for c in previous}
    conditions = []
    for kind in kinds:
        seen = observed.get(kind, Observed(None, "NotObserved", "not observed yet"))
        status = "Unknown" if seen.status is None else ("True" if seen.status else "False")
        earlier = before.get(kind)
        since = earlier.last_transition_time if earlier is not None and earlier.status == status else now
        conditions.append(Condition(type=kind, status=status, reason=seen.reason, message=seen.message[:32768],
                                    last_transition_time=since, observed_generation=generation))
    return conditions


POOL_CONDITION_TYPES = ("Valid", "Ready")


def pool_status(generation: int, pool: Pool | None, nodes_matching: int, allocated: Resources, node_cost_per_hour:
                float | None, problem: str, now: datetime, previous: ComputePoolStatus | None) -> ComputePoolStatus:
    """A ComputePool's status: whether its spec was accepted, its ready nodes and capacity (the
    declared shape when no node matches its nodeSelector), and what hetplace placed on it."""
    if pool is None:
        observed = {"Valid": Observed(False, "InvalidSpec", problem)}
        return ComputePoolStatus(observed_generation=generation, conditions=conditions_of(
            POOL_CONDITION_TYPES, observed, previous.conditions if previous else [], generation, now))
    if pool.down:
        ready = Observed(False, "NoReadyNodes", f"{nodes_matching} nodes match nodeSelector, none is Ready")
    elif nodes_matching:
        ready = Observed(True, "NodesReady", f"{pool.node_count} of {nodes_matching} matching nodes Ready")
    else:
        ready = Observed(True, "DeclaredShape", "no node matches nodeSelector: planning with spec.nodes")
    valid = (Observed(False, "InvalidSpec", f"{problem}; the last accepted spec stays in use") if problem
             else Observed(True, "Valid", "spec accepted"))
    observed = {"Valid": valid, "Ready": ready}
    return ComputePoolStatus(
        observed_generation=generation,
        conditions=conditions_of(POOL_CONDITION_TYPES, observed, previous.conditions if previous else [],
                                 generation, now),
        nodes_ready=0 if pool.down else pool.node_count,
        capacity=_amount(pool.capacity if not pool.down else Resources()),
        allocated=_amount(allocated),
        node_cost_per_hour=round(node_cost_per_hour, 6) if node_cost_per_hour is not None else None)


def _amount(r: Resources) -> PoolResources:
    return PoolResources(cpu=f"{round(r.cpu_cores * 1000)}m", memory=str(int(r.memory_bytes)), accelerators=r.accelerators)


def placements_of(name: str, decision: Decision | None, observed_ms: Mapping[str, float] | None = None,
                  deleted_pools: frozenset[str] = frozenset()) -> list[PlacementStatus]:
    """The groups of a decision as status reports them, with their Deployment and Service names
    and, where clients report it, the latency observed per site (2 significant digits, so a
    steady reading does not rewrite status); a group on a deleted ComputePool says so."""
    return [
        PlacementStatus(pool=g.pool, variant=g.variant, replicas=g.replicas, cost_per_hour=round(g.cost_per_hour, 6),
                        deployment=group_name(name, g.pool, g.variant), service=group_name(name, g.pool, g.variant),
                        pool_deleted=True if g.pool in deleted_pools else None,
                        routes=[RouteStatus(site=r.site, encoding=r.encoding, requests_per_second=r.requests_per_second,
                                            predicted_latency_ms=round(r.predicted_latency_ms, 3),
                                            predicted_compute_ms=round(r.compute_ms, 3),
                                            observed_latency_ms=two_digits((observed_ms or {}).get(r.site)))
                                for r in g.routes])
        for g in (decision.groups if decision is not None and decision.feasible else ())
    ]


def two_digits(ms: float | None) -> float | None:
    """An observed figure rounded to 2 significant digits: noise below that rewrites no status."""
    return None if ms is None else float(f"{ms:.2g}")
