"""What the engine returns: the groups it chose, their routes, and the options it rejected."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """One site's traffic: where it goes, how it is encoded and how long it is predicted to take."""

    site: str
    encoding: str
    requests_per_second: float
    predicted_latency_ms: float
    network_ms: float
    compute_ms: float
    link_utilization: float


@dataclass(frozen=True, slots=True)
class GroupPlan:
    """One (pool, variant): a Triton Deployment whose replicas serve all its routes."""

    pool: str
    variant: str
    replicas: int
    cost_per_hour: float
    routes: tuple[RoutePlan, ...]

    @property
    def worst_latency_ms(self) -> float:
        return max(r.predicted_latency_ms for r in self.routes)


@dataclass(frozen=True, slots=True)
class Rejection:
    """An option not taken, with the filter (or the objective) that ruled it out."""

    pool: str
    variant: str
    filter: str
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The placement of one workload, or why there is none."""

    workload: str
    feasible: bool
    objective: str
    cost_per_hour: float
    groups: tuple[GroupPlan, ...]
    rejected: tuple[Rejection, ...]
    reason: str
    method: str = "exact"

    @property
    def worst_latency_ms(self) -> float:
        return max((g.worst_latency_ms for g in self.groups), default=0.0)

    def fingerprint(self) -> str:
        """A short stable hash of what would be deployed: pools, variants, replicas and encodings."""
        shape = [
            [g.pool, g.variant, g.replicas, sorted((r.site, r.encoding) for r in g.routes)]
            for g in self.groups
        ]
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]
