"""The InferenceWorkload spec: a model, its variants and encodings, its traffic, SLO, limits and policy."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from hetplace.api.pool import Hardware
from hetplace.api.resources import Resources
from hetplace.api.wire import (
    DnsLabel,
    SpecModel,
    Token,
    cel_rule,
    fail_at,
    list_map,
    names_list,
    unique_by,
)

# Bounds that keep one object from making the solver explode.
MAX_VARIANTS = 16
MAX_ENCODINGS = 8
MAX_TRAFFIC_SITES = 64
MAX_CONSTRAINT_NAMES = 64
MAX_REPLICAS = 1000


class ModelRef(SpecModel):
    """The Triton model to serve and the model repository that holds it."""

    name: str = Field(min_length=1, max_length=253)
    """Model name in the Triton model repository."""
    repository: str = Field(min_length=1, max_length=2048)
    """Model repository URL, e.g. s3://models/defect."""


class Encoding(SpecModel):
    """One way clients can send a request, with its size and its accuracy cost."""

    name: Token
    """Encoding name, e.g. raw or compressed."""
    request_bytes: int = Field(gt=0, le=10**10)
    """Size of one request in bytes."""
    accuracy_delta: float = Field(default=0.0, ge=-1, le=1)
    """Change of accuracy when clients send this encoding (negative = worse)."""


class Profile(SpecModel):
    """Measured service time of one inference with this variant."""

    model_config = cel_rule(
        "!has(self.tailLatencyMs) || self.tailLatencyMs >= self.latencyMs",
        "tailLatencyMs must be >= latencyMs",
        ".tailLatencyMs",
    )

    latency_ms: float = Field(gt=0, le=3_600_000)
    """Mean service time of one request in milliseconds."""
    tail_latency_ms: float | None = Field(default=None, gt=0, le=3_600_000)
    """Tail (p90 and above) service time in milliseconds; defaults to latencyMs."""
    concurrency: int = Field(default=1, ge=1, le=1024)
    """Requests one replica serves at once (Triton instances x dynamic batching)."""

    @model_validator(mode="after")
    def _tail_not_below_mean(self) -> Profile:
        if self.tail_latency_ms is not None and self.tail_latency_ms < self.latency_ms:
            raise fail_at(["tailLatencyMs"], self.tail_latency_ms, f"must be >= latencyMs ({self.latency_ms:g})")
        return self


class Variant(SpecModel):
    """One way to run the model on one hardware class."""

    name: DnsLabel
    """Variant name; part of the Deployment name."""
    hardware: Hardware
    """Hardware class this variant runs on."""
    accuracy: float = Field(ge=0, le=1)
    """Accuracy of this variant on the reference encoding, in [0, 1]."""
    profile: Profile
    resources: Resources


class Slo(SpecModel):
    """The latency objective at a percentile, and the accuracy floor."""

    latency_ms: float = Field(gt=0, le=3_600_000)
    """End-to-end latency objective (network + queue + compute) in milliseconds."""
    percentile: float = Field(default=99, gt=0, lt=100)
    """Percentile of requests that must meet latencyMs."""
    min_accuracy: float = Field(default=0.0, ge=0, le=1)
    """Lowest acceptable accuracy (variant accuracy + encoding accuracyDelta)."""


class Traffic(SpecModel):
    """Request rate from one client site."""

    site: Token
    """The client site."""
    requests_per_second: float = Field(ge=0, le=1_000_000)
    """Requests per second from this site."""


class Constraints(SpecModel):
    """Residency and spread limits."""

    regions: list[Token] = names_list(MAX_CONSTRAINT_NAMES)
    """Regions the workload may run in; empty allows all."""
    pools: list[DnsLabel] = names_list(MAX_CONSTRAINT_NAMES)
    """ComputePools the workload may run on; empty allows all."""
    max_pools: int = Field(default=3, ge=1, le=MAX_CONSTRAINT_NAMES)
    """Most pools one placement may span."""

    @field_validator("regions", "pools")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        return unique_by(names)


class ReplicaBounds(SpecModel):
    """Replica limits per group (one Deployment)."""

    model_config = cel_rule("self.min <= self.max", "min must be <= max", ".min")

    min: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    """Fewest replicas of a group."""
    max: int = Field(default=50, ge=1, le=MAX_REPLICAS)
    """Most replicas of a group."""

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaBounds:
        if self.min > self.max:
            raise fail_at(["min"], self.min, f"must be <= max ({self.max})")
        return self


class Rebalance(SpecModel):
    """When a running workload may move."""

    min_improvement_percent: float = Field(default=10, ge=0, le=100)
    """Move only when the new placement saves at least this share of the cost."""
    cooldown_seconds: int = Field(default=300, ge=0)
    """Move at most once in this many seconds."""


class Policy(SpecModel):
    """What to optimise and the limits the optimiser keeps."""

    objective: Literal["MinCost", "MinLatency"] = "MinCost"
    """MinCost: cheapest placement meeting the SLO. MinLatency: lowest worst-route latency within maxCostPerHour."""
    max_cost_per_hour: float | None = Field(default=None, ge=0, le=10_000_000)
    """Budget for the whole workload per hour; unset = no budget."""
    max_utilization: float = Field(default=0.8, gt=0, le=1)
    """Highest planned utilisation of a replica's servers."""
    max_link_utilization: float = Field(default=0.8, gt=0, le=1)
    """Highest planned utilisation of a link's bandwidth."""
    rebalance: Rebalance = Field(default_factory=Rebalance)


def _keyed(key: str, max_items: int) -> Any:
    return Field(min_length=1, max_length=max_items, json_schema_extra=list_map(key))


class InferenceWorkloadSpec(SpecModel):
    """A model to serve where its traffic comes from, within its SLO, accuracy floor and budget."""

    model: ModelRef
    response_bytes: int = Field(default=0, ge=0, le=10**10)
    """Size of one response in bytes."""
    encodings: Annotated[list[Encoding], _keyed("name", MAX_ENCODINGS)]
    """Request encodings clients can send, in preference order; the first is the default."""
    variants: Annotated[list[Variant], _keyed("name", MAX_VARIANTS)]
    """Ways to run the model, at most one per pool."""
    slo: Slo
    traffic: Annotated[list[Traffic], _keyed("site", MAX_TRAFFIC_SITES)]
    """Request rates per client site."""
    constraints: Constraints = Field(default_factory=Constraints)
    replicas: ReplicaBounds = Field(default_factory=ReplicaBounds)
    policy: Policy = Field(default_factory=Policy)

    @field_validator("encodings", "variants")
    @classmethod
    def _unique_names(cls, items: list[Encoding] | list[Variant]) -> list[Encoding] | list[Variant]:
        return unique_by(items, "name")

    @field_validator("traffic")
    @classmethod
    def _unique_sites(cls, traffic: list[Traffic]) -> list[Traffic]:
        return unique_by(traffic, "site")
