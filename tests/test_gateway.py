"""`hetplace gateway` run as a user runs it, in front of two MLServer processes standing in for two
pools' Triton, called by the real tritonclient (HTTP and gRPC) with the workload's model name: it
serves and says which route answered and which encoding to send, fails over when the primary pool
dies under load, follows an edited routes file, keeps the last good routes when the file turns
bad, refuses what it must with Triton's error shape, and its /metrics pass promtool
(docs/routes.md, docs/telemetry.md)."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from click.testing import CliRunner
from mlserver_pools import Pool, start_pools
from servers import GatewayProcess, PacedLoad, free_ports, wait_for
from servers import start_gateway as start_gateway_process
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from hypothesis import given
from hypothesis import strategies as st

from hetplace.cli import main
from hetplace.site.gateway import model_name_of, renamed
from hetplace.site.routes import ENCODING_HEADER, ROUTE_HEADER

pytestmark = pytest.mark.integration

SITE = "factory-eu-1"
MODEL = "defect-detector"
GHOST = "ghost-detector"          # a workload whose every route points at a port nobody listens on
MAX_REQUEST_BYTES = 1024 * 1024


def route(pool: Pool, encoding: str, decided: bool = False, model: str = MODEL) -> dict:
    return {"pool": pool.name, "variant": "onnx", "encoding": encoding, "model": model, "http": pool.http,
            "grpc": pool.grpc, "predictedLatencyMs": 20.0, "withinSlo": True, "decided": decided}


def routes_configmap(workload: str, model: str, routes: list[dict]) -> dict:
    namespace, name = workload.split("/")
    document = {"version": 2, "workload": workload, "generation": 1, "decidedAt": "2026-12-07T22:00:00Z",
                "model": model, "sloLatencyMs": 150, "sites": {SITE: routes, "elsewhere": routes[:1]}}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"{name}-routes", "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "hetplace"}},
            "data": {"routes.json": json.dumps(document)}}


@dataclass
class Dead:
    """A pool nobody serves: its ports were free when chosen and nothing listens on them."""

    name: str
    http: str
    grpc: str


def write_routes(path: Path, first: Pool, second: Pool, dead: tuple[Dead, Dead]) -> None:
    """The detector decided on `first` (raw) with `second` (compressed) as fallback; the ghost on dead pools."""
    ghost = [{**route(dead[0], "raw", decided=True, model=GHOST)}, {**route(dead[1], "raw", model=GHOST)}]
    items = [routes_configmap("factory/defect-detector", MODEL, [route(first, "raw", True), route(second, "compressed")]),
             routes_configmap("factory/ghost", GHOST, ghost)]
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))


@dataclass
class Gateway(GatewayProcess):
    """The gateway process of these tests, with the routes file it reads."""

    routes: Path | None = None

    def sample(self, name: str, **labels: str) -> float:
        """0 where the series is absent, as a counter not incremented yet reads."""
        return super().sample(name, **labels) or 0.0


def start_gateway(routes: Path, home: Path, *extra: str, scheme: str = "http", ca: Path | None = None) -> Gateway:
    started = start_gateway_process(SITE, home, "--routes", str(routes), "--max-request-bytes", str(MAX_REQUEST_BYTES),
                                    *extra, scheme=scheme, ca=ca)
    return Gateway(**{f.name: getattr(started, f.name) for f in fields(started)}, routes=routes)


def dead_pools() -> tuple[Dead, Dead]:
    ports = free_ports(4)
    return (Dead("gone-a", f"http://127.0.0.1:{ports[0]}", f"grpc://127.0.0.1:{ports[1]}"),
            Dead("gone-b", f"http://127.0.0.1:{ports[2]}", f"grpc://127.0.0.1:{ports[3]}"))


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    started = start_pools(["pool-a", "pool-b"], tmp_path_factory.mktemp("pools"))
    yield started
    for pool in started:
        pool.stop()


@pytest.fixture(scope="module")
def gateway(pools, tmp_path_factory):
    home = tmp_path_factory.mktemp("gateway")
    routes = home / "routes.yaml"
    write_routes(routes, pools[0], pools[1], dead_pools())
    gw = start_gateway(routes, home)
    yield gw
    assert gw.stop() == 0, f"the gateway did not stop cleanly on SIGTERM:\n{gw.log.read_text()[-3000:]}"


# -- a client as tritonclient sends it, with the response's headers ----------------------------------

def scores(n: int = 4) -> np.ndarray:
    return np.arange(n, dtype=np.float32)


def http_input(values: np.ndarray) -> triton_http.InferInput:
    tensor = triton_http.InferInput("scores", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values, binary_data=False)     # MLServer reads JSON tensors only
    return tensor


def grpc_input(values: np.ndarray) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput("scores", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    return tensor


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def total(self) -> float:
        result = triton_http.InferResult.from_response_body(
            self.body, header_length=self.headers.get("Inference-Header-Content-Length"))
        return float(result.as_numpy("total")[0])

    def error(self) -> str:
        return json.loads(self.body)["error"]


def post_infer(gateway: Gateway, model: str = MODEL, values: np.ndarray | None = None,
               encoding: str | None = None, body: bytes | None = None) -> Answer:
    """An inference request with the body tritonclient builds, sent so the response headers can be read."""
    if body is None:
        body, header_length = triton_http.InferenceServerClient.generate_request_body(
            [http_input(scores() if values is None else values)])
    headers = {"Content-Type": "application/json"}
    if encoding:
        headers[ENCODING_HEADER] = encoding
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=30)
    try:
        connection.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, {k: v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


# -- serving ------------------------------------------------------------------------------------------

def test_tritonclient_over_http_is_served_by_the_decided_route_with_the_encoding_to_send(gateway) -> None:
    client = triton_http.InferenceServerClient(gateway.http)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert client.get_model_metadata(MODEL)["name"] == MODEL
    result = client.infer(MODEL, [http_input(scores(5))])
    assert result.as_numpy("total")[0] == 10.0
    answer = post_infer(gateway)
    assert answer.status == 200 and answer.total() == 6.0
    assert (answer.headers[ROUTE_HEADER], answer.headers[ENCODING_HEADER]) == ("pool-a/onnx", "raw")


def test_payloads_of_a_quarter_megabyte_are_forwarded_whole(gateway) -> None:
    values = np.ones(20_000, dtype=np.float32)     # about 224 KB of JSON
    answer = post_infer(gateway, values=values)
    assert answer.status == 200 and answer.total() == 20_000.0


def test_tritonclient_over_grpc_is_served_and_told_the_route_and_encoding(gateway) -> None:
    client = triton_grpc.InferenceServerClient(gateway.grpc)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert client.get_model_metadata(MODEL).name == MODEL
    assert client.infer(MODEL, [grpc_input(scores(5))]).as_numpy("total")[0] == 10.0
    with grpc.insecure_channel(gateway.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name=MODEL, inputs=[service_pb2.ModelInferRequest.InferInputTensor(
            name="scores", datatype="FP32", shape=[3], contents=service_pb2.InferTensorContents(fp32_contents=[1, 2, 3]))])
        response, call = stub.ModelInfer.with_call(request, timeout=30)
        assert response.outputs[0].name == "total"
        metadata = dict(call.initial_metadata())
        assert (metadata[ROUTE_HEADER], metadata[ENCODING_HEADER]) == ("pool-a/onnx", "raw")
        with pytest.raises(grpc.RpcError) as unimplemented:
            stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=10)
        assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_request_in_the_draining_encoding_reaches_the_route_that_serves_it(gateway) -> None:
    answer = post_infer(gateway, encoding="compressed")
    assert answer.status == 200
    assert answer.headers[ROUTE_HEADER] == "pool-b/onnx"
    assert answer.headers[ENCODING_HEADER] == "raw", "the encoding to send now is still the decided one"


def test_the_read_only_routes_document_shows_this_sites_routes(gateway) -> None:
    with urllib.request.urlopen(f"http://{gateway.http}/v2/hetplace/routes", timeout=5) as response:
        document = json.load(response)
    by_workload = {w["workload"]: w for w in document["workloads"]}
    assert document["site"] == SITE
    assert [r["pool"] for r in by_workload["factory/defect-detector"]["routes"]] == ["pool-a", "pool-b"]
    assert by_workload["factory/defect-detector"]["encoding"] == "raw"


# -- refusals ---------------------------------------------------------------------------------------

def test_an_unknown_model_is_a_404_in_tritons_shape(gateway) -> None:
    answer = post_infer(gateway, model="resnet")
    assert answer.status == 404 and "resnet" in answer.error()
    with pytest.raises(InferenceServerException) as refused:
        triton_grpc.InferenceServerClient(gateway.grpc).infer("resnet", [grpc_input(scores())])
    assert refused.value.status() == "StatusCode.NOT_FOUND"


def test_when_every_route_is_down_the_503_names_the_routes_tried(gateway) -> None:
    answer = post_infer(gateway, model=GHOST)
    assert answer.status == 503
    assert "gone-a/onnx" in answer.error() and "gone-b/onnx" in answer.error()
    with pytest.raises(InferenceServerException) as refused:
        triton_grpc.InferenceServerClient(gateway.grpc).infer(GHOST, [grpc_input(scores())])
    assert refused.value.status() == "StatusCode.UNAVAILABLE" and "gone-a/onnx" in refused.value.message()


def test_a_body_over_the_limit_is_a_413(gateway) -> None:
    answer = post_infer(gateway, body=b"x" * (MAX_REQUEST_BYTES + 1))
    assert answer.status == 413 and "--max-request-bytes" in answer.error()


# -- following the routes file ------------------------------------------------------------------------

def test_editing_the_routes_file_switches_traffic(gateway, pools) -> None:
    dead = dead_pools()
    write_routes(gateway.routes, pools[1], pools[0], dead)       # pool-b decided now
    try:
        wait_for(lambda: post_infer(gateway).headers.get(ROUTE_HEADER) == "pool-b/onnx", 30,
                 "traffic to switch to pool-b")
    finally:
        write_routes(gateway.routes, pools[0], pools[1], dead)
    wait_for(lambda: post_infer(gateway).headers.get(ROUTE_HEADER) == "pool-a/onnx", 30, "traffic to switch back")


def test_a_malformed_routes_file_keeps_the_last_good_routes_and_counts_the_error(gateway, pools) -> None:
    before = gateway.sample("hetplace_gateway_routes_reload_errors_total")
    good = gateway.routes.read_text()
    try:
        gateway.routes.write_text(good.replace('"version\\": 2', '"version\\": 9').replace('"version": 2', '"version": 9'))
        wait_for(lambda: gateway.sample("hetplace_gateway_routes_reload_errors_total") > before, 30,
                 "the reload error to be counted")
        answer = post_infer(gateway)
        assert answer.status == 200 and answer.headers[ROUTE_HEADER] == "pool-a/onnx"
        gateway.routes.write_text("items: [this is not")
        wait_for(lambda: gateway.sample("hetplace_gateway_routes_reload_errors_total") > before + 1, 30,
                 "the unreadable file to be counted")
        assert post_infer(gateway).status == 200
    finally:
        gateway.routes.write_text(good)
    assert "routes not reloaded" in gateway.log.read_text()


# -- what the operator reads --------------------------------------------------------------------------

def test_metrics_pass_promtool_and_carry_the_series_the_operator_reads(gateway) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus")
    post_infer(gateway)
    wait_for(lambda: gateway.sample("hetplace_link_rtt_seconds", site=SITE, pool="pool-a") > 0, 30,
             "an RTT figure for the link to pool-a")
    text = gateway.metrics()
    checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    site = {"namespace": "factory", "workload": "defect-detector", "site": SITE}
    assert gateway.sample("hetplace_site_requests_total", **site) >= 1
    assert gateway.sample("hetplace_request_duration_seconds_count", **site) >= 1
    assert gateway.sample("hetplace_gateway_route_in_use", **site, pool="pool-a", variant="onnx") == 1
    assert gateway.sample("hetplace_gateway_routes_last_load_timestamp_seconds") > 0


# -- TLS ------------------------------------------------------------------------------------------------

def test_tls_on_the_listeners_and_to_upstreams_at_https_and_grpcs_endpoints(gateway, tmp_path) -> None:
    """A gateway serving TLS is the upstream of a second one that reaches it at https:// and grpcs://
    and trusts it through --upstream-ca: a request through both is served by pool-a."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    secure = start_gateway(gateway.routes, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key),
                           scheme="https", ca=cert)
    outer = None
    try:
        hop = Dead("tls-hop", f"https://127.0.0.1:{secure.http_port}", f"grpcs://127.0.0.1:{secure.grpc_port}")
        routes = tmp_path / "outer-routes.yaml"
        routes.write_text(yaml.safe_dump(routes_configmap("factory/defect-detector", MODEL, [route(hop, "raw", True)])))
        outer = start_gateway(routes, tmp_path, "--upstream-ca", str(cert))
        answer = post_infer(outer)
        assert answer.status == 200 and answer.total() == 6.0 and answer.headers[ROUTE_HEADER] == "tls-hop/onnx"
        client = triton_grpc.InferenceServerClient(outer.grpc)
        assert client.infer(MODEL, [grpc_input(scores(5))]).as_numpy("total")[0] == 10.0
        with grpc.secure_channel(secure.grpc, grpc.ssl_channel_credentials(cert.read_bytes())) as channel:
            live = service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerLive(service_pb2.ServerLiveRequest(),
                                                                                 timeout=10)
            assert live.live
    finally:
        if outer is not None:
            outer.stop()
        secure.stop()


# -- a pool dies under load -------------------------------------------------------------------------

def steady_load(gateway: Gateway, per_second: float) -> PacedLoad:
    """Requests through real tritonclient clients, HTTP and gRPC in turn (each used by the load's thread only)."""
    http_client = triton_http.InferenceServerClient(gateway.http, network_timeout=30)
    grpc_client = triton_grpc.InferenceServerClient(gateway.grpc)

    def send(i: int) -> None:
        if i % 2:
            total = grpc_client.infer(MODEL, [grpc_input(scores())], client_timeout=30).as_numpy("total")[0]
        else:
            total = http_client.infer(MODEL, [http_input(scores())]).as_numpy("total")[0]
        assert total == 6.0, f"wrong answer {total}"

    def close() -> None:
        http_client.close()
        grpc_client.close()
    return PacedLoad(per_second, send, close)


def test_killing_the_primary_pool_under_load_costs_at_most_one_client_visible_error(tmp_path) -> None:
    primary, fallback = start_pools(["primary", "fallback"], tmp_path / "pools")
    gateway = None
    try:
        routes = tmp_path / "routes.yaml"
        write_routes(routes, primary, fallback, dead_pools())
        gateway = start_gateway(routes, tmp_path)
        with steady_load(gateway, per_second=60) as load:
            wait_for(lambda: load.sent >= 60, 60, "a second of load served by the primary")
            assert post_infer(gateway).headers[ROUTE_HEADER] == "primary/onnx"
            primary.kill()
            killed_at = load.sent
            wait_for(lambda: load.sent >= killed_at + 120, 60, "two seconds of load after the kill")
        assert len(load.errors) <= 1, \
            f"{len(load.errors)} of {load.sent} requests failed: {load.errors[:5]}"
        after = post_infer(gateway)
        assert after.headers[ROUTE_HEADER] == "fallback/onnx"
        assert after.headers[ENCODING_HEADER] == "compressed", "the site is told to send what the fallback takes"
        site = {"namespace": "factory", "workload": "defect-detector", "site": SITE}
        assert gateway.sample("hetplace_gateway_failovers_total", **site) >= 1
        assert gateway.sample("hetplace_gateway_upstream_errors_total", pool="primary") >= 1
        assert gateway.sample("hetplace_gateway_route_in_use", **site, pool="fallback", variant="onnx") == 1
        assert gateway.sample("hetplace_site_requests_total", **site) >= load.sent
    finally:
        if gateway is not None:
            assert gateway.stop() == 0
        primary.stop()
        fallback.stop()


# -- the gRPC request read as bytes ------------------------------------------------------------------

@given(name=st.text(min_size=1, max_size=40), request_id=st.text(max_size=20),
       payload=st.binary(max_size=2000), version=st.text(max_size=5))
def test_the_model_name_read_from_the_wire_is_the_one_tritonclients_messages_carry(name, request_id, payload,
                                                                                  version) -> None:
    request = service_pb2.ModelInferRequest(id=request_id, model_version=version, raw_input_contents=[payload],
                                            inputs=[service_pb2.ModelInferRequest.InferInputTensor(name="x", shape=[3])],
                                            model_name=name)
    raw = request.SerializeToString()
    assert model_name_of(raw) == name
    assert model_name_of(service_pb2.ModelReadyRequest(name=name, version=version).SerializeToString()) == name
    again = service_pb2.ModelInferRequest.FromString(renamed("ModelInferRequest", raw, "other"))
    assert (again.model_name, again.raw_input_contents, again.id) == ("other", [payload], request_id)


@pytest.mark.parametrize("raw", [b"", b"\x12\x03abc", b"\x0a\x05ab", b"\x0a\x02\xff\xfe", b"\xff" * 12, b"\x0f"],
                         ids=["empty", "no field 1", "truncated", "not UTF-8", "a runaway varint", "a bad wire type"])
def test_a_request_without_a_readable_model_name_reads_as_none(raw: bytes) -> None:
    assert model_name_of(raw) is None


# -- the command line ------------------------------------------------------------------------------

@pytest.mark.parametrize("arguments, flag, value", [
    (["--workload", "detector"], "--workload", "detector"),
    (["--routes", "/nonexistent/routes.yaml"], "--routes", "/nonexistent/routes.yaml"),
    (["--deadline-seconds", "0"], "--deadline-seconds", "0"),
    (["--tls-cert", __file__], "--tls-key", ""),
    (["--http-port", "9000", "--metrics-port", "9000"], "--http-port", "9000"),
], ids=["a workload without its namespace", "a routes file that is not there", "a deadline of zero",
        "a certificate without its key", "two listeners on one port"])
def test_bad_flags_are_refused_naming_the_flag_and_value(arguments: list[str], flag: str, value: str) -> None:
    result = CliRunner().invoke(main, ["gateway", "--site", SITE, *arguments])
    assert result.exit_code == 2, result.output
    assert flag in result.output and value in result.output


def test_a_request_naming_its_model_twice_is_routed_by_the_name_the_upstream_reads() -> None:
    first = service_pb2.ModelInferRequest(model_name="cheap").SerializeToString()
    second = service_pb2.ModelInferRequest(model_name="guarded").SerializeToString()
    smuggled = first + second          # protobuf keeps the last: the upstream serves "guarded"
    assert service_pb2.ModelInferRequest.FromString(smuggled).model_name == "guarded"
    assert model_name_of(smuggled) == "guarded"
    assert model_name_of(first[:-2]) is None, "a message cut short is no message"
