"""The operator's readiness/metadata probe against a real KServe-V2 server (MLServer, a subprocess),
over HTTP and gRPC: ready, not loaded, unloaded while running, nothing listening, never answering."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time

import numpy as np
import pytest
import tritonclient.http as triton_http
from mlserver_fixture import HELD_BACK, mlserver  # noqa: F401  (the fixture)
from servers import free_port

from hetplace.telemetry.triton import (
    DEFAULT_ENDPOINT_TEMPLATE,
    ModelMetadata,
    TensorMetadata,
    TritonUnavailable,
    check_endpoint_template,
    model_metadata,
    probe_model,
    triton_endpoint,
)

integration = pytest.mark.integration
PROTOCOLS = pytest.mark.parametrize("protocol", ["http", "grpc"], ids=["over HTTP", "over gRPC"])


def endpoint_of(server, protocol: str) -> str:
    return server.http if protocol == "http" else server.grpc


@integration
@PROTOCOLS
def test_a_loaded_model_is_ready_with_its_versions_and_platform(mlserver, protocol):
    verdict = probe_model(endpoint_of(mlserver, protocol), "defect-detector", 2.0, protocol=protocol)
    assert (verdict.ready, verdict.reason) == (True, "Ready"), verdict.message
    assert verdict.versions == ("defect-detector/1",) and verdict.platform == "hetplace-echo"
    assert "'defect-detector'" in verdict.message and endpoint_of(mlserver, protocol) in verdict.message


@integration
@PROTOCOLS
def test_model_metadata_names_the_tensors(mlserver, protocol):
    assert model_metadata(endpoint_of(mlserver, protocol), "defect-detector", 2.0, protocol=protocol) == ModelMetadata(
        "defect-detector", ("defect-detector/1",), "hetplace-echo",
        (TensorMetadata("scores", "FP32", (-1,)),), (TensorMetadata("total", "FP32", (1,)),))


@integration
@PROTOCOLS
@pytest.mark.parametrize("model, version", [("paint-inspector", ""), ("defect-detector", "7")],
                         ids=["a model the server never loaded is not ready",
                              "a version the server does not have is not ready"])
def test_what_is_not_loaded_is_model_not_ready_and_named(mlserver, protocol, model, version):
    verdict = probe_model(endpoint_of(mlserver, protocol), model, 2.0, protocol=protocol, model_version=version)
    assert (verdict.ready, verdict.reason) == (False, "ModelNotReady"), verdict.message
    assert repr(model) in verdict.message and endpoint_of(mlserver, protocol) in verdict.message
    assert (verdict.versions, verdict.platform) == ((), "")


@integration
@PROTOCOLS
def test_metadata_of_a_model_not_loaded_says_so(mlserver, protocol):
    with pytest.raises(TritonUnavailable, match="paint-inspector") as refused:
        model_metadata(endpoint_of(mlserver, protocol), "paint-inspector", 2.0, protocol=protocol)
    assert refused.value.reason == "ModelNotReady"


def http_client(server) -> triton_http.InferenceServerClient:
    """tritonclient over HTTP, for what the probe does not do: load, unload, infer."""
    return triton_http.InferenceServerClient(server.http, connection_timeout=5, network_timeout=5)


def probe_over_both(server, model: str = "defect-detector") -> list[tuple[bool, str, str]]:
    """(ready, reason, message) of one probe over HTTP and one over gRPC."""
    verdicts = [probe_model(endpoint_of(server, p), model, 2.0, protocol=p) for p in ("http", "grpc")]
    return [(v.ready, v.reason, v.message) for v in verdicts]


@integration
def test_a_model_unloaded_at_runtime_is_not_ready_until_it_is_loaded_again(mlserver):
    with http_client(mlserver) as repository:
        repository.unload_model("defect-detector")
        try:
            verdicts = probe_over_both(mlserver)
        finally:
            repository.load_model("defect-detector")   # the other tests on this server rely on it
    assert [v[:2] for v in verdicts] == [(False, "ModelNotReady")] * 2, verdicts
    assert probe_model(mlserver.http, "defect-detector", 2.0).ready


@integration
def test_a_server_holding_a_model_that_failed_to_load_is_not_ready(mlserver):
    shutil.copytree(HELD_BACK / "unready-detector", mlserver.repository / "unready-detector")
    with http_client(mlserver) as repository:
        repository.load_model("unready-detector")
        try:
            verdicts = probe_over_both(mlserver)
        finally:
            repository.unload_model("unready-detector")
            shutil.rmtree(mlserver.repository / "unready-detector")
    assert [v[:2] for v in verdicts] == [(False, "ServerNotReady")] * 2, verdicts
    assert all("'defect-detector'" in message and "is not ready" in message for _, _, message in verdicts)
    assert probe_model(mlserver.http, "defect-detector", 2.0).ready


@integration
@PROTOCOLS
def test_nothing_listening_is_unreachable_at_once(protocol):
    endpoint = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    verdict = probe_model(endpoint, "defect-detector", 2.0, protocol=protocol)
    assert (verdict.ready, verdict.reason) == (False, "Unreachable"), verdict.message
    assert time.monotonic() - started < 2.0
    assert endpoint in verdict.message and "server readiness" in verdict.message


@integration
@PROTOCOLS
def test_a_server_that_never_answers_is_unreachable_within_the_timeout(protocol):
    with socket.socket() as silent:      # accepts connections (the backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        verdict = probe_model(endpoint, "defect-detector", 0.5, protocol=protocol)
        waited_s = time.monotonic() - started
    assert (verdict.ready, verdict.reason) == (False, "Unreachable"), verdict.message
    assert 0.4 < waited_s < 2.0, f"waited {waited_s:.2f} s with a 0.5 s timeout"


@integration
def test_a_bad_endpoint_is_a_verdict_not_an_exception():
    verdict = probe_model("http://defect-detector.factory.svc", "defect-detector", 1.0)
    assert (verdict.ready, verdict.reason) == (False, "Unreachable")
    assert "is not host:port" in verdict.message


@integration
def test_probes_run_side_by_side_in_threads_as_the_operator_calls_them(mlserver):
    async def probe_all():
        return await asyncio.gather(*[asyncio.to_thread(probe_model, endpoint_of(mlserver, protocol),
                                                        "defect-detector", 2.0, protocol=protocol)
                                      for protocol in ("http", "grpc") * 6])

    verdicts = asyncio.run(probe_all())
    assert [v.reason for v in verdicts] == ["Ready"] * 12


@integration
def test_the_server_really_serves_the_model_an_http_inference_round_trip(mlserver):
    scores = np.array([0.25, 1.5, 4.0], dtype=np.float32)
    request = triton_http.InferInput("scores", list(scores.shape), "FP32")
    request.set_data_from_numpy(scores, binary_data=False)
    with http_client(mlserver) as client:
        result = client.infer("defect-detector", [request],
                              outputs=[triton_http.InferRequestedOutput("total", binary_data=False)])
    assert result.as_numpy("total").tolist() == [5.75]


@integration
@PROTOCOLS
def test_a_template_pointed_at_the_test_server_reaches_it(mlserver, protocol):
    port = mlserver.http_port if protocol == "http" else mlserver.grpc_port
    endpoint = triton_endpoint("factory-defect-detector-edge-cpu", "factory", protocol=protocol,
                               template=f"127.0.0.1:{port}")
    assert probe_model(endpoint, "defect-detector", 2.0, protocol=protocol).ready


@pytest.mark.unit
@pytest.mark.parametrize("protocol, template, expected", [
    ("http", DEFAULT_ENDPOINT_TEMPLATE, "grp.factory.svc:8000"),
    ("grpc", DEFAULT_ENDPOINT_TEMPLATE, "grp.factory.svc:8001"),
    ("http", "{service}.{namespace}.svc.cluster.local:8000", "grp.factory.svc.cluster.local:8000"),
    ("grpc", "127.0.0.1:{port}", "127.0.0.1:8001"),
], ids=["a group's Service in its namespace, HTTP port by default",
        "the gRPC port when gRPC is asked for",
        "a fixed port and a fully qualified name",
        "a local address keeps the protocol's port"])
def test_the_endpoint_template_fills_service_namespace_and_port(protocol, template, expected):
    assert triton_endpoint("grp", "factory", protocol=protocol, template=template) == expected


@pytest.mark.unit
@pytest.mark.parametrize("template, complaint", [
    ("{svc}.{namespace}.svc:8000", r"\{svc\} is not one of the placeholders"),
    ("{service}.{namespace}.svc:{0}", "the placeholders are"),
    ("{service.{namespace}.svc:8000", "the placeholders are"),
    ("http://{service}.{namespace}.svc:8000", "without a scheme"),
    ("", "must give host:port"),
], ids=["an unknown placeholder is named", "a positional placeholder is refused", "a lone brace is refused",
        "a scheme is refused", "an empty template is refused"])
def test_a_bad_endpoint_template_is_refused_with_the_reason(template, complaint):
    with pytest.raises(ValueError, match=complaint):
        check_endpoint_template(template)
