"""Immutable inputs of the placement engine: pools, workloads and what others already use."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal, Mapping

Hardware = Literal["gpu", "cpu", "arm"]
Objective = Literal["MinCost", "MinLatency"]

# A pool's own site reaches it over the local network (docs/design.md §3).
LOCAL_BANDWIDTH_KBPS = 1_250_000.0
LOCAL_RTT_MS = 0.5


@dataclass(frozen=True, slots=True)
class Resources:
    """Requested (or offered) resources: cores, bytes, whole accelerators."""

    cpu_cores: float = 0.0
    memory_bytes: float = 0.0
    accelerators: int = 0

    def plus(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_cores + other.cpu_cores,
            self.memory_bytes + other.memory_bytes,
            self.accelerators + other.accelerators,
        )

    def times(self, count: int) -> Resources:
        return Resources(self.cpu_cores * count, self.memory_bytes * count, self.accelerators * count)


@dataclass(frozen=True, slots=True)
class LinkState:
    """The network path from a site to a pool."""

    bandwidth_kbps: float
    rtt_ms: float

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_kbps * 1000.0


LOCAL_LINK = LinkState(LOCAL_BANDWIDTH_KBPS, LOCAL_RTT_MS)


@dataclass(frozen=True, slots=True)
class Pool:
    """A ComputePool as the engine sees it: hardware, place, node shape, price and links."""

    name: str
    hardware: Hardware
    region: str
    site: str
    node: Resources
    node_count: int
    node_cost_per_hour: float
    links: Mapping[str, LinkState] = field(default_factory=dict)
    allowed_namespaces: tuple[str, ...] = ()
    down: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "links", MappingProxyType(dict(self.links)))

    def link_from(self, site: str) -> LinkState | None:
        """The link a request from `site` uses; an explicit link wins over the local one."""
        if site in self.links:
            return self.links[site]
        if site == self.site:
            return LOCAL_LINK
        return None

    @property
    def capacity(self) -> Resources:
        return self.node.times(self.node_count)


@dataclass(frozen=True, slots=True)
class Encoding:
    """One way a client can send a request; listed in preference order."""

    name: str
    request_bytes: int
    accuracy_delta: float = 0.0


@dataclass(frozen=True, slots=True)
class Variant:
    """One way to run the model on one hardware class."""

    name: str
    hardware: Hardware
    accuracy: float
    latency_ms: float
    tail_latency_ms: float
    concurrency: int
    resources: Resources


@dataclass(frozen=True, slots=True)
class Traffic:
    site: str
    requests_per_second: float


@dataclass(frozen=True, slots=True)
class Workload:
    """An InferenceWorkload as the engine sees it."""

    namespace: str
    name: str
    response_bytes: int
    encodings: tuple[Encoding, ...]
    variants: tuple[Variant, ...]
    slo_latency_ms: float
    percentile: float
    min_accuracy: float
    traffic: tuple[Traffic, ...]
    regions: tuple[str, ...] = ()
    pools: tuple[str, ...] = ()
    max_pools: int = 3
    replicas_min: int = 1
    replicas_max: int = 50
    objective: Objective = "MinCost"
    max_cost_per_hour: float | None = None
    max_utilization: float = 0.8
    max_link_utilization: float = 0.8
    min_improvement_percent: float = 10.0
    cooldown_seconds: float = 300.0
    # observed / predicted service time per (pool, variant), from telemetry (1 when not observed)
    latency_correction: Mapping[tuple[str, str], float] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def variant_on(self, pool: str, variant: Variant) -> Variant:
        """The variant's profile on `pool`, scaled by what telemetry observed there."""
        factor = self.latency_correction.get((pool, variant.name), 1.0)
        if factor == 1.0:
            return variant
        return replace(variant, latency_ms=variant.latency_ms * factor, tail_latency_ms=variant.tail_latency_ms * factor)


@dataclass(frozen=True)
class Snapshot:
    """Everything the engine reads: pools and what other workloads already take from them."""

    pools: tuple[Pool, ...]
    # bytes/s other workloads already send over each (site, pool) link
    link_load_bytes_per_s: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # resources other workloads already hold in each pool
    pool_used: Mapping[str, Resources] = field(default_factory=dict)
    # the most bytes/s each (site, pool) link may carry before a route already on it misses its SLO
    link_limit_bytes_per_s: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pools", tuple(sorted(self.pools, key=lambda p: p.name)))
        # a read-only view is kept as given (usage.Ledger lends its running totals without a copy)
        for name in ("link_load_bytes_per_s", "pool_used", "link_limit_bytes_per_s"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, MappingProxyType(dict(value)))
