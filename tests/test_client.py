"""`hetplace.client` in an application's process, in front of two MLServer processes standing in for two
pools' Triton, over tritonclient's HTTP and gRPC clients with real numpy tensors: it serves by the
decided route and says which pool served, follows an edited routes file, tells where the next request
goes and in what encoding, fails over when the primary pool dies under load, passes an answer that is
an error through untouched, refuses an unknown model by name, and its metrics pass promtool
(docs/routes.md, "In your application: hetplace.client")."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import yaml
from mlserver_pools import Pool, start_pools
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from servers import PacedLoad, free_ports, wait_for
from tritonclient.utils import InferenceServerException

from hetplace.client import NoRouteServed, Protocol, SiteClient, UnknownModel

integration = pytest.mark.integration
unit = pytest.mark.unit

SITE = "factory-eu-1"
MODEL = "defect-detector"
WORKLOAD = "factory/defect-detector"
SITE_LABELS = {"namespace": "factory", "workload": "defect-detector", "site": SITE}


# -- routes -------------------------------------------------------------------------------------------

def route(name: str, http: str, grpc: str, encoding: str, decided: bool = False) -> dict:
    return {"pool": name, "variant": "onnx", "encoding": encoding, "model": MODEL, "http": http, "grpc": grpc,
            "predictedLatencyMs": 20.0, "withinSlo": True, "decided": decided}


def pool_route(pool: Pool, encoding: str, decided: bool = False) -> dict:
    return route(pool.name, pool.http, pool.grpc, encoding, decided)


def dead_route(name: str, encoding: str = "raw", decided: bool = False) -> dict:
    """A route to ports that were free when chosen: nothing listens on them."""
    http_port, grpc_port = free_ports(2)
    return route(name, f"http://127.0.0.1:{http_port}", f"grpc://127.0.0.1:{grpc_port}", encoding, decided)


def routes_document(routes: list[dict]) -> dict:
    return {"version": 2, "workload": WORKLOAD, "generation": 1, "decidedAt": "2026-12-07T22:00:00Z",
            "model": MODEL, "sloLatencyMs": 150, "sites": {SITE: routes}}


def write_routes(path: Path, routes: list[dict]) -> None:
    """The routes ConfigMap as `kubectl get -o yaml` prints it."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "defect-detector-routes", "namespace": "factory",
                     "labels": {"app.kubernetes.io/managed-by": "hetplace"}},
        "data": {"routes.json": json.dumps(routes_document(routes))}}))


# -- requests -----------------------------------------------------------------------------------------

def scores(client: SiteClient, n: int = 4) -> list:
    """One FP32 tensor 0..n-1 as the client's protocol builds it (the model answers their sum)."""
    tensor = client.InferInput("scores", [n], "FP32")
    values = np.arange(n, dtype=np.float32)
    if client.protocol is Protocol.HTTP:
        tensor.set_data_from_numpy(values, binary_data=False)     # MLServer reads JSON tensors only
    else:
        tensor.set_data_from_numpy(values)
    return [tensor]


def total(result) -> float:
    return float(result.as_numpy("total")[0])


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def pools(tmp_path_factory) -> Iterator[list[Pool]]:
    started = start_pools(["pool-a", "pool-b"], tmp_path_factory.mktemp("pools"))
    yield started
    for pool in started:
        pool.stop()


@pytest.fixture
def routes_file(tmp_path, pools) -> Path:
    """pool-a decided (raw), pool-b the fallback (compressed)."""
    path = tmp_path / "routes.yaml"
    write_routes(path, [pool_route(pools[0], "raw", decided=True), pool_route(pools[1], "compressed")])
    return path


# -- serving ------------------------------------------------------------------------------------------

@integration
@pytest.mark.parametrize("protocol", ["http", "grpc"], ids=["over HTTP", "over gRPC"])
def test_numpy_inputs_are_served_by_the_decided_pool_which_the_answer_names(routes_file, pools, protocol) -> None:
    with SiteClient(SITE, routes_file=routes_file, protocol=protocol) as client:
        served = client.infer_served(MODEL, scores(client, 5))
        assert total(served.response) == 10.0
        assert (served.route.pool, served.route.encoding, served.tried) == ("pool-a", "raw", ())
        assert total(client.infer(MODEL, scores(client))) == 6.0
        assert client.infer_served(MODEL, scores(client), encoding="compressed").route.pool == "pool-b", \
            "a request in the fallback's encoding goes to the route that serves it"


@integration
def test_route_and_encoding_name_the_decided_route_then_the_fallback_once_it_failed(pools) -> None:
    routes = [dead_route("gone", decided=True), pool_route(pools[1], "compressed")]
    with SiteClient(SITE, documents=[routes_document(routes)], protocol="grpc") as client:
        next_route = client.route(MODEL)
        assert (next_route.pool, next_route.encoding, next_route.down) == ("gone", "raw", False)
        assert next_route.endpoint == routes[0]["grpc"] and client.route(WORKLOAD) == next_route
        served = client.infer_served(MODEL, scores(client), encoding=client.encoding(MODEL))
        assert served.route.pool == "pool-b" and [t.route.pool for t in served.tried] == ["gone"]
        assert (client.route(MODEL).pool, client.encoding(MODEL)) == ("pool-b", "compressed")
        assert client.route(MODEL).endpoint == pools[1].grpc


@integration
def test_editing_the_routes_file_switches_the_route(routes_file, pools) -> None:
    with SiteClient(SITE, routes_file=routes_file, poll_s=0.1) as client:
        assert client.infer_served(MODEL, scores(client)).route.pool == "pool-a"
        write_routes(routes_file, [pool_route(pools[1], "compressed", decided=True), pool_route(pools[0], "raw")])
        wait_for(lambda: client.route(MODEL).pool == "pool-b", 10, "the client to follow the edited file")
        assert client.encoding(MODEL) == "compressed"
        assert client.infer_served(MODEL, scores(client)).route.pool == "pool-b"
        assert sample(client.metrics.registry, "hetplace_gateway_route_in_use", **SITE_LABELS, pool="pool-b",
                      variant="onnx") == 1


# -- refusals -----------------------------------------------------------------------------------------

@integration
@pytest.mark.parametrize("protocol, status", [("http", "404"), ("grpc", "StatusCode.NOT_FOUND")],
                         ids=["HTTP 404", "gRPC NOT_FOUND"])
def test_an_answer_that_is_an_error_is_raised_as_tritonclient_raised_it_without_failover(routes_file, protocol,
                                                                                         status) -> None:
    """MLServer answers a malformed tensor with a 500 (Triton: 400) because the model raises; a version
    the pool does not have is its clean 4xx. The HTTP 400 path is the stub test below."""
    with SiteClient(SITE, routes_file=routes_file, protocol=protocol) as client:
        with pytest.raises(InferenceServerException) as refused:
            client.infer(MODEL, scores(client), model_version="9")
        assert refused.value.status() == status and "version 9" in refused.value.message()
        registry = client.metrics.registry
        assert sample(registry, "hetplace_gateway_failovers_total", **SITE_LABELS) == 0
        assert sample(registry, "hetplace_gateway_upstream_errors_total", pool="pool-a", reason="server_error") == 0
        assert client.route(MODEL).pool == "pool-a" and not client.route(MODEL).down


@unit
def test_an_unknown_model_is_a_lookup_error_naming_the_model_and_the_site() -> None:
    with SiteClient(SITE, documents=[routes_document([dead_route("gone", decided=True)])]) as client:
        with pytest.raises(UnknownModel) as unknown:
            client.infer("resnet", [])
        assert isinstance(unknown.value, LookupError)
        assert "resnet" in str(unknown.value) and SITE in str(unknown.value)
        with pytest.raises(LookupError):
            client.route("resnet")


@unit
@pytest.mark.parametrize("protocol", ["http", "grpc"], ids=["over HTTP", "over gRPC"])
def test_when_every_route_is_down_the_error_names_each_route_tried(protocol) -> None:
    routes = [dead_route("gone-a", decided=True), dead_route("gone-b", encoding="compressed")]
    with SiteClient(SITE, documents=[routes_document(routes)], protocol=protocol) as client:
        with pytest.raises(NoRouteServed) as refused:
            client.infer(MODEL, scores(client))
        assert "gone-a/onnx" in str(refused.value) and "gone-b/onnx" in str(refused.value)
        assert [t.route.pool for t in refused.value.tried] == ["gone-a", "gone-b"]
        assert sample(client.metrics.registry, "hetplace_gateway_upstream_errors_total", pool="gone-a",
                      reason="connect") == 1


@unit
def test_a_client_needs_exactly_one_routes_source(tmp_path) -> None:
    with pytest.raises(ValueError, match="exactly one routes source"):
        SiteClient(SITE)
    with pytest.raises(ValueError, match="routes_file, documents"):
        SiteClient(SITE, routes_file=tmp_path / "r.yaml", documents=[])
    with pytest.raises(FileNotFoundError):
        SiteClient(SITE, routes_file=tmp_path / "missing.yaml")


class TritonStub:
    """A KServe-V2 HTTP server that answers every inference with one status: 200 with a `total`, or an
    error in Triton's shape (`{"error": ...}`), counting what it was sent."""

    def __init__(self, status: int) -> None:
        stub = self
        self.status = status
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:      # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.requests += 1
                body = (json.dumps({"model_name": MODEL, "outputs": [
                            {"name": "total", "datatype": "FP32", "shape": [1], "data": [6.0]}]})
                        if stub.status == 200 else
                        json.dumps({"error": "unexpected shape for input 'scores' for model 'defect-detector'. "
                                             "Expected [-1,4], got [3]"}))
                self.send_response(stub.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@unit
@pytest.mark.parametrize("status, fails_over", [(400, False), (503, True)],
                         ids=["a 400 for a bad shape is the answer", "a 503 is served by the fallback"])
def test_what_tritons_http_status_means_for_failover(status: int, fails_over: bool) -> None:
    primary, fallback = TritonStub(status), TritonStub(200)
    try:
        routes = [route("primary", primary.url, "grpc://127.0.0.1:1", "raw", decided=True),
                  route("fallback", fallback.url, "grpc://127.0.0.1:1", "raw")]
        with SiteClient(SITE, documents=[routes_document(routes)]) as client:
            if fails_over:
                served = client.infer_served(MODEL, scores(client))
                assert served.route.pool == "fallback" and total(served.response) == 6.0
            else:
                with pytest.raises(InferenceServerException) as refused:
                    client.infer(MODEL, scores(client))
                assert refused.value.status() == "400" and "unexpected shape" in refused.value.message()
        assert (primary.requests, fallback.requests) == (1, 1 if fails_over else 0)
    finally:
        primary.close()
        fallback.close()


# -- metrics ------------------------------------------------------------------------------------------

def scrape(address: tuple[str, int]) -> str:
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=5) as response:
        return response.read().decode()


def scraped(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


@integration
def test_metrics_on_a_port_pass_promtool_and_carry_the_series_the_operator_reads(routes_file) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus")
    with SiteClient(SITE, routes_file=routes_file, metrics_port=0, health_interval_s=0.2,
                    probe_interval_s=0.2) as client:
        host, port = client.metrics_address
        assert host == "127.0.0.1"
        for _ in range(3):
            client.infer(MODEL, scores(client))
        wait_for(lambda: scraped(scrape((host, port)), "hetplace_link_rtt_seconds", site=SITE, pool="pool-a"), 10,
                 "an RTT figure for the link to pool-a")
        text = scrape((host, port))
        checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
        assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
        assert scraped(text, "hetplace_site_requests_total", **SITE_LABELS) == 3
        assert scraped(text, "hetplace_request_duration_seconds_count", **SITE_LABELS) == 3
        assert scraped(text, "hetplace_gateway_route_in_use", **SITE_LABELS, pool="pool-a", variant="onnx") == 1
        assert scraped(text, "hetplace_gateway_routes_last_load_timestamp_seconds") > 0


@integration
def test_metrics_go_to_the_registry_the_application_passes(routes_file) -> None:
    registry = CollectorRegistry()
    with SiteClient(SITE, routes_file=routes_file, registry=registry, protocol="grpc") as client:
        client.infer(MODEL, scores(client))
        assert client.metrics_address is None
    assert sample(registry, "hetplace_site_requests_total", **SITE_LABELS) == 1


# -- a pool dies under load ---------------------------------------------------------------------------

def served_load(clients: list[SiteClient], per_second: float, served_by: list[str]) -> PacedLoad:
    """Requests through the clients in turn (HTTP and gRPC), the pool that served each in `served_by`."""
    def send(i: int) -> None:
        client = clients[i % len(clients)]
        served = client.infer_served(MODEL, scores(client))
        served_by.append(served.route.pool)
        assert total(served.response) == 6.0, f"wrong answer {total(served.response)} ({client.protocol.value})"
    return PacedLoad(per_second, send)


@integration
def test_killing_the_primary_pool_under_load_costs_at_most_one_error(tmp_path) -> None:
    primary, fallback = start_pools(["primary", "fallback"], tmp_path / "pools")
    routes = tmp_path / "routes.yaml"
    write_routes(routes, [pool_route(primary, "raw", decided=True), pool_route(fallback, "raw")])
    try:
        with SiteClient(SITE, routes_file=routes, protocol="http") as over_http, \
                SiteClient(SITE, routes_file=routes, protocol="grpc") as over_grpc:
            served_by: list[str] = []
            with served_load([over_http, over_grpc], 50, served_by) as load:
                wait_for(lambda: load.sent >= 50, 60, "a second of load served by the primary")
                assert set(served_by) == {"primary"}
                primary.kill()
                killed_at = load.sent
                wait_for(lambda: load.sent >= killed_at + 100, 60, "two seconds of load after the kill")
            assert len(load.errors) <= 1, f"{len(load.errors)} of {load.sent} requests failed: {load.errors[:5]}"
            assert served_by[-20:] == ["fallback"] * 20
            for client in (over_http, over_grpc):
                registry = client.metrics.registry
                assert sample(registry, "hetplace_gateway_failovers_total", **SITE_LABELS) >= 1
                assert sample(registry, "hetplace_gateway_upstream_errors_total", pool="primary", reason="connect") \
                    + sample(registry, "hetplace_gateway_upstream_errors_total", pool="primary", reason="protocol") >= 1
                assert sample(registry, "hetplace_gateway_route_in_use", **SITE_LABELS, pool="fallback",
                              variant="onnx") == 1
                assert client.route(MODEL).pool == "fallback"
    finally:
        primary.stop()
        fallback.stop()


# -- TLS ------------------------------------------------------------------------------------------------

@integration
def test_https_and_grpcs_endpoints_are_reached_over_tls_trusting_the_ca_file(pools, tmp_path) -> None:
    """A gateway serving TLS in front of pool-a stands in for a pool reached from outside its cluster
    (`spec.clientEndpoints` with https:// and grpcs://)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    behind = tmp_path / "behind.yaml"
    write_routes(behind, [pool_route(pools[0], "raw", decided=True)])
    http_port, grpc_port, metrics_port = free_ports(3)
    log = tmp_path / "gateway.log"
    with log.open("w") as out:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "hetplace", "gateway", "--site", SITE, "--routes", str(behind), "--listen",
             "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port",
             str(metrics_port), "--tls-cert", str(cert), "--tls-key", str(key)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            assert gateway.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{http_port}/v2/health/ready", timeout=1,
                                            context=ssl.create_default_context(cafile=cert)) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(ready, 30, f"the TLS gateway to be ready (log: {log})")
        tls = route("tls-pool", f"https://127.0.0.1:{http_port}", f"grpcs://127.0.0.1:{grpc_port}", "raw", decided=True)
        for protocol in ("http", "grpc"):
            with SiteClient(SITE, documents=[routes_document([tls])], protocol=protocol, ca_file=str(cert)) as client:
                served = client.infer_served(MODEL, scores(client, 5))
                assert (served.route.pool, total(served.response)) == ("tls-pool", 10.0)
            with SiteClient(SITE, documents=[routes_document([tls])], protocol=protocol) as untrusting:
                with pytest.raises(NoRouteServed):
                    untrusting.infer(MODEL, scores(untrusting), deadline_s=3)
    finally:
        gateway.terminate()
        gateway.wait(timeout=20)
