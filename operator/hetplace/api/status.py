"""What the operator reports: conditions, placements, decisions and pool capacity, in `status`."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from hetplace.api.wire import Quantity, StatusModel, list_map

MAX_CONDITIONS = 16
MAX_PLACEMENTS = 64
MAX_REJECTED = 16


class Phase(StrEnum):
    """Where a workload stands, in one word."""

    PENDING = "Pending"
    PLACED = "Placed"
    MIGRATING = "Migrating"
    DEGRADED = "Degraded"
    INFEASIBLE = "Infeasible"
    INVALID = "Invalid"


class Condition(StatusModel):
    """A metav1.Condition: one aspect of the object's state, with when and why it last changed."""

    type: str = Field(max_length=316, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
    """Condition type: Valid, Placed, SLOMet, TelemetryFresh or Ready."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    """CamelCase reason for the last transition."""
    message: str = Field(default="", max_length=32768)
    """Human-readable details."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation this condition was set from."""


class RouteStatus(StatusModel):
    """How one client site reaches a group, and the latency predicted and observed."""

    site: str
    """The client site."""
    encoding: str
    """The encoding this site sends."""
    requests_per_second: float = Field(ge=0)
    """Requests per second planned over this route."""
    predicted_latency_ms: float = Field(ge=0)
    """Latency at the SLO percentile predicted by the placement model."""
    predicted_compute_ms: float | None = Field(default=None, ge=0)
    """Of which in the group (queueing and service); the rest is the network."""
    observed_latency_ms: float | None = Field(default=None, ge=0)
    """Latency at the SLO percentile observed through telemetry."""


class PlacementStatus(StatusModel):
    """One group: the variant running on a pool, its replicas, cost, children and routes."""

    pool: str
    """The ComputePool."""
    variant: str
    """The variant running there."""
    replicas: int = Field(ge=0)
    """Replicas of the group's Deployment."""
    cost_per_hour: float = Field(ge=0)
    """Cost of the group per hour."""
    deployment: str = ""
    """Name of the Triton Deployment."""
    service: str = ""
    """Name of the Service in front of it."""
    pool_deleted: bool | None = None
    """True when its ComputePool was deleted: the group runs on, unmanaged, until a placement elsewhere is ready."""
    routes: list[RouteStatus] = Field(default_factory=list, json_schema_extra=list_map("site"))


class Decision(StatusModel):
    """The last placement decision: when, why, and a fingerprint of the inputs it saw."""

    at: datetime
    """When the decision was made."""
    reason: str
    """Why: what changed, what moved and what it saves."""
    fingerprint: str
    """Hash of the inputs, to tell a new decision from a repeated one."""


class Rejection(StatusModel):
    """An alternative the engine turned down, and why."""

    pool: str
    """The pool turned down."""
    variant: str = ""
    """The variant turned down; empty when the whole pool was."""
    reason: str
    """The filter that refused it and why."""


class Migration(StatusModel):
    """A make-before-break move under way: the placement being brought up while `placements` serve."""

    target: list[PlacementStatus] = Field(default_factory=list, max_length=MAX_PLACEMENTS,
                                          json_schema_extra=list_map("pool"))
    """The groups being brought up; routes switch to them once every one is ready."""
    started_at: datetime
    """When the move started; it goes back to `placements` after the operator's move timeout."""
    reason: str = Field(default="", max_length=4096)
    """Why the workload moves."""
    routes_switched_at: datetime | None = None
    """When routes switched to the target; the groups left behind go after the operator's drain time."""
    leaving: list[PlacementStatus] = Field(default_factory=list, max_length=MAX_PLACEMENTS,
                                           json_schema_extra=list_map("pool"))
    """After the switch: the placement left behind, removed when the drain time is over."""


def _conditions() -> Any:
    return Field(default_factory=list, max_length=MAX_CONDITIONS, json_schema_extra=list_map("type"))


class InferenceWorkloadStatus(StatusModel):
    """Where the workload runs, what it costs, and why."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation the status was computed from."""
    phase: Phase | None = None
    """Pending, Placed, Migrating, Degraded, Infeasible or Invalid."""
    conditions: list[Condition] = _conditions()
    """Valid, Placed, SLOMet, TelemetryFresh and Ready."""
    placements: list[PlacementStatus] = Field(
        default_factory=list, max_length=MAX_PLACEMENTS, json_schema_extra=list_map("pool")
    )
    """The groups the workload runs as: one per pool."""
    summary: str = Field(default="", max_length=1024)
    """One line for `kubectl get`: pool/variant x replicas, comma-separated."""
    cost_per_hour: float | None = Field(default=None, ge=0)
    """Total cost of all placements per hour."""
    decision: Decision | None = None
    migration: Migration | None = None
    """Set while the workload moves (phase Migrating)."""
    rejected: list[Rejection] = Field(default_factory=list, max_length=MAX_REJECTED)
    """The closest alternatives turned down, with reasons."""


class PoolResources(StatusModel):
    """CPU, memory and accelerators held by or placed on a whole pool."""

    cpu: Quantity
    """CPU, e.g. "32" or "7500m"."""
    memory: Quantity
    """Memory, e.g. "64Gi"."""
    accelerators: int = Field(default=0, ge=0)
    """Accelerators."""


class ComputePoolStatus(StatusModel):
    """What the pool holds in the cluster and how much of it hetplace has placed."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation the status was computed from."""
    conditions: list[Condition] = _conditions()
    """Ready, and Valid when the spec was refused."""
    nodes_ready: int | None = Field(default=None, ge=0)
    """Nodes matching nodeSelector that are Ready."""
    capacity: PoolResources | None = None
    """Allocatable resources summed over ready nodes (the declared shape when no node matches)."""
    allocated: PoolResources | None = None
    """Resources requested by the replicas hetplace placed here."""
    node_cost_per_hour: float | None = Field(default=None, ge=0)
    """Price of one node-hour from spec.cost (hourly, or TCO amortised)."""
