"""A decision as Kubernetes objects: per group a Triton Deployment and its Service, and one ConfigMap
of routes (site -> endpoint and encoding). Pure: objects in, plain dicts out (docs/design.md §4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from hetplace.api.models import ComputePool, InferenceWorkload
from hetplace.engine.decision import Decision, GroupPlan
from hetplace.render.names import group_name, label_value, routes_name

# A pinned Triton release; a pool may override it (spec.image), e.g. with an arm64/Jetson build.
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.12-py3"
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
MANAGED_BY = {"app.kubernetes.io/managed-by": "hetplace"}
WORKLOAD_LABEL, POOL_LABEL, GROUP_LABEL = "hetplace.io/workload", "hetplace.io/pool", "hetplace.io/group"
TRITON_USER = 1000      # the tritonserver image's unprivileged user


@dataclass(frozen=True)
class Rendered:
    """Everything one decision needs, in apply order."""

    deployments: tuple[dict[str, Any], ...]
    services: tuple[dict[str, Any], ...]
    routes: dict[str, Any]

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [*self.deployments, *self.services, self.routes]


def render_decision(workload: InferenceWorkload, pools: Mapping[str, ComputePool], decision: Decision,
                    default_image: str = DEFAULT_TRITON_IMAGE) -> Rendered:
    """The objects of a feasible decision. The workload's uid, when it has one, becomes the owner
    reference of each (so Kubernetes removes them with it); without one (GitOps review) there is none."""
    if not decision.feasible:
        raise ValueError(f"{workload.key}: nothing to render for an infeasible decision ({decision.reason})")
    deployments, services = [], []
    for group in decision.groups:
        pool = pools[group.pool]
        deployments.append(deployment(workload, pool, group, default_image))
        services.append(service(workload, group))
    return Rendered(tuple(deployments), tuple(services), routes_configmap(workload, decision))


def labels(workload: InferenceWorkload, group: GroupPlan | None = None) -> dict[str, str]:
    out = {**MANAGED_BY, WORKLOAD_LABEL: label_value(workload.metadata.name)}
    if group is not None:
        out[POOL_LABEL] = label_value(group.pool)
        out[GROUP_LABEL] = group_name(workload.metadata.name, group.pool, group.variant)
    return out


def metadata(workload: InferenceWorkload, name: str, group: GroupPlan | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": workload.metadata.namespace, "labels": labels(workload, group)}
    if workload.metadata.uid:
        meta["ownerReferences"] = [{
            "apiVersion": workload.api_version, "kind": workload.kind, "name": workload.metadata.name,
            "uid": workload.metadata.uid, "controller": True, "blockOwnerDeletion": True,
        }]
    return meta


def deployment(workload: InferenceWorkload, pool: ComputePool, group: GroupPlan, default_image: str) -> dict[str, Any]:
    name = group_name(workload.metadata.name, group.pool, group.variant)
    variant = next(v for v in workload.spec.variants if v.name == group.variant)
    requests: dict[str, Any] = {"cpu": variant.resources.cpu, "memory": variant.resources.memory}
    limits: dict[str, Any] = {"memory": variant.resources.memory}
    if variant.resources.accelerators:
        if pool.spec.accelerator is None:
            raise ValueError(f"{workload.key}: variant {variant.name} asks for accelerators but pool "
                             f"{pool.metadata.name} names no spec.accelerator.resourceName")
        # extended resources are requested through limits (requests must equal them)
        requests[pool.spec.accelerator.resource_name] = variant.resources.accelerators
        limits[pool.spec.accelerator.resource_name] = variant.resources.accelerators
    model = workload.spec.model
    container = {
        "name": "triton",
        "image": pool.spec.image or default_image,
        "command": ["tritonserver"],
        "args": [f"--model-repository={model.repository}", "--model-control-mode=explicit",
                 f"--load-model={model.name}", f"--http-port={HTTP_PORT}", f"--grpc-port={GRPC_PORT}",
                 f"--metrics-port={METRICS_PORT}"],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                  {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"},
                           "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"},
                          "initialDelaySeconds": 30, "periodSeconds": 10},
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_labels = labels(workload, group)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(workload, name, group),
        "spec": {
            "replicas": group.replicas,
            "selector": {"matchLabels": {WORKLOAD_LABEL: pod_labels[WORKLOAD_LABEL], GROUP_LABEL: name}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "nodeSelector": dict(pool.spec.node_selector),
                    "tolerations": [t.wire() for t in pool.spec.tolerations],
                    "securityContext": {"runAsNonRoot": True, "runAsUser": TRITON_USER, "runAsGroup": TRITON_USER,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def service(workload: InferenceWorkload, group: GroupPlan) -> dict[str, Any]:
    name = group_name(workload.metadata.name, group.pool, group.variant)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(workload, name, group),
        "spec": {
            "selector": {WORKLOAD_LABEL: label_value(workload.metadata.name), GROUP_LABEL: name},
            "ports": [{"name": port, "port": number, "targetPort": port, "protocol": "TCP"}
                      for port, number in (("http", HTTP_PORT), ("grpc", GRPC_PORT), ("metrics", METRICS_PORT))],
        },
    }


def routes_configmap(workload: InferenceWorkload, decision: Decision) -> dict[str, Any]:
    """site -> {http, grpc, encoding, pool, variant}: where that site's clients send, and how."""
    namespace = workload.metadata.namespace
    data = {}
    for group in decision.groups:
        host = f"{group_name(workload.metadata.name, group.pool, group.variant)}.{namespace}.svc"
        for route in group.routes:
            data[route.site] = json.dumps({"http": f"http://{host}:{HTTP_PORT}", "grpc": f"{host}:{GRPC_PORT}",
                                           "encoding": route.encoding, "pool": group.pool,
                                           "variant": group.variant}, sort_keys=True)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": metadata(workload, routes_name(workload.metadata.name)),
            "data": dict(sorted(data.items()))}
