"""`hetplace run`: the operator process — settings, API client, metrics endpoint, telemetry and
kopf, wired together and run until a signal stops them."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time

import kopf
import prometheus_client

from hetplace.config import Settings
from hetplace.controller import kopf_fixes
from hetplace.controller.handlers import SharedMemo, kopf_settings, make_registry
from hetplace.controller.leader import peering_objects
from hetplace.controller.runtime import Operator
from hetplace.k8s.client import Kube
from hetplace.metrics import OperatorMetrics
from hetplace.telemetry.triton import probe_model
from hetplace.telemetry.prometheus import LinkTelemetry, PrometheusClient, ServiceTimeTelemetry, SiteTelemetry

log = logging.getLogger("hetplace")


def own_identity() -> str:
    """The pod's name when the chart passes it (POD_NAME), else host and process."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def build_operator(settings: Settings, *, identity: str, priority: int, standalone: bool) -> Operator:
    link_telemetry = service_telemetry = site_telemetry = None
    if settings.prometheus_url is not None:
        prometheus = PrometheusClient(str(settings.prometheus_url))
        link_telemetry = LinkTelemetry(prometheus, settings.queries["link_bandwidth_bytes"],
                                       settings.queries["link_rtt_seconds"], settings.telemetry_stale_after_seconds,
                                       time.time)
        service_telemetry = ServiceTimeTelemetry(prometheus, settings.queries)
        site_telemetry = SiteTelemetry(prometheus, settings.queries)
    return Operator(settings, Kube.from_environment(), OperatorMetrics(), identity=identity, priority=priority,
                    standalone=standalone, probe=probe_model, link_telemetry=link_telemetry,
                    service_telemetry=service_telemetry, site_telemetry=site_telemetry)


def ensure_peering(kube: Kube, settings: Settings) -> None:
    """kopf waits for its peering objects; the chart creates them, and so does the operator if one is missing."""
    for kind, namespace in peering_objects(settings):
        if kube.get("kopf.dev/v1", kind, namespace, settings.peering_name) is None:
            meta = {"name": settings.peering_name, **({"namespace": namespace} if namespace else {})}
            kube.apply({"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": meta})


def run(settings: Settings, *, priority: int | None = None, standalone: bool = False,
        liveness_endpoint: str | None = None) -> None:
    """Run until SIGINT/SIGTERM. Two instances with one peering name: the higher priority works,
    the other waits (a tie pauses both, so the default priority is random)."""
    kopf_fixes.apply()
    identity = own_identity()
    priority = priority if priority is not None else random.randint(1, 1_000_000)
    operator = build_operator(settings, identity=identity, priority=priority, standalone=standalone)
    if not standalone:
        ensure_peering(operator.kube, settings)
    server, _ = prometheus_client.start_http_server(settings.metrics_port, settings.metrics_address,
                                                    registry=operator.metrics.registry)
    log.info("hetplace %s (priority %d) serving metrics on :%d", identity, priority, settings.metrics_port)
    async def operate() -> None:
        operator.stop_flag = asyncio.Event()        # set by the operator itself to restart afresh
        await kopf.operator(
            registry=make_registry(), settings=kopf_settings(settings), memo=SharedMemo(operator=operator),
            identity=identity, priority=priority, standalone=standalone,
            peering_name=None if standalone else settings.peering_name,
            clusterwide=not settings.watch_namespaces, namespaces=settings.watch_namespaces,
            liveness_endpoint=liveness_endpoint, stop_flag=operator.stop_flag)

    try:
        asyncio.run(operate())
    finally:
        server.shutdown()
