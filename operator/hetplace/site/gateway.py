"""`hetplace gateway`: a KServe-V2 server (HTTP and gRPC) at a site that forwards each request along
the routes of its model (docs/routes.md), fails over to the next route when one cannot serve,
says which encoding to send now, and exports the series the operator plans on (docs/telemetry.md).

It is thin on purpose: the order of routes and the failover loop are `core.Router`'s, the link
figures `telemetry.LinkTelemetry`'s, the routes a source's, upstream HTTP `upstream.UpstreamPool`'s.
Bodies are forwarded as bytes (binary tensors and compressed bodies included, never parsed), over
pooled keep-alive connections.

What runs on every request is kept small (bench/README.md, "Gateway", has the figures): upstream
HTTP on asyncio transports rather than aiohttp's client session (which cost about 0.4 ms of CPU
per request on two small cores; it still sends the probes), one timer per attempt (the router's
deadline), no timer around a body that has already arrived, metric series looked up once per
workload, and no garbage collection over what was loaded at start-up.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import ssl
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import aiohttp
import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from hetplace.site.core import NoRouteServed, Router, UnknownModel, UpstreamFailure
from hetplace.site.routes import ENCODING_HEADER, ROUTE_HEADER, Route
from hetplace.site.telemetry import FailureReason, LinkTelemetry, SiteMetrics
from hetplace.site.upstream import (UpstreamConnectError, UpstreamConnectTimeout, UpstreamPool, UpstreamProtocolError,
                                    quoted)

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Inference-Header-Content-Length", "Content-Encoding", "Accept-Encoding")
FORWARDED_RESPONSE_HEADERS = tuple((h, h.lower()) for h in ("Content-Type", "Inference-Header-Content-Length",
                                                              "Content-Encoding"))
# gRPC statuses another route may serve instead; the others (a bad request, an unknown model) are the answer
GRPC_FAILOVER = {grpc.StatusCode.UNAVAILABLE: FailureReason.CONNECT,
                 grpc.StatusCode.DEADLINE_EXCEEDED: FailureReason.TIMEOUT,
                 grpc.StatusCode.INTERNAL: FailureReason.SERVER_ERROR,
                 grpc.StatusCode.UNKNOWN: FailureReason.SERVER_ERROR,
                 grpc.StatusCode.DATA_LOSS: FailureReason.PROTOCOL,
                 grpc.StatusCode.RESOURCE_EXHAUSTED: FailureReason.SERVER_ERROR}


@dataclass(frozen=True)
class GatewaySettings:
    site: str
    listen: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001               # 0: no gRPC listener
    metrics_port: int = 9090
    tls_cert: str | None = None
    tls_key: str | None = None
    upstream_ca: str | None = None
    deadline_s: float = 10.0            # a request's whole time upstream, every route tried included
    connect_timeout_s: float = 2.0      # one connection attempt to an upstream
    max_request_bytes: int = 64 * 1024 * 1024
    client_body_timeout_s: float = 30.0  # a client sending its body slower than this is cut off (408)
    keepalive_timeout_s: float = 75.0
    probe_interval_s: float = 10.0      # link probes (when the link is idle) and figures published
    link_idle_s: float = 30.0           # a link without real requests this long is probed (LinkTelemetry.idle_s)
    health_interval_s: float = 1.0      # down routes probed on /v2/health/ready
    shutdown_grace_s: float = 5.0


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class GrpcRefusal:
    """An upstream gRPC status that is the answer (not one to fail over on)."""

    code: grpc.StatusCode
    details: str


# Upstream gRPC channels: no message size cap of their own (the listener's --max-request-bytes is the
# cap), and a reconnect backoff of 1 s: gRPC's default grows to 120 s, so a pool that comes back and
# whose route a health probe restores would fail fast with UNAVAILABLE for up to two minutes.
UPSTREAM_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
                            ("grpc.initial_reconnect_backoff_ms", 1000), ("grpc.min_reconnect_backoff_ms", 1000),
                            ("grpc.max_reconnect_backoff_ms", 1000)]


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json",
                        headers=headers)


class Gateway:
    """The listeners (HTTP, gRPC, metrics) and the background probes of one site's gateway."""

    def __init__(self, settings: GatewaySettings, router: Router, metrics: SiteMetrics,
                 links: LinkTelemetry) -> None:
        self.settings = settings
        self.router = router
        self.metrics = metrics
        self.links = links
        self._upstream_tls = ssl.create_default_context(cafile=settings.upstream_ca)
        self._session: aiohttp.ClientSession | None = None       # probes
        # requests; an attempt's whole time is the router's (`Router.call` bounds each send)
        self._upstream = UpstreamPool(settings.connect_timeout_s, keepalive_s=30.0, tls=self._upstream_tls)
        self._runners: list[web.AppRunner] = []
        self._grpc_server: grpc.aio.Server | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tasks: list[asyncio.Task] = []
        self._grpc_ca: bytes | None = None
        if settings.upstream_ca:
            with open(settings.upstream_ca, "rb") as ca:
                self._grpc_ca = ca.read()

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=30, keepalive_timeout=30),
            auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))
        listener_tls = None
        if s.tls_cert:
            listener_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            listener_tls.load_cert_chain(s.tls_cert, s.tls_key)
        app = web.Application(client_max_size=s.max_request_bytes, middlewares=[self._triton_errors])
        app.add_routes([    # inference first: the router tries the resources in this order
            web.post("/v2/models/{model}/infer", self.infer),
            web.post("/v2/models/{model}/versions/{version}/infer", self.infer),
            web.get("/v2/health/live", self.live),
            web.get("/v2/health/ready", self.ready),
            web.get("/v2/hetplace/routes", self.routes_document),
            web.get("/v2/models/{model}", self.model_get),
            web.get("/v2/models/{model}/ready", self.model_get),
            web.get("/v2/models/{model}/versions/{version}", self.model_get),
            web.get("/v2/models/{model}/versions/{version}/ready", self.model_get),
        ])
        await self._serve(app, s.http_port, listener_tls, auto_decompress=False,
                          keepalive_timeout=s.keepalive_timeout_s)
        metrics_app = web.Application()
        metrics_app.add_routes([web.get("/metrics", self.metrics_page)])
        await self._serve(metrics_app, s.metrics_port, None)
        if s.grpc_port:
            await self._start_grpc()
        self._tasks = [asyncio.create_task(self._probe_links(), name="link-probes"),
                       asyncio.create_task(self._probe_health(), name="route-health")]
        log.info("gateway for site %s: HTTP %s:%d, gRPC %s, metrics :%d", s.site, s.listen, s.http_port,
                 f"{s.listen}:{s.grpc_port}" if s.grpc_port else "off", s.metrics_port)

    async def _serve(self, app: web.Application, port: int, tls: ssl.SSLContext | None, **handler: Any) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=self.settings.shutdown_grace_s, **handler)
        await runner.setup()
        await web.TCPSite(runner, self.settings.listen, port, ssl_context=tls, reuse_address=True).start()
        self._runners.append(runner)

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (up to the grace period), then close upstreams."""
        for task in self._tasks:
            task.cancel()
        if self._grpc_server is not None:
            await self._grpc_server.stop(self.settings.shutdown_grace_s)
        for runner in reversed(self._runners):
            await runner.cleanup()
        for channel in self._channels.values():
            await channel.close()
        if self._session is not None:
            await self._session.close()
        self._upstream.close()

    # -- HTTP ---------------------------------------------------------------------------------------
    @web.middleware
    async def _triton_errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        """Errors in Triton's shape, `{"error": "..."}`, with the status aiohttp chose."""
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return _json(e.status, {"error": e.reason if e.text is None or e.text.startswith(f"{e.status}:")
                                    else e.text})

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.router.ready else 503)

    async def routes_document(self, request: web.Request) -> web.Response:
        return _json(200, self.router.site_routes())

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def model_get(self, request: web.Request) -> web.Response:
        suffix = "/ready" if request.path.endswith("/ready") else ""
        return await self._forward(request, "GET", suffix, b"")

    async def infer(self, request: web.Request) -> web.Response:
        limit = self.settings.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            return _json(413, {"error": f"request body of {request.content_length} bytes is over the "
                                        f"gateway's limit of {limit} bytes (--max-request-bytes)"})
        try:
            if request.content.is_eof():      # the whole body has arrived (most do, with the headers): no timer
                body = await request.read()
            else:
                async with asyncio.timeout(self.settings.client_body_timeout_s):
                    body = await request.read()
        except TimeoutError:
            return _json(408, {"error": f"request body not received within {self.settings.client_body_timeout_s:g} s"})
        except web.HTTPRequestEntityTooLarge:
            return _json(413, {"error": f"request body is over the gateway's limit of {limit} bytes "
                                        f"(--max-request-bytes)"})
        # the deadline (upstream time) and the latency recorded run from when the whole request is in hand
        return await self._forward(request, "POST", "/infer", body, time.monotonic())

    async def _forward(self, request: web.Request, method: str, suffix: str, body: bytes,
                       started: float | None = None) -> web.Response:
        model = request.match_info["model"]
        version = request.match_info.get("version")
        path = (f"/versions/{quoted(version)}" if version else "") + suffix
        headers = {h: request.headers[h] for h in FORWARDED_REQUEST_HEADERS if h in request.headers}
        try:
            served = await self.router.call(model, request.headers.get(ENCODING_HEADER),
                                            lambda route, timeout_s: self._send_http(route, method, path, headers,
                                                                                     body, timeout_s),
                                            started=started)
        except UnknownModel as e:
            return _json(404, {"error": str(e)})
        except NoRouteServed as e:
            return _json(503, {"error": str(e)}, {ENCODING_HEADER: self._encoding_now(model)})
        answer: HttpAnswer = served.response
        answer.headers[ENCODING_HEADER] = self._encoding_now(model) or served.route.encoding
        answer.headers[ROUTE_HEADER] = served.route.key
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    def _encoding_now(self, model: str) -> str:
        """The encoding the site should send now: that of the route the next request would take (the
        decided one while it is live, else the first live fallback's), as hetplace.client says."""
        try:
            plan = self.router.plan(model)
        except UnknownModel:        # the routes changed under the request
            return ""
        return plan[0].encoding if plan else ""

    async def _send_http(self, route: Route, method: str, path: str, headers: dict[str, str], body: bytes,
                         timeout_s: float) -> HttpAnswer:
        began = time.monotonic()
        try:
            answer = await self._upstream.request(route.http, method, f"/v2/models/{quoted(route.model)}{path}",
                                                  headers, body)
        except UpstreamConnectError as e:
            raise UpstreamFailure(FailureReason.CONNECT, f"cannot connect: {e}") from None
        except UpstreamConnectTimeout as e:
            raise UpstreamFailure(FailureReason.TIMEOUT, str(e)) from None
        except UpstreamProtocolError as e:
            raise UpstreamFailure(FailureReason.PROTOCOL, str(e)) from None
        ended = time.monotonic()
        if answer.connect_s is not None and not route.http.startswith("https"):   # TLS would add its handshake
            self.links.observe_rtt(route.pool, ended, answer.connect_s)
        payload = answer.body
        if body or len(payload) > 1024:
            self.links.observe_transfer(route.pool, ended, len(body) + len(payload), ended - began)
        if answer.status >= 500:
            raise UpstreamFailure(FailureReason.SERVER_ERROR, f"HTTP {answer.status}")
        kept = {h: answer.headers[lower] for h, lower in FORWARDED_RESPONSE_HEADERS if lower in answer.headers}
        return HttpAnswer(answer.status, kept, payload)

    # -- gRPC ---------------------------------------------------------------------------------------
    async def _start_grpc(self) -> None:
        s = self.settings
        options = [("grpc.max_receive_message_length", s.max_request_bytes), ("grpc.max_send_message_length", -1)]
        unary = grpc.unary_unary_rpc_method_handler
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "ServerLive": unary(self.grpc_server_live),
            "ServerReady": unary(self.grpc_server_ready),
            "ModelReady": unary(self._grpc_forwarder("ModelReady", "ModelReadyRequest")),
            "ModelMetadata": unary(self._grpc_forwarder("ModelMetadata", "ModelMetadataRequest")),
            "ModelInfer": unary(self._grpc_forwarder("ModelInfer", "ModelInferRequest")),
        })   # any other method: UNIMPLEMENTED, from grpc itself
        self._grpc_server = grpc.aio.server(handlers=[handler], options=options)
        address = f"[{s.listen}]:{s.grpc_port}" if ":" in s.listen else f"{s.listen}:{s.grpc_port}"
        if s.tls_cert:
            with open(s.tls_key, "rb") as key, open(s.tls_cert, "rb") as cert:
                self._grpc_server.add_secure_port(address, grpc.ssl_server_credentials([(key.read(), cert.read())]))
        else:
            self._grpc_server.add_insecure_port(address)
        await self._grpc_server.start()

    async def grpc_server_live(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return TRUE_IN_FIELD_1      # ServerLiveResponse{live: true}

    async def grpc_server_ready(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return TRUE_IN_FIELD_1 if self.router.ready else b""     # ServerReadyResponse{ready}

    def _grpc_forwarder(self, method: str, request_type: str):
        """A handler forwarding `method` as bytes: of the request only the model's name is read (field 1
        of ModelInferRequest, ModelReadyRequest and ModelMetadataRequest alike), and it is re-serialised
        only when a route calls the model by another name."""

        async def forward(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            model = model_name_of(raw)
            if model is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{request_type} has no model name")
            encoding = next((v for k, v in context.invocation_metadata() or () if k == ENCODING_HEADER), None)

            async def send(route: Route, timeout_s: float):
                outgoing = raw if route.model == model else renamed(request_type, raw, route.model)
                return await self._send_grpc(route, method, outgoing, timeout_s)

            try:
                served = await self.router.call(model, encoding, send)
            except UnknownModel as e:
                await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
            except NoRouteServed as e:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
            metadata = ((ENCODING_HEADER, self._encoding_now(model) or served.route.encoding),
                        (ROUTE_HEADER, served.route.key))
            if isinstance(served.response, GrpcRefusal):
                context.set_trailing_metadata(metadata)
                await context.abort(served.response.code, served.response.details)
            await context.send_initial_metadata(metadata)
            context.set_trailing_metadata(metadata)
            return served.response

        return forward

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        channel = self._channels.get(endpoint)
        if channel is None:
            scheme, _, target = endpoint.partition("://")
            channel = (grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(self._grpc_ca),
                                               options=UPSTREAM_CHANNEL_OPTIONS)
                       if scheme == "grpcs" else grpc.aio.insecure_channel(target, options=UPSTREAM_CHANNEL_OPTIONS))
            self._channels[endpoint] = channel
        return channel

    async def _send_grpc(self, route: Route, method: str, raw: bytes, timeout_s: float) -> bytes | GrpcRefusal:
        call = self._channel(route.grpc).unary_unary(f"/{SERVICE}/{method}")
        began = time.monotonic()
        try:
            answer = await call(raw, timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            reason = GRPC_FAILOVER.get(e.code())
            if reason is not None:
                raise UpstreamFailure(reason, f"gRPC {e.code().name}: {e.details()}") from None
            return GrpcRefusal(e.code(), e.details() or "")
        ended = time.monotonic()
        if len(raw) + len(answer) > 1024:
            self.links.observe_transfer(route.pool, ended, len(raw) + len(answer), ended - began)
        return answer

    # -- background probes ------------------------------------------------------------------------
    async def _probe_health(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            try:
                down = self.router.down_routes()
                if down:
                    ready = await asyncio.gather(*(self._is_ready(route) for _, route in down))
                    for (workload, route), ok in zip(down, ready):
                        if ok:
                            log.info("route %s of %s is ready again", route.key, workload)
                            self.router.recovered(workload, route)
            except Exception:   # a probe must never stop the probing
                log.exception("route health probe failed")

    async def _is_ready(self, route: Route) -> bool:
        assert self._session is not None
        try:
            async with self._session.get(f"{route.http}/v2/health/ready", allow_redirects=False,
                                         timeout=aiohttp.ClientTimeout(total=self.settings.health_interval_s),
                                         ssl=self._upstream_tls if route.http.startswith("https") else False) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _probe_links(self) -> None:
        while True:
            try:
                await self.probe_links_once()
            except Exception:   # a probe must never stop the gateway
                log.exception("link probe failed")
            await asyncio.sleep(self.settings.probe_interval_s)

    async def probe_links_once(self) -> None:
        """Probe the links that need it (as `LinkTelemetry.plan_probes` says and pays for), then publish."""
        pools = self.router.pool_routes()
        for pool, route in pools.items():
            plan = self.links.plan_probes(pool, time.monotonic())
            if plan.rtt:
                timed = await self._timed("GET", f"{route.http}/v2/health/live", b"")
                if timed is not None:
                    self.links.observe_rtt(pool, time.monotonic(), timed[0])
            if plan.bandwidth_sizes:
                for size in plan.bandwidth_sizes:
                    body = probe_body(size)
                    timed = await self._timed("POST", f"{route.http}/v2/models/{route.model}/infer", body)
                    if timed is not None:
                        self.links.observe_probe(pool, time.monotonic(), timed[1], timed[0])
        self.links.publish(time.monotonic())     # every link seen: one whose pool left the routes goes stale

    async def _timed(self, method: str, url: str, body: bytes) -> tuple[float, int] | None:
        """Seconds a probe took and the body bytes it moved both ways, or None when it failed (a failed
        probe measures nothing)."""
        assert self._session is not None
        began = time.monotonic()
        try:
            async with self._session.request(method, url, data=body or None, allow_redirects=False,
                                             headers={"Content-Type": "application/json"} if body else None,
                                             timeout=aiohttp.ClientTimeout(total=5),
                                             ssl=self._upstream_tls if url.startswith("https") else False) as response:
                answer = await response.read()
                return (time.monotonic() - began, len(body) + len(answer)) if response.status < 500 else None
        except (aiohttp.ClientError, TimeoutError):
            return None


TRUE_IN_FIELD_1 = b"\x08\x01"     # a message whose field 1 is the bool true


def model_name_of(raw: bytes) -> str | None:
    """Field 1 (a string: `model_name` or `name`) of a serialised request, read from the protobuf wire
    format without parsing the rest: a 224 KB tensor is not copied to learn where it goes. None when
    the bytes are not a well-formed message with that field. As protobuf reads a repeated scalar
    field, the last occurrence wins: the name routed on is the one the upstream will serve."""
    i, end = 0, len(raw)
    name = None
    try:
        while i < end:
            key, i = _varint(raw, i)
            field, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, i = _varint(raw, i)
            elif wire_type == 1:
                i += 8
            elif wire_type == 5:
                i += 4
            elif wire_type == 2:
                length, i = _varint(raw, i)
                if i + length > end:
                    return None
                if field == 1:
                    name = raw[i:i + length].decode("utf-8")
                i += length
            else:
                return None
    except (IndexError, UnicodeDecodeError):
        return None
    return name if i == end else None


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = raw[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def renamed(request_type: str, raw: bytes, model: str) -> bytes:
    """The request with another model name (a route calling the model by another name: rare, so the
    generated messages of tritonclient, and what they import, are loaded only then)."""
    from tritonclient.grpc import service_pb2

    message = getattr(service_pb2, request_type).FromString(raw)
    setattr(message, "model_name" if request_type == "ModelInferRequest" else "name", model)
    return message.SerializeToString()


def probe_body(size_bytes: int) -> bytes:
    """A KServe-V2 inference body the server reads in full and refuses (it has no `inputs`), so a
    bandwidth probe moves bytes without running the model."""
    head, tail = b'{"hetplace_probe":"', b'"}'
    return head + b"x" * max(size_bytes - len(head) - len(tail), 0) + tail


async def serve(settings: GatewaySettings, start_source: Callable[[Router, SiteMetrics], Awaitable[Callable[[], Any]]],
                stop: asyncio.Event | None = None) -> None:
    """Run a gateway until SIGTERM/SIGINT (or `stop`): the source is started with the router to feed and
    returns how to stop it."""
    metrics = SiteMetrics(settings.site)
    router = Router(settings.site, metrics, deadline_s=settings.deadline_s)
    links = LinkTelemetry(metrics, idle_s=settings.link_idle_s)
    gateway = Gateway(settings, router, metrics, links)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stop_source = await start_source(router, metrics)
    await gateway.start()
    # What is alive now (modules, the app, the first routes) lives as long as the process: out of every
    # collection from now on, so a full one (tens of ms over the imported libraries) stalls no request.
    gc.freeze()
    try:
        await stop.wait()
        log.info("stopping: finishing requests in flight (up to %g s)", settings.shutdown_grace_s)
    finally:
        result = stop_source()
        if asyncio.iscoroutine(result):
            await result
        await gateway.stop()
