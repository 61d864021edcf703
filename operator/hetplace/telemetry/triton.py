"""Ask a Triton (KServe V2) endpoint through tritonclient whether a model is ready, and what it serves.

The operator calls this before routes switch to a new group (docs/design.md §4, make-before-break), from
`asyncio.to_thread`: every call builds its own client and closes it, so calls share nothing and
may run in any thread. Every request carries a timeout, and `probe_model` never raises on a
network error: an endpoint that cannot be asked is a not-ready verdict that says why.
"""

from __future__ import annotations

import http.client
import importlib
from dataclasses import dataclass
from typing import Literal

from tritonclient.utils import InferenceServerException

Protocol = Literal["http", "grpc"]

HTTP_PORT = 8000        # the ports of the Triton Deployment's container and Service (docs/design.md §4)
GRPC_PORT = 8001
PORTS: dict[Protocol, int] = {"http": HTTP_PORT, "grpc": GRPC_PORT}

DEFAULT_ENDPOINT_TEMPLATE = "{service}.{namespace}.svc:{port}"
ENDPOINT_PLACEHOLDERS = ("service", "namespace", "port")

# The verdict's reasons, in the order a probe meets them.
UNREACHABLE = "Unreachable"                   # no answer: refused, timed out, unresolvable, not KServe V2
SERVER_NOT_READY = "ServerNotReady"           # the server answers but /v2/health/ready is not OK
MODEL_NOT_READY = "ModelNotReady"             # the server is ready; this model (version) is not loaded
METADATA_UNAVAILABLE = "MetadataUnavailable"  # the model says ready but its metadata cannot be read
READY = "Ready"

# gRPC status codes meaning no KServe V2 server was reached, as opposed to one answering with an error.
_GRPC_UNREACHED = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.UNIMPLEMENTED"}


class TritonUnavailable(Exception):
    """The endpoint could not be asked, or it refused the question; the message names both."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]     # -1 for a variable dimension


@dataclass(frozen=True)
class ModelMetadata:
    """What the server says about a loaded model (`GET /v2/models/{name}`)."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


@dataclass(frozen=True)
class ModelReadiness:
    """One probe's verdict; `reason` is a CamelCase word for a condition, `message` a sentence for a human."""

    endpoint: str
    model: str
    ready: bool
    reason: str
    message: str
    versions: tuple[str, ...] = ()     # from the model's metadata, when ready
    platform: str = ""


def triton_endpoint(service: str, namespace: str, *, protocol: Protocol = "http",
                    template: str = DEFAULT_ENDPOINT_TEMPLATE) -> str:
    """`host:port` of a group's Service: the template with {service}, {namespace} and the protocol's {port}.

    The template comes from the operator's settings; tests point it at a fixed `127.0.0.1:PORT`.
    """
    return check_endpoint_template(template).format(service=service, namespace=namespace, port=PORTS[protocol])


def check_endpoint_template(template: str) -> str:
    """The template unchanged, or ValueError naming the placeholder that is not one of ENDPOINT_PLACEHOLDERS."""
    try:
        filled = template.format(service="x", namespace="x", port=HTTP_PORT)
    except KeyError as unknown:
        raise ValueError(f"endpoint template {template!r}: {{{unknown.args[0]}}} is not one of the placeholders "
                         f"{list(ENDPOINT_PLACEHOLDERS)}") from None
    except (IndexError, ValueError) as bad:     # "{0}", a lone brace
        raise ValueError(f"endpoint template {template!r}: {bad} (the placeholders are "
                         f"{list(ENDPOINT_PLACEHOLDERS)}; write a literal brace as {{{{ or }}}})") from None
    if "://" in filled or not filled.strip():
        raise ValueError(f"endpoint template {template!r} must give host:port, without a scheme")
    return template


def probe_model(endpoint: str, model: str, timeout_s: float = 2.0, *, protocol: Protocol = "http",
                model_version: str = "") -> ModelReadiness:
    """Is `model` ready at `endpoint` (`host:port`)? Server readiness, model readiness, then its metadata.

    Each request waits at most `timeout_s` and a probe makes at most three, stopping at the first
    that fails; an empty `model_version` asks about the model's default version.
    """
    what = f"model {model!r}" + (f" version {model_version!r}" if model_version else "")
    where = f"{protocol} endpoint {endpoint}"

    def verdict(reason: str, message: str, metadata: ModelMetadata | None = None) -> ModelReadiness:
        return ModelReadiness(endpoint, model, reason == READY, reason, message,
                              metadata.versions if metadata else (), metadata.platform if metadata else "")

    try:
        with _Session(endpoint, protocol, timeout_s) as session:
            if not session.ask("server readiness", SERVER_NOT_READY, "is_server_ready"):
                return verdict(SERVER_NOT_READY, f"the server at {where} is not ready (asked about {what})")
            if not session.ask(f"readiness of {what}", MODEL_NOT_READY, "is_model_ready", model, model_version):
                return verdict(MODEL_NOT_READY, f"{what} is not ready at {where}")
            metadata = session.metadata(model, model_version, refused_reason=METADATA_UNAVAILABLE)
    except TritonUnavailable as failed:
        return verdict(failed.reason, str(failed))
    return verdict(READY, f"{what} is ready at {where} (platform {metadata.platform or 'unnamed'}, "
                          f"versions {', '.join(metadata.versions) or 'unnamed'})", metadata)


def model_metadata(endpoint: str, model: str, timeout_s: float = 2.0, *, protocol: Protocol = "http",
                   model_version: str = "") -> ModelMetadata:
    """The model's metadata, or TritonUnavailable (reason Unreachable or ModelNotReady) naming endpoint and model."""
    with _Session(endpoint, protocol, timeout_s) as session:
        return session.metadata(model, model_version, refused_reason=MODEL_NOT_READY)


class _Session:
    """One tritonclient client for one probe, every request under `timeout_s`, errors as TritonUnavailable."""

    def __init__(self, endpoint: str, protocol: Protocol, timeout_s: float) -> None:
        if protocol not in PORTS:
            raise ValueError(f"protocol {protocol!r} is not one of {sorted(PORTS)}")
        self.where = f"{protocol} endpoint {endpoint}"
        host, _, port = endpoint.rpartition(":")
        if not host or "/" in endpoint or not port.isdigit() or not 0 < int(port) < 65536:
            raise TritonUnavailable(UNREACHABLE, f"{self.where} is not host:port")
        # the client of the protocol in use only, imported at its first probe (gRPC's is ~13 MB more)
        client = importlib.import_module(f"tritonclient.{protocol}").InferenceServerClient
        try:
            if protocol == "http":      # geventhttpclient: a timeout for connecting and one for each read
                self.client = client(endpoint, connection_timeout=timeout_s, network_timeout=timeout_s)
                self.deadline: dict = {}
            else:                       # gRPC: a deadline on every call
                self.client = client(endpoint)
                self.deadline = {"client_timeout": timeout_s}
        except (InferenceServerException, ValueError) as bad:
            raise TritonUnavailable(UNREACHABLE, f"{self.where} is not host:port: {bad}") from None
        self.protocol = protocol

    def __enter__(self) -> "_Session":
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()

    def ask(self, what: str, refused_reason: str, method: str, *args, **kwargs):
        """Call the client; not reached -> Unreachable, an error answer -> `refused_reason`."""
        try:
            return getattr(self.client, method)(*args, **kwargs, **self.deadline)
        except (OSError, http.client.HTTPException) as failed:     # HTTP: refused, timed out, unresolved, not HTTP
            raise TritonUnavailable(UNREACHABLE, f"{self.where} did not answer ({what}): "
                                                 f"{type(failed).__name__}: {failed}") from None
        except InferenceServerException as failed:
            # gRPC reports not reaching the server as a status; a Triton server answers an
            # unknown model's readiness with an error rather than with "not ready".
            reached = failed.status() not in _GRPC_UNREACHED
            raise TritonUnavailable(refused_reason if reached else UNREACHABLE,
                                    f"{self.where} {'refused' if reached else 'did not answer'} {what}: "
                                    f"{failed.status()} {failed.message()}") from None

    def metadata(self, model: str, version: str, *, refused_reason: str) -> ModelMetadata:
        extra = {"as_json": True} if self.protocol == "grpc" else {}
        body = self.ask(f"metadata of model {model!r}", refused_reason, "get_model_metadata", model, version, **extra)
        return _metadata_from(body)


def _metadata_from(body: dict) -> ModelMetadata:
    # gRPC's JSON form writes int64 shapes as strings; HTTP writes numbers.
    def tensors(items) -> tuple[TensorMetadata, ...]:
        return tuple(TensorMetadata(t.get("name", ""), t.get("datatype", ""),
                                    tuple(int(d) for d in t.get("shape", ()))) for t in items or ())

    return ModelMetadata(body.get("name", ""), tuple(body.get("versions", ()) or ()), body.get("platform", ""),
                         tensors(body.get("inputs")), tensors(body.get("outputs")))
