"""Link telemetry read from a real Prometheus (Debian's, started here) scraping an exporter this test
runs, through the operator's PromQL templates; stale and failed reads fall back and say so."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from test_render import FACTORY

from hetplace.api.load import load_manifests
from hetplace.config import DEFAULT_QUERIES
from hetplace.engine.from_api import pool_from_spec
from hetplace.telemetry.prometheus import (
    GroupRef,
    LinkTelemetry,
    PrometheusClient,
    ServiceTimeTelemetry,
    TelemetryError,
)

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout_s: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


@pytest.fixture(scope="module")
def link_exporter():
    registry = CollectorRegistry()
    bandwidth = Gauge("hetplace_link_bandwidth_bytes", "Link bandwidth.", ["site", "pool"], registry=registry)
    rtt = Gauge("hetplace_link_rtt_seconds", "Link RTT.", ["site", "pool"], registry=registry)
    triton_labels = ["namespace", "hetplace_io_workload", "hetplace_io_pool"]   # as scrape relabelling names them
    # Triton's counters have no `_total` suffix, which prometheus_client's Counter would add: a Gauge
    # that only goes up exposes them under Triton's exact names
    triton = {name: Gauge(name, f"Triton's {name}.", triton_labels, registry=registry)
              for name in ("nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                           "nv_inference_request_success")}
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield port, bandwidth, rtt, triton
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def prometheus(link_exporter, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: `make test` installs Debian's prometheus (make tools)")
    exporter_port = link_exporter[0]
    home = tmp_path_factory.mktemp("prometheus")
    (home / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: links, static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]}}]\n")
    port = free_port()
    process = subprocess.Popen([binary, f"--config.file={home / 'prometheus.yml'}",
                                f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=(home / "prometheus.log").open("w"))
    url = f"http://127.0.0.1:{port}"

    def ready():
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return process.poll() is not None and pytest.fail((home / "prometheus.log").read_text()[-2000:])

    wait_for(ready, 60, "prometheus to be ready")
    yield url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def factory_pools():
    return tuple(pool_from_spec(p.metadata.name, p.spec) for p in load_manifests([FACTORY / "pools"]).pools)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_a_link_reading_comes_from_prometheus_and_the_others_from_the_spec(prometheus, link_exporter):
    _, bandwidth, rtt, _ = link_exporter
    bandwidth.labels("factory-eu-1", "cpu-cloud-eu").set(250_000)
    rtt.labels("factory-eu-1", "cpu-cloud-eu").set(0.025)
    client = PrometheusClient(prometheus)
    wait_for(lambda: client.query('hetplace_link_bandwidth_bytes{site="factory-eu-1"}'), 30,
             "the first scrape of the exporter")
    telemetry = LinkTelemetry(client, DEFAULT_QUERIES["link_bandwidth_bytes"], DEFAULT_QUERIES["link_rtt_seconds"],
                              stale_after_s=300, clock=Clock())
    reading = telemetry.read(factory_pools())
    assert reading.fresh == (("factory-eu-1", "cpu-cloud-eu"),)
    (seen,) = reading.observations
    assert (seen.site, seen.pool, seen.bandwidth_kbps, seen.rtt_ms) == ("factory-eu-1", "cpu-cloud-eu", 250.0, 25.0)
    assert ("cloud-eu", "arm-factory-eu-1") in reading.declared and not reading.all_fresh


def test_when_prometheus_cannot_be_read_the_last_good_reading_holds_until_it_is_stale(prometheus, link_exporter):
    _, bandwidth, rtt, _ = link_exporter
    bandwidth.labels("factory-eu-1", "gpu-cloud-eu").set(500_000)
    rtt.labels("factory-eu-1", "gpu-cloud-eu").set(0.03)
    client = PrometheusClient(prometheus)
    wait_for(lambda: client.query('hetplace_link_bandwidth_bytes{pool="gpu-cloud-eu"}'), 30, "the gpu link scrape")
    clock = Clock()
    telemetry = LinkTelemetry(client, DEFAULT_QUERIES["link_bandwidth_bytes"], DEFAULT_QUERIES["link_rtt_seconds"],
                              stale_after_s=300, clock=clock)
    assert ("factory-eu-1", "gpu-cloud-eu") in telemetry.read(factory_pools()).fresh
    telemetry.client = PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout_s=1)   # nothing listens there
    clock.offset = 120
    held = telemetry.read(factory_pools())
    assert ("factory-eu-1", "gpu-cloud-eu") in held.last_known_good and held.errors
    assert any(o.pool == "gpu-cloud-eu" and o.bandwidth_kbps == 500 for o in held.observations)
    clock.offset = 301
    gone = telemetry.read(factory_pools())
    assert ("factory-eu-1", "gpu-cloud-eu") in gone.declared and not gone.observations


def test_a_bad_query_is_an_error_that_names_it(prometheus):
    with pytest.raises(TelemetryError, match="bad_data"):
        PrometheusClient(prometheus).query("sum(rate(")


def test_a_groups_service_time_comes_from_tritons_counters(prometheus, link_exporter):
    triton = link_exporter[3]
    labels = ("factory", "defect-detector", "cpu-cloud-eu")
    group = GroupRef("factory", "defect-detector", "cpu-cloud-eu", "openvino-int8")
    idle = GroupRef("factory", "defect-detector", "gpu-cloud-eu", "trt-fp16")
    telemetry = ServiceTimeTelemetry(PrometheusClient(prometheus), DEFAULT_QUERIES)

    def serve_and_read():
        # 10 requests a poll, each 45 ms in Triton of which 5 ms queued: 40 ms of compute
        triton["nv_inference_request_success"].labels(*labels).inc(10)
        triton["nv_inference_request_duration_us"].labels(*labels).inc(10 * 45_000)
        triton["nv_inference_queue_duration_us"].labels(*labels).inc(10 * 5_000)
        observed, errors = telemetry.read([group, idle])
        assert errors == ()
        return observed if group in observed else None

    observed = wait_for(serve_and_read, 30, "two scrapes of Triton's counters")
    assert observed[group] == pytest.approx(40.0, rel=0.02)    # a scrape may fall between the three increments
    assert idle not in observed, "a group with no requests has no reading"
