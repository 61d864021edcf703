"""The ComputePool spec: one hardware class in one region at one site, its shape, cost and links."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from hetplace.api.quantity import parse_quantity
from hetplace.api.resources import Resources
from hetplace.api.wire import (
    CLIENT_GRPC_PATTERN,
    CLIENT_HTTP_PATTERN,
    DnsLabel,
    SpecModel,
    Token,
    cel_rule,
    fail_at,
    list_map,
    names_list,
    unique_by,
)

Hardware = Literal["gpu", "cpu", "arm"]

MAX_LINKS = 256
# A node-hour above this is a typo, and keeps every sum of costs exact in the engine's integers.
MAX_NODE_COST_PER_HOUR = 1000
HOURS_PER_YEAR = 8760
MAX_TOLERATIONS = 32
MAX_NAMESPACES = 64


class Toleration(SpecModel):
    """A Kubernetes toleration added to the pods placed on this pool."""

    key: str | None = Field(default=None, max_length=316)
    """Taint key; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal (the default)."""
    value: str | None = Field(default=None, max_length=63)
    """Taint value, for operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; empty matches all effects."""
    toleration_seconds: int | None = None
    """How long a NoExecute taint is tolerated before eviction."""


class NodeShape(Resources):
    """The declared shape of the pool's nodes; in a cluster, live Nodes take precedence."""

    count: int = Field(ge=0, le=10000)
    """Number of nodes in the pool."""

    @field_validator("cpu", "memory")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if not parse_quantity(value) > 0:
            raise fail_at([], value, "must be > 0 (a node without it can hold no replica)")
        return value


class Accelerator(SpecModel):
    """The accelerator the pool's nodes carry and the extended resource that requests it."""

    resource_name: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.-]+/[-._A-Za-z0-9]+$")
    """Extended resource name requested by pods, e.g. nvidia.com/gpu."""
    model: str = Field(default="", max_length=63)
    """Human-readable model, e.g. L4 or Jetson-Orin-Nano."""


def tco_cost_per_hour(
    capex: float,
    amortization_years: float,
    power_watts: float,
    pue: float,
    electricity_per_kwh: float,
    opex_per_hour: float,
) -> float:
    """Owned hardware: amortised purchase + energy at the facility's PUE + running costs."""
    return (
        capex / (amortization_years * HOURS_PER_YEAR)
        + power_watts / 1000.0 * pue * electricity_per_kwh
        + opex_per_hour
    )


class Tco(SpecModel):
    """Total cost of ownership of one owned node, turned into a price per node-hour."""

    capex: float = Field(ge=0, le=10_000_000)
    """Purchase price of one node."""
    amortization_years: float = Field(gt=0, le=50)
    """Years over which the purchase price is spread."""
    power_watts: float = Field(ge=0, le=1_000_000)
    """Average power draw of one node in watts."""
    pue: float = Field(default=1.0, ge=1, le=5)
    """Power usage effectiveness of the site (1.0 = no overhead)."""
    electricity_per_kwh: float = Field(ge=0, le=100, alias="electricityPerKWh")
    """Price of one kWh."""
    opex_per_hour: float = Field(default=0, ge=0, le=MAX_NODE_COST_PER_HOUR)
    """Other running costs per node-hour (space, support, network)."""

    @property
    def cost_per_hour(self) -> float:
        """The price of one node-hour this TCO comes to."""
        return tco_cost_per_hour(self.capex, self.amortization_years, self.power_watts, self.pue,
                                 self.electricity_per_kwh, self.opex_per_hour)

    @model_validator(mode="after")
    def _priced_in_range(self) -> Tco:
        if self.cost_per_hour > MAX_NODE_COST_PER_HOUR:
            raise fail_at([], round(self.cost_per_hour, 2),
                          f"comes to ${self.cost_per_hour:.2f} per node-hour, over the ${MAX_NODE_COST_PER_HOUR} limit")
        return self


class Cost(SpecModel):
    """The price of a node-hour: exactly one of hourly or tco."""

    model_config = cel_rule("has(self.hourly) != has(self.tco)", "set exactly one of hourly or tco")

    hourly: float | None = Field(default=None, ge=0, le=MAX_NODE_COST_PER_HOUR)
    """Price per node-hour (cloud list or reserved price)."""
    tco: Tco | None = None
    """Total cost of ownership, for owned hardware."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Cost:
        if (self.hourly is None) == (self.tco is None):
            given = self.wire()
            raise fail_at([], given, "set exactly one of hourly or tco")
        return self


class Link(SpecModel):
    """The network path from a client site to this pool."""

    site: Token
    """The site requests come from."""
    bandwidth_kbps: float = Field(gt=0, le=1e9, alias="bandwidthKBps")
    """Usable bandwidth in KB/s (1 KB = 1000 bytes)."""
    rtt_ms: float = Field(ge=0, le=60000)
    """Round-trip time in milliseconds."""


class ClientEndpoints(SpecModel):
    """How clients outside the cluster reach the groups placed on this pool (an ingress, a load
    balancer). Routes to this pool carry these addresses instead of the in-cluster Service
    (docs/routes.md). Placeholders: {service} {namespace} {workload} {pool} {variant}."""

    http: str = Field(max_length=512, pattern=CLIENT_HTTP_PATTERN)
    """KServe-V2 HTTP base URL, http:// or https:// (TLS), e.g. https://{service}.{namespace}.gpu.example.com."""
    grpc: str = Field(max_length=512, pattern=CLIENT_GRPC_PATTERN)
    """KServe-V2 gRPC host:port, grpc:// or grpcs:// (TLS), e.g. grpcs://{service}.grpc.example.com:443."""

    def format(self, **names: str) -> tuple[str, str]:
        """(http, grpc) of one group."""
        return self.http.format(**names), self.grpc.format(**names)


class ComputePoolSpec(SpecModel):
    """A set of nodes of one hardware class in one region at one site."""

    model_config = cel_rule(
        "!has(self.nodes.accelerators) || self.nodes.accelerators == 0 || has(self.accelerator)",
        "nodes with accelerators need spec.accelerator.resourceName",
        ".nodes.accelerators",
    )

    hardware: Hardware
    """Hardware class: gpu (data-centre GPUs), cpu (x86 servers) or arm (Arm and edge boxes)."""
    region: Token
    """Region, matched against a workload's constraints.regions (data residency)."""
    site: Token
    """Site where the nodes are; requests from this site reach them over a local link."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels that select this pool's nodes; added to the pods placed here."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=MAX_TOLERATIONS)
    """Tolerations added to the pods placed here."""
    nodes: NodeShape
    accelerator: Accelerator | None = None
    cost: Cost
    links: list[Link] = Field(default_factory=list, max_length=MAX_LINKS, json_schema_extra=list_map("site"))
    """Links from client sites to this pool; the pool's own site is always reachable locally."""
    allowed_namespaces: list[DnsLabel] = names_list(MAX_NAMESPACES)
    """Namespaces whose workloads may place here; empty allows all."""
    image: str = Field(default="", max_length=512)
    """Triton image override for this pool, e.g. an arm64 or Jetson build."""
    client_endpoints: ClientEndpoints | None = None
    """How clients outside the cluster reach this pool's groups; unset: the in-cluster Services."""

    @field_validator("links")
    @classmethod
    def _unique_sites(cls, links: list[Link]) -> list[Link]:
        return unique_by(links, "site")

    @field_validator("allowed_namespaces")
    @classmethod
    def _unique_namespaces(cls, namespaces: list[str]) -> list[str]:
        return unique_by(namespaces)

    @model_validator(mode="after")
    def _accelerator_named(self) -> ComputePoolSpec:
        if self.nodes.accelerators > 0 and self.accelerator is None:
            raise fail_at(["nodes", "accelerators"], self.nodes.accelerators,
                          "needs spec.accelerator.resourceName to request accelerators")
        return self
