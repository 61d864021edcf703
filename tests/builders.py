"""Fluent builders of ComputePools, InferenceWorkloads and Scenarios: defaults everywhere, tests state what matters."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from hetplace.api.models import API_VERSION, ComputePool, InferenceWorkload
from hetplace.api.scenario import Scenario


class PoolBuilder:
    """a_pool("gpu-cloud-eu").gpu().region("eu-west-1").hourly(0.81).link("factory-eu-1", kbps=2000, rtt_ms=25)"""

    def __init__(self, name: str) -> None:
        self._metadata: dict[str, Any] = {"name": name}
        self._spec: dict[str, Any] = {
            "hardware": "cpu",
            "region": "eu-west-1",
            "site": "cloud-eu",
            "nodeSelector": {"hetplace.io/pool": name},
            "nodes": {"count": 4, "cpu": "4", "memory": "8Gi"},
            "cost": {"hourly": 0.178},
        }

    def gpu(self, resource_name: str = "nvidia.com/gpu", model: str = "L4") -> PoolBuilder:
        return self.hardware("gpu").accelerator(resource_name, model)

    def cpu(self) -> PoolBuilder:
        return self.hardware("cpu")

    def arm(self) -> PoolBuilder:
        return self.hardware("arm")

    def hardware(self, hardware: str) -> PoolBuilder:
        self._spec["hardware"] = hardware
        return self

    def accelerator(self, resource_name: str, model: str = "") -> PoolBuilder:
        self._spec["accelerator"] = {"resourceName": resource_name, "model": model}
        return self

    def region(self, region: str) -> PoolBuilder:
        self._spec["region"] = region
        return self

    def site(self, site: str) -> PoolBuilder:
        self._spec["site"] = site
        return self

    def nodes(self, count: int = 4, cpu: Any = "4", memory: Any = "8Gi", accelerators: int = 0) -> PoolBuilder:
        self._spec["nodes"] = {"count": count, "cpu": cpu, "memory": memory}
        if accelerators:
            self._spec["nodes"]["accelerators"] = accelerators
        return self

    def hourly(self, price: float) -> PoolBuilder:
        self._spec["cost"] = {"hourly": price}
        return self

    def tco(self, capex: float = 600, amortization_years: float = 3, power_watts: float = 25, pue: float = 1.0,
            electricity_per_kwh: float = 0.25, opex_per_hour: float = 0.02) -> PoolBuilder:
        self._spec["cost"] = {"tco": {
            "capex": capex, "amortizationYears": amortization_years, "powerWatts": power_watts, "pue": pue,
            "electricityPerKWh": electricity_per_kwh, "opexPerHour": opex_per_hour,
        }}
        return self

    def link(self, site: str, kbps: float, rtt_ms: float) -> PoolBuilder:
        self._spec.setdefault("links", []).append({"site": site, "bandwidthKBps": kbps, "rttMs": rtt_ms})
        return self

    def allow_namespaces(self, *namespaces: str) -> PoolBuilder:
        self._spec["allowedNamespaces"] = list(namespaces)
        return self

    def toleration(self, key: str, effect: str = "NoSchedule", operator: str = "Exists") -> PoolBuilder:
        self._spec.setdefault("tolerations", []).append({"key": key, "operator": operator, "effect": effect})
        return self

    def with_spec(self, **fields: Any) -> PoolBuilder:
        """Set spec fields by wire name, e.g. with_spec(image="triton:arm64")."""
        self._spec.update(fields)
        return self

    def spec_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._spec)

    def raw(self) -> dict[str, Any]:
        """The manifest as YAML would hold it (camelCase), for tests of invalid input."""
        return {"apiVersion": API_VERSION, "kind": "ComputePool", "metadata": dict(self._metadata),
                "spec": self.spec_dict()}

    def build(self) -> ComputePool:
        return ComputePool.model_validate(self.raw())


class WorkloadBuilder:
    """a_workload("defect-detector", namespace="factory").encoding("raw", 224000).variant(...).slo(150)"""

    def __init__(self, name: str, namespace: str = "default") -> None:
        self._metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        self._spec: dict[str, Any] = {
            "model": {"name": name, "repository": f"s3://models/{name}"},
            "responseBytes": 1000,
            "slo": {"latencyMs": 150, "percentile": 99},
        }

    def model(self, name: str, repository: str) -> WorkloadBuilder:
        self._spec["model"] = {"name": name, "repository": repository}
        return self

    def response_bytes(self, size: int) -> WorkloadBuilder:
        self._spec["responseBytes"] = size
        return self

    def encoding(self, name: str, request_bytes: int, accuracy_delta: float = 0.0) -> WorkloadBuilder:
        encoding: dict[str, Any] = {"name": name, "requestBytes": request_bytes}
        if accuracy_delta:
            encoding["accuracyDelta"] = accuracy_delta
        self._spec.setdefault("encodings", []).append(encoding)
        return self

    def variant(self, name: str, hardware: str = "cpu", *, accuracy: float = 0.84, latency_ms: float = 30,
                tail_ms: float | None = None, concurrency: int = 1, cpu: Any = "2", memory: Any = "4Gi",
                accelerators: int = 0) -> WorkloadBuilder:
        profile: dict[str, Any] = {"latencyMs": latency_ms, "concurrency": concurrency}
        if tail_ms is not None:
            profile["tailLatencyMs"] = tail_ms
        resources: dict[str, Any] = {"cpu": cpu, "memory": memory}
        if accelerators:
            resources["accelerators"] = accelerators
        self._spec.setdefault("variants", []).append(
            {"name": name, "hardware": hardware, "accuracy": accuracy, "profile": profile, "resources": resources}
        )
        return self

    def slo(self, latency_ms: float, percentile: float = 99, min_accuracy: float | None = None) -> WorkloadBuilder:
        self._spec["slo"] = {"latencyMs": latency_ms, "percentile": percentile}
        if min_accuracy is not None:
            self._spec["slo"]["minAccuracy"] = min_accuracy
        return self

    def traffic(self, site: str, requests_per_second: float) -> WorkloadBuilder:
        self._spec.setdefault("traffic", []).append({"site": site, "requestsPerSecond": requests_per_second})
        return self

    def regions(self, *regions: str) -> WorkloadBuilder:
        self._spec.setdefault("constraints", {})["regions"] = list(regions)
        return self

    def pools(self, *pools: str) -> WorkloadBuilder:
        self._spec.setdefault("constraints", {})["pools"] = list(pools)
        return self

    def max_pools(self, count: int) -> WorkloadBuilder:
        self._spec.setdefault("constraints", {})["maxPools"] = count
        return self

    def replicas(self, min: int = 1, max: int = 50) -> WorkloadBuilder:  # noqa: A002 - wire names
        self._spec["replicas"] = {"min": min, "max": max}
        return self

    def policy(self, **fields: Any) -> WorkloadBuilder:
        """Policy fields by wire name, e.g. policy(objective="MinLatency", maxCostPerHour=1.0)."""
        self._spec.setdefault("policy", {}).update(fields)
        return self

    def spec_dict(self) -> dict[str, Any]:
        """The spec with defaults for what the test did not say: one encoding, variant and site."""
        spec = copy.deepcopy(self._spec)
        spec.setdefault("encodings", [{"name": "raw", "requestBytes": 224000}])
        spec.setdefault("variants", [{
            "name": "openvino-int8", "hardware": "cpu", "accuracy": 0.84,
            "profile": {"latencyMs": 30, "tailLatencyMs": 45, "concurrency": 2},
            "resources": {"cpu": "4", "memory": "4Gi"},
        }])
        spec.setdefault("traffic", [{"site": "cloud-eu", "requestsPerSecond": 100}])
        return spec

    def raw(self) -> dict[str, Any]:
        """The manifest as YAML would hold it (camelCase), for tests of invalid input."""
        return {"apiVersion": API_VERSION, "kind": "InferenceWorkload", "metadata": dict(self._metadata),
                "spec": self.spec_dict()}

    def build(self) -> InferenceWorkload:
        return InferenceWorkload.model_validate(self.raw())


class ScenarioBuilder:
    """a_scenario(duration_s=600, step_s=60).link_at(120, "factory-eu-1", "cpu-cloud-eu", kbps=250)
                                           .pool_down_at(300, "gpu-cloud-eu")

    Each call adds one event, in the order given (several events may share a second).
    """

    def __init__(self, name: str, duration_s: float, step_s: float) -> None:
        self._document: dict[str, Any] = {
            "apiVersion": API_VERSION, "kind": "Scenario", "metadata": {"name": name},
            "durationSeconds": duration_s, "stepSeconds": step_s, "events": [],
        }

    def link_at(self, at: float, site: str, pool: str, kbps: float, rtt_ms: float = 25) -> ScenarioBuilder:
        return self._event(at, links=[{"site": site, "pool": pool, "bandwidthKBps": kbps, "rttMs": rtt_ms}])

    def traffic_at(self, at: float, workload: str, site: str, requests_per_second: float) -> ScenarioBuilder:
        return self._event(at, traffic=[{"workload": workload, "site": site, "requestsPerSecond": requests_per_second}])

    def pool_down_at(self, at: float, pool: str) -> ScenarioBuilder:
        return self._event(at, poolDown=pool)

    def pool_up_at(self, at: float, pool: str) -> ScenarioBuilder:
        return self._event(at, poolUp=pool)

    def _event(self, at: float, **change: Any) -> ScenarioBuilder:
        self._document["events"].append({"at": at, **change})
        return self

    def raw(self) -> dict[str, Any]:
        return copy.deepcopy(self._document)

    def build(self) -> Scenario:
        return Scenario.model_validate(self.raw())


def write_manifests(path: Path, *objects: PoolBuilder | WorkloadBuilder | ScenarioBuilder | dict[str, Any]) -> Path:
    """One multi-document YAML file holding the objects (builders or raw dicts), as a user writes it."""
    documents = [o if isinstance(o, dict) else o.raw() for o in objects]
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")
    return path


def a_pool(name: str = "cpu-cloud-eu") -> PoolBuilder:
    return PoolBuilder(name)


def a_workload(name: str = "defect-detector", namespace: str = "default") -> WorkloadBuilder:
    return WorkloadBuilder(name, namespace)


def a_scenario(name: str = "trace", duration_s: float = 600, step_s: float = 60) -> ScenarioBuilder:
    return ScenarioBuilder(name, duration_s, step_s)


DELETE: Any = object()
"""Pass as the value to with_path to remove a field."""


def with_path(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `document` with the value at a wire path such as spec.variants[0].profile.latencyMs set.

    `value=DELETE` removes the field instead.
    """
    changed = copy.deepcopy(document)
    *parents, last = _parts(path)
    node: Any = changed
    for part in parents:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return changed


def _parts(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for segment in path.split("."):
        name, *indexes = segment.replace("]", "").split("[")
        if name:
            parts.append(name)
        parts.extend(int(index) for index in indexes)
    return parts
