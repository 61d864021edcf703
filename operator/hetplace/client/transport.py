"""How `hetplace.client` sends one request to one route: tritonclient's sync clients, one per
upstream endpoint, with each failure sorted into what another route may serve instead
(`UpstreamFailure`) and what is the answer (`Refusal`), as the gateway sorts them (docs/routes.md).

Every real request also gives the link estimator a transfer sample (docs/telemetry.md). tritonclient
does not say how many bytes crossed the wire, so a sample counts the tensors' bytes both ways
(shape × element size): exact for binary tensors (gRPC, and HTTP's default binary_data=True), an
undercount for JSON tensors, and no sample at all for BYTES tensors, whose size the shape does not tell.
"""

from __future__ import annotations

import http.client
import math
import threading
import time
import weakref
from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterable, Mapping

import grpc
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from hetplace.site.core import UpstreamFailure
from hetplace.site.gateway import GRPC_FAILOVER, UPSTREAM_CHANNEL_OPTIONS
from hetplace.site.routes import Route
from hetplace.site.telemetry import FailureReason, LinkTelemetry


class Protocol(str, Enum):
    """Which of a route's endpoints requests go to, and which tritonclient module builds them."""

    HTTP = "http"
    GRPC = "grpc"


@dataclass(frozen=True)
class Refusal:
    """An error that is the answer (HTTP 4xx, gRPC INVALID_ARGUMENT, NOT_FOUND, ..., or one tritonclient
    raised without a server status): no other route is tried, and it is raised as tritonclient raised it."""

    error: InferenceServerException


def tensor_bytes(shape: Iterable[int], datatype: str) -> int | None:
    """Bytes of a tensor of this shape and Triton datatype; None for BYTES (variable-length) or unknown."""
    if datatype == "BYTES":
        return None
    try:
        itemsize = triton_to_np_dtype(datatype)().itemsize
    except TypeError:
        return None
    return int(math.prod(int(d) for d in shape)) * itemsize


def request_bytes(inputs: Iterable[Any]) -> int | None:
    sizes = [tensor_bytes(i.shape(), i.datatype()) for i in inputs]
    return None if any(s is None for s in sizes) else sum(sizes)   # type: ignore[misc]


class HttpTransport:
    """tritonclient.http clients by endpoint. They are not thread-safe (tritonclient says so), so each
    thread has its own; a client whose connection failed is dropped and made again on next use.
    tritonclient.http has no per-request timeout: a client waits at most `network_timeout_s` for any
    one read, so the router's deadline is honoured to within that."""

    def __init__(self, links: LinkTelemetry, *, ca_file: str | None = None, connect_timeout_s: float = 2.0,
                 network_timeout_s: float = 10.0) -> None:
        import tritonclient.http as triton_http

        self.module = triton_http
        self.links = links
        self.ca_file = ca_file
        self.connect_timeout_s = connect_timeout_s
        self.network_timeout_s = network_timeout_s
        self._local = threading.local()
        # weak: a client made by a thread that has ended goes with that thread's locals
        self._made: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    def _clients(self) -> dict[str, Any]:
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        return clients

    def client(self, endpoint: str) -> Any:
        clients = self._clients()
        client = clients.get(endpoint)
        if client is None:
            import gevent.ssl

            scheme, _, address = endpoint.partition("://")
            tls = scheme == "https"
            client = self.module.InferenceServerClient(
                address, connection_timeout=self.connect_timeout_s, network_timeout=self.network_timeout_s,
                ssl=tls, ssl_options={"ca_certs": self.ca_file} if tls and self.ca_file else None,
                ssl_context_factory=gevent.ssl.create_default_context if tls else None)
            clients[endpoint] = client
            with self._lock:
                self._made.add(client)
        return client

    def _drop(self, endpoint: str) -> None:
        client = self._clients().pop(endpoint, None)
        if client is not None:
            with self._lock:
                self._made.discard(client)
            try:
                client.close()
            except Exception:   # a broken client closes as best it can
                pass

    def infer(self, route: Route, timeout_s: float, inputs: list[Any], outputs: list[Any] | None,
              options: Mapping[str, Any]) -> Any:
        began = time.monotonic()
        try:
            result = self.client(route.http).infer(route.model, inputs, outputs=outputs, **options)
        except InferenceServerException as e:
            status = e.status() or ""
            if status.isdigit() and int(status) >= 500:
                raise UpstreamFailure(FailureReason.SERVER_ERROR, f"HTTP {status}") from None
            return Refusal(e)
        except TimeoutError:
            self._drop(route.http)
            raise UpstreamFailure(FailureReason.TIMEOUT, f"no answer in {self.network_timeout_s:g} s") from None
        except (ConnectionRefusedError, ConnectionAbortedError) as e:
            self._drop(route.http)
            raise UpstreamFailure(FailureReason.CONNECT, f"cannot connect: {e.strerror or e}") from None
        except (OSError, http.client.HTTPException) as e:   # reset, closed mid-answer, DNS, TLS
            self._drop(route.http)
            raise UpstreamFailure(FailureReason.PROTOCOL if isinstance(e, (ConnectionResetError, BrokenPipeError,
                                                                          http.client.HTTPException))
                                  else FailureReason.CONNECT, f"{type(e).__name__}: {e}") from None
        ended = time.monotonic()
        sent = request_bytes(inputs)
        received = response_bytes(result.get_response().get("outputs", ()))
        if sent is not None and received is not None:
            self.links.observe_transfer(route.pool, ended, sent + received, ended - began)
        return result

    def close(self) -> None:
        with self._lock:
            made, self._made = list(self._made), weakref.WeakSet()
        for client in made:
            try:
                client.close()
            except Exception:
                pass


def response_bytes(outputs: Iterable[Any]) -> int | None:
    """Bytes of the output tensors an answer describes (dicts over HTTP, protobuf messages over gRPC)."""
    total = 0
    for output in outputs:
        shape, datatype = ((output.get("shape", ()), output.get("datatype", "")) if isinstance(output, Mapping)
                           else (output.shape, output.datatype))
        size = tensor_bytes(shape, datatype)
        if size is None:
            return None
        total += size
    return total


class GrpcTransport:
    """tritonclient.grpc clients by endpoint, shared by every thread (their unary calls are
    thread-safe); each request carries the time left as its gRPC deadline."""

    def __init__(self, links: LinkTelemetry, *, ca_file: str | None = None) -> None:
        import tritonclient.grpc as triton_grpc

        self.module = triton_grpc
        self.links = links
        self.ca_file = ca_file
        # the gateway's: a route brought back by a health probe must be usable at once
        self.channel_args = UPSTREAM_CHANNEL_OPTIONS
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, endpoint: str) -> Any:
        with self._lock:
            client = self._clients.get(endpoint)
            if client is None:
                scheme, _, address = endpoint.partition("://")
                client = self.module.InferenceServerClient(address, ssl=scheme == "grpcs",
                                                           root_certificates=self.ca_file,
                                                           channel_args=self.channel_args)
                self._clients[endpoint] = client
            return client

    def infer(self, route: Route, timeout_s: float, inputs: list[Any], outputs: list[Any] | None,
              options: Mapping[str, Any]) -> Any:
        began = time.monotonic()
        try:
            result = self.client(route.grpc).infer(route.model, inputs, outputs=outputs, client_timeout=timeout_s,
                                                   **options)
        except InferenceServerException as e:
            code = grpc_status(e.status())
            reason = GRPC_FAILOVER.get(code) if code is not None else None
            if reason is not None:
                raise UpstreamFailure(reason, f"gRPC {code.name}: {e.message()}") from None
            return Refusal(e)
        ended = time.monotonic()
        sent = request_bytes(inputs)
        if sent is not None:
            self.links.observe_transfer(route.pool, ended, sent + result.get_response().ByteSize(), ended - began)
        return result

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            try:
                client.close()
            except Exception:
                pass


def grpc_status(status: str | None) -> grpc.StatusCode | None:
    """tritonclient's status text ("StatusCode.UNAVAILABLE") as a grpc.StatusCode; None when it is none."""
    name = (status or "").rpartition(".")[2]
    return grpc.StatusCode.__members__.get(name)
