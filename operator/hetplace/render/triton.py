"""A decision as Kubernetes objects: per group a Triton Deployment and its Service, and one ConfigMap
of routes (per site the routes to try, docs/routes.md). Pure: objects in, plain dicts out (docs/design.md §4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from hetplace.api.models import ComputePool, InferenceWorkload
from hetplace.engine.decision import Decision, GroupPlan
from hetplace.engine.fallbacks import SLO_TOLERANCE_MS, RouteOption
from hetplace.render.names import group_name, label_value, routes_name
from hetplace.site.routes import DATA_KEY as ROUTES_KEY
from hetplace.site.routes import VERSION as ROUTES_VERSION

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
                    default_image: str = DEFAULT_TRITON_IMAGE,
                    routes: Mapping[str, Sequence[RouteOption]] | None = None) -> Rendered:
    """The objects of a feasible decision. The workload's uid, when it has one, becomes the owner
    reference of each (so Kubernetes removes them with it); without one (GitOps review) there is none.
    `routes`: each site's routes with fallbacks (engine.fallbacks); without them, the decided ones."""
    if not decision.feasible:
        raise ValueError(f"{workload.key}: nothing to render for an infeasible decision ({decision.reason})")
    deployments, services = [], []
    for group in decision.groups:
        pool = pools[group.pool]
        deployments.append(deployment(workload, pool, group, default_image))
        services.append(service(workload, group))
    if routes is None:
        routes = decided_routes(decision, workload.spec.slo.latency_ms)
    return Rendered(tuple(deployments), tuple(services), routes_configmap(workload, routes, pools))


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


def routes_configmap(workload: InferenceWorkload, routes: Mapping[str, Sequence[RouteOption]],
                     pools: Mapping[str, ComputePool], generation: int | None = None,
                     decided_at: str | None = None) -> dict[str, Any]:
    """The routes document (docs/routes.md) of `routes` (site -> routes, decided first) as the
    ConfigMap `<workload>-routes`. `generation` and `decided_at` (RFC 3339, as status holds the
    decision's time) are left out when there is no live workload (`hetplace render`)."""
    model = workload.spec.model.name
    sites = {site: [_route(workload, pools.get(o.pool), o, model) for o in options]
             for site, options in sorted(routes.items())}
    document: dict[str, Any] = {"version": ROUTES_VERSION, "workload": workload.key}
    if generation is not None:
        document["generation"] = generation
    if decided_at is not None:
        document["decidedAt"] = decided_at
    document.update({"model": model, "sloLatencyMs": workload.spec.slo.latency_ms, "sites": sites})
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": metadata(workload, routes_name(workload.metadata.name)),
            "data": {ROUTES_KEY: json.dumps(document, separators=(",", ":"))}}


def decided_routes(decision: Decision, slo_ms: float) -> dict[str, list[RouteOption]]:
    """Each site's decided route alone: routes without fallbacks."""
    return {r.site: [RouteOption(g.pool, g.variant, r.encoding, r.predicted_latency_ms,
                                 r.predicted_latency_ms <= slo_ms + SLO_TOLERANCE_MS, decided=True)]
            for g in decision.groups for r in g.routes}


def _route(workload: InferenceWorkload, pool: ComputePool | None, o: RouteOption, model: str) -> dict[str, Any]:
    service_name = group_name(workload.metadata.name, o.pool, o.variant)
    namespace = workload.metadata.namespace
    if pool is not None and pool.spec.client_endpoints is not None:
        http, grpc = pool.spec.client_endpoints.format(service=service_name, namespace=namespace,
                                                       workload=workload.metadata.name, pool=o.pool, variant=o.variant)
    else:
        host = f"{service_name}.{namespace}.svc"
        http, grpc = f"http://{host}:{HTTP_PORT}", f"grpc://{host}:{GRPC_PORT}"
    route: dict[str, Any] = {"pool": o.pool, "variant": o.variant, "encoding": o.encoding, "model": model,
                             "http": http, "grpc": grpc, "withinSlo": o.within_slo,
                             "decided": o.decided, "draining": o.draining}
    if o.predicted_latency_ms is not None:
        # two significant figures: finer ones would rewrite the ConfigMap on every telemetry reading
        route["predictedLatencyMs"] = float(f"{o.predicted_latency_ms:.2g}")
    return route
