"""Turn validated API specs into the engine's immutable inputs (quantities parsed, costs priced)."""

from __future__ import annotations

from typing import Iterable, Sequence

from hetplace.api import telemetry as api_telemetry
from hetplace.api.errors import Problem
from hetplace.api.pool import ComputePoolSpec
from hetplace.api.workload import InferenceWorkloadSpec
from hetplace.engine.observed import LinkObservation, TrafficObservation
from hetplace.engine.snapshot import Encoding, LinkState, Pool, Resources, Traffic, Variant, Workload


def node_cost_per_hour(spec: ComputePoolSpec) -> float:
    """The declared price of one node-hour: the hourly price, or the TCO turned into one."""
    if spec.cost.hourly is not None:
        return spec.cost.hourly
    return spec.cost.tco.cost_per_hour


def pool_from_spec(name: str, spec: ComputePoolSpec, down: bool = False) -> Pool:
    return Pool(
        name=name,
        hardware=spec.hardware,
        region=spec.region,
        site=spec.site,
        node=Resources(spec.nodes.cpu_cores, spec.nodes.memory_bytes, spec.nodes.accelerators),
        node_count=spec.nodes.count,
        node_cost_per_hour=node_cost_per_hour(spec),
        links={link.site: LinkState(link.bandwidth_kbps, link.rtt_ms) for link in spec.links},
        allowed_namespaces=tuple(spec.allowed_namespaces),
        down=down,
    )


def workload_from_spec(namespace: str, name: str, spec: InferenceWorkloadSpec) -> Workload:
    return Workload(
        namespace=namespace,
        name=name,
        response_bytes=spec.response_bytes,
        encodings=tuple(Encoding(e.name, e.request_bytes, e.accuracy_delta) for e in spec.encodings),
        variants=tuple(
            Variant(
                name=v.name,
                hardware=v.hardware,
                accuracy=v.accuracy,
                latency_ms=v.profile.latency_ms,
                tail_latency_ms=v.profile.tail_latency_ms or v.profile.latency_ms,
                concurrency=v.profile.concurrency,
                resources=Resources(v.resources.cpu_cores, v.resources.memory_bytes, v.resources.accelerators),
            )
            for v in spec.variants
        ),
        slo_latency_ms=spec.slo.latency_ms,
        percentile=spec.slo.percentile,
        min_accuracy=spec.slo.min_accuracy,
        traffic=tuple(Traffic(t.site, t.requests_per_second) for t in spec.traffic),
        regions=tuple(spec.constraints.regions),
        pools=tuple(spec.constraints.pools),
        max_pools=spec.constraints.max_pools,
        replicas_min=spec.replicas.min,
        replicas_max=spec.replicas.max,
        objective=spec.policy.objective,
        max_cost_per_hour=spec.policy.max_cost_per_hour,
        max_utilization=spec.policy.max_utilization,
        max_link_utilization=spec.policy.max_link_utilization,
        min_improvement_percent=spec.policy.rebalance.min_improvement_percent,
        cooldown_seconds=spec.policy.rebalance.cooldown_seconds,
    )


def observations_from(links: Sequence[api_telemetry.LinkObservation],
                      traffic: Sequence[api_telemetry.TrafficObservation],
                      pools: Iterable[Pool], workloads: Iterable[Workload],
                      field_prefix: str = "") -> tuple[list[LinkObservation], list[TrafficObservation], list[Problem]]:
    """Observed links and traffic (a telemetry file, a scenario event) as the engine reads them, and
    a problem for each one that names a pool or workload that does not exist (`field_prefix`
    places the field, e.g. "events[2].")."""
    pool_names = {p.name for p in pools}
    workloads = list(workloads)
    known_workloads = ", ".join(sorted(w.key for w in workloads))
    problems = [Problem(f"{field_prefix}links[{i}].pool", o.pool,
                        f"no such ComputePool (known: {', '.join(sorted(pool_names))})")
                for i, o in enumerate(links) if o.pool not in pool_names]
    observed_traffic = []
    for i, o in enumerate(traffic):
        key, why = resolve_workload(o.workload, workloads)
        if key is None:
            problems.append(Problem(f"{field_prefix}traffic[{i}].workload", o.workload,
                                    f"{why} (known: {known_workloads})"))
        else:
            observed_traffic.append(TrafficObservation(key, o.site, o.requests_per_second))
    observed_links = [LinkObservation(o.site, o.pool, o.bandwidth_kbps, o.rtt_ms) for o in links]
    return observed_links, observed_traffic, problems


def resolve_workload(ref: str, workloads: Iterable[Workload]) -> tuple[str | None, str]:
    """NAMESPACE/NAME for a reference to a workload; a bare NAME matches the one workload of that name."""
    workloads = list(workloads)
    if "/" in ref:
        return (ref, "") if ref in {w.key for w in workloads} else (None, "no such InferenceWorkload")
    named = sorted(w.key for w in workloads if w.name == ref)
    if len(named) == 1:
        return named[0], ""
    if not named:
        return None, "no such InferenceWorkload"
    return None, f"matches {', '.join(named)}; write NAMESPACE/NAME"
