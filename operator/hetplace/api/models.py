"""The hetplace.io/v1alpha1 API: the ComputePool and InferenceWorkload objects and every part of them."""

from __future__ import annotations

from typing import Literal

import re

from pydantic import ConfigDict, field_validator

from hetplace.api.meta import ObjectMeta
from hetplace.api.pool import (
    Accelerator,
    ComputePoolSpec,
    Cost,
    Hardware,
    Link,
    NodeShape,
    Tco,
    Toleration,
)
from hetplace.api.resources import Resources
from hetplace.api.status import (
    ComputePoolStatus,
    Condition,
    Decision,
    InferenceWorkloadStatus,
    Phase,
    Migration,
    PlacementStatus,
    Rejection,
    RouteStatus,
)
from hetplace.api.wire import API_VERSION, DNS_LABEL_PATTERN, PATTERN_RULES, WireModel, fail_at
from hetplace.api.workload import (
    Constraints,
    Encoding,
    InferenceWorkloadSpec,
    ModelRef,
    Policy,
    Profile,
    Rebalance,
    ReplicaBounds,
    Slo,
    Traffic,
    Variant,
)

__all__ = [
    "API_VERSION",
    "Accelerator",
    "ComputePool",
    "ComputePoolSpec",
    "ComputePoolStatus",
    "Condition",
    "Constraints",
    "Cost",
    "Decision",
    "Encoding",
    "Hardware",
    "InferenceWorkload",
    "InferenceWorkloadSpec",
    "InferenceWorkloadStatus",
    "Link",
    "ModelRef",
    "NodeShape",
    "ObjectMeta",
    "Phase",
    "Migration",
    "PlacementStatus",
    "Policy",
    "Profile",
    "Rebalance",
    "Rejection",
    "ReplicaBounds",
    "Resources",
    "RouteStatus",
    "Slo",
    "Tco",
    "Toleration",
    "Traffic",
    "Variant",
]


_DNS_LABEL = re.compile(DNS_LABEL_PATTERN)


class _KubernetesObject(WireModel):
    # Top-level typos ("specs:") are errors; status comes back from the cluster as written.
    model_config = ConfigDict(extra="forbid")

    api_version: Literal["hetplace.io/v1alpha1"] = API_VERSION
    kind: str
    metadata: ObjectMeta

    @field_validator("metadata")
    @classmethod
    def _name_is_a_label(cls, metadata: ObjectMeta) -> ObjectMeta:
        # Pool and workload names end up in Deployment and Service names and in label values.
        if len(metadata.name) > 63 or not _DNS_LABEL.match(metadata.name):
            raise fail_at(["name"], metadata.name, f"{PATTERN_RULES[DNS_LABEL_PATTERN]}, at most 63 characters")
        return metadata


class ComputePool(_KubernetesObject):
    """A cluster-scoped set of nodes of one hardware class in one region at one site."""

    kind: Literal["ComputePool"] = "ComputePool"
    spec: ComputePoolSpec
    status: ComputePoolStatus | None = None

    @property
    def name(self) -> str:
        """The pool's name (cluster-scoped, so also its key)."""
        return self.metadata.name


class InferenceWorkload(_KubernetesObject):
    """A namespaced model to place by latency SLO, site bandwidth and cost."""

    kind: Literal["InferenceWorkload"] = "InferenceWorkload"
    spec: InferenceWorkloadSpec
    status: InferenceWorkloadStatus | None = None

    @property
    def key(self) -> str:
        """NAMESPACE/NAME, the workload's identity across the cluster ("default" when unset)."""
        return f"{self.metadata.namespace or 'default'}/{self.metadata.name}"
