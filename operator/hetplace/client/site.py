"""`SiteClient`: a site's routing in the application's own process — the gateway's routing core
(`hetplace.site.core.Router`: route order, failover, health and backoff, deadline, metrics) with
tritonclient as its transport, so requests need no gateway hop (docs/routes.md).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from prometheus_client import CollectorRegistry, start_http_server

from hetplace.client.probes import SiteProber
from hetplace.client.transport import GrpcTransport, HttpTransport, Protocol, Refusal
from hetplace.site.core import DEFAULT_DEADLINE_S, Backoff, NoRouteServed, Router, Served
from hetplace.site.routes import Route, RoutesDocument, RoutesError, from_configmap, read_file
from hetplace.site.sources import FileRoutes, KubeRoutes, Workload, connect_core_v1
from hetplace.site.telemetry import LinkTelemetry, SiteMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NextRoute:
    """Where the next request for a model would go, and what to send it: the first route of its plan."""

    workload: str           # namespace/name of the InferenceWorkload
    model: str              # the name the application calls
    route: Route
    protocol: Protocol
    down: bool              # every route is down: this one is tried first anyway

    @property
    def endpoint(self) -> str:
        return self.route.grpc if self.protocol is Protocol.GRPC else self.route.http

    @property
    def encoding(self) -> str:
        return self.route.encoding

    @property
    def pool(self) -> str:
        return self.route.pool

    @property
    def variant(self) -> str:
        return self.route.variant

    @property
    def upstream_model(self) -> str:
        return self.route.model


class SiteClient:
    """Inference for the workloads of one site, routed as `hetplace gateway` routes it: each request to
    the first live route of its model, on to the next after a connection failure, a 5xx or UNAVAILABLE,
    or a timeout; a 4xx or INVALID_ARGUMENT is the answer and is raised as tritonclient raised it.

    Routes come from exactly one source: `routes_file` (routes ConfigMaps as `kubectl get -o yaml`
    prints them, read again when it changes), `workloads` (NAMESPACE/NAME) and/or `namespaces` (the
    API, watched read-only; `core_v1` or the pod's service account or kubeconfig), or `documents`
    (RoutesDocuments or routes ConfigMaps as dicts; `replace_routes` swaps them).

    Thread-safe: call it from as many threads as you like. The metrics (docs/telemetry.md) go to
    `registry` (yours, or one of its own) and are served on `metrics_port` when one is given."""

    def __init__(self, site: str, *, routes_file: str | os.PathLike | None = None, workloads: Iterable[str] = (),
                 namespaces: Iterable[str] = (), documents: Iterable[RoutesDocument | Mapping[str, Any]] | None = None,
                 core_v1: Any = None, protocol: Protocol | str = Protocol.HTTP, ca_file: str | None = None,
                 registry: CollectorRegistry | None = None, metrics_port: int | None = None,
                 metrics_bind: str = "127.0.0.1", deadline_s: float = DEFAULT_DEADLINE_S,
                 connect_timeout_s: float = 2.0, backoff: Backoff = Backoff(), poll_s: float = 1.0,
                 health_interval_s: float = 1.0, probe_interval_s: float = 10.0) -> None:
        workloads, namespaces = [Workload.parse(w) for w in workloads], list(namespaces)
        sources = (("routes_file", routes_file), ("workloads/namespaces", workloads or namespaces),
                   ("documents", documents is not None))
        given = [name for name, value in sources if value]
        if len(given) != 1:
            raise ValueError(f"SiteClient needs exactly one routes source (routes_file=, workloads=/namespaces= or "
                             f"documents=); given: {', '.join(given) or 'none'}")
        self.site = site
        self.protocol = Protocol(protocol)
        self.metrics = SiteMetrics(site, registry)
        self.router = Router(site, self.metrics, backoff=backoff, deadline_s=deadline_s)
        self.links = LinkTelemetry(self.metrics)
        self.transport = (GrpcTransport(self.links, ca_file=ca_file) if self.protocol is Protocol.GRPC else
                          HttpTransport(self.links, ca_file=ca_file, connect_timeout_s=connect_timeout_s,
                                        network_timeout_s=deadline_s))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._kube: KubeRoutes | None = None
        self._metrics_server: Any = None
        if routes_file is not None:
            self._follow_file(os.fspath(routes_file), poll_s)
        elif documents is not None:
            self.replace_routes(documents)
        else:
            self._watch_api(core_v1, workloads, namespaces)
        self.prober = SiteProber(self.router, self.links, ca_file=ca_file, health_interval_s=health_interval_s,
                                 probe_interval_s=probe_interval_s)
        self.prober.start()
        if metrics_port is not None:
            self._metrics_server, _ = start_http_server(metrics_port, metrics_bind, registry=self.metrics.registry)

    # -- routes sources ---------------------------------------------------------------------------
    def _follow_file(self, path: str, poll_s: float) -> None:
        source = FileRoutes(path, self.router.replace, self.metrics, poll_s)
        source.poll()
        if not source.routes.keys():
            read_file(path)     # raises naming the file and what is wrong with it
            raise RoutesError(f"{path}: no routes ConfigMap could be used")

        def follow() -> None:
            while not self._stop.wait(poll_s):
                try:
                    source.poll()
                except Exception:   # keep following the file whatever one read did
                    log.exception("reading %s", path)

        self._start(follow, f"hetplace-routes-{self.site}")

    def _watch_api(self, core_v1: Any, workloads: list[Workload], namespaces: list[str]) -> None:
        source = KubeRoutes(core_v1 if core_v1 is not None else connect_core_v1(), self.router.replace,
                            namespaces=namespaces, workloads=workloads, metrics=self.metrics)
        for scope in source.scopes():      # listed once here, so the client routes from its first request
            source.relist(*scope)
        source.start()
        self._kube = source

    def _start(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, daemon=True, name=name)
        thread.start()
        self._threads.append(thread)

    def replace_routes(self, documents: Iterable[RoutesDocument | Mapping[str, Any]]) -> None:
        """Route by these documents from now on (RoutesDocuments, their JSON as dicts, or routes ConfigMaps)."""
        parsed = [d if isinstance(d, RoutesDocument) else
                  from_configmap(d) if "data" in d else RoutesDocument.model_validate(d) for d in documents]
        self.router.replace(parsed)
        self.metrics.routes_loaded(time.time())

    # -- where requests go --------------------------------------------------------------------------
    def _document(self, model_or_workload: str) -> RoutesDocument:
        if "/" in model_or_workload:
            for doc in self.router.documents():
                if doc.workload == model_or_workload:
                    return doc
        return self.router.resolve(model_or_workload)

    def route(self, model_or_workload: str, *, encoding: str | None = None) -> NextRoute:
        """Where the next request for a model (or workload, NAMESPACE/NAME) would go. Raises
        `UnknownModel`, or `NoRouteServed` when its workload has no route for this site."""
        doc = self._document(model_or_workload)
        plan = self.router.plan_of(doc, encoding)
        if not plan:
            raise NoRouteServed(doc.model, self.site, (), f"(workload {doc.workload} has no routes for it)")
        first = plan[0]
        return NextRoute(doc.workload, doc.model, first, self.protocol,
                         self.router.health.is_down((doc.workload, first.pool, first.variant)))

    def encoding(self, model_or_workload: str) -> str:
        """The encoding to send the next request in: that of the route it would take (the decided
        route's while that is live). Pass it back as `infer(..., encoding=)`."""
        return self.route(model_or_workload).encoding

    # -- inference ------------------------------------------------------------------------------------
    @property
    def InferInput(self) -> type:     # noqa: N802 — tritonclient's name, for the protocol chosen
        return self.transport.module.InferInput

    @property
    def InferRequestedOutput(self) -> type:     # noqa: N802
        return self.transport.module.InferRequestedOutput

    def infer(self, model: str, inputs: list[Any], outputs: list[Any] | None = None, *,
              encoding: str | None = None, **options: Any) -> Any:
        """tritonclient's `infer` on the model's routes, with the model renamed to each route's; returns
        tritonclient's InferResult. `encoding` is the encoding the inputs are in (the first live route in
        it is preferred); `options` go to tritonclient's `infer` (request_id, parameters, headers, ...).
        Raises `UnknownModel`, `NoRouteServed` naming every route tried, or tritonclient's
        InferenceServerException for an answer that is an error (a 4xx, INVALID_ARGUMENT)."""
        return self.infer_served(model, inputs, outputs, encoding=encoding, **options).response

    def infer_served(self, model: str, inputs: list[Any], outputs: list[Any] | None = None, *,
                     encoding: str | None = None, deadline_s: float | None = None, **options: Any) -> Served[Any]:
        """`infer`, with what served it: `.response` (the InferResult), `.route`, `.document` and
        `.tried` (the routes that failed first, and why). `deadline_s` bounds this request's whole
        time, every route tried included (the client's `deadline_s` by default)."""
        if "client_timeout" in options:     # tritonclient.grpc's own name for it
            client_timeout = options.pop("client_timeout")
            deadline_s = client_timeout if deadline_s is None else min(deadline_s, client_timeout)
        served = self.router.call_blocking(
            model, encoding, lambda route, timeout_s: self.transport.infer(route, timeout_s, inputs, outputs, options),
            deadline_s=deadline_s)
        if isinstance(served.response, Refusal):
            raise served.response.error
        return served

    # -- lifecycle ------------------------------------------------------------------------------------
    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """(host, port) the metrics are served on, when `metrics_port` was given (0: a free port)."""
        return self._metrics_server.server_address[:2] if self._metrics_server is not None else None

    def close(self) -> None:
        """Stop following routes and probing, close every upstream connection and the metrics server."""
        self._stop.set()
        if self._kube is not None:
            self._kube.stop()
        self.prober.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        self.transport.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    def __enter__(self) -> "SiteClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
