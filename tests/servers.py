"""Servers the integration tests start on 127.0.0.1 and stop: Debian's Prometheus, scraping an
exporter of link and Triton series that the test sets (import the fixtures into a test module)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (held open together while chosen, so the kernel cannot repeat one)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for(condition, timeout_s: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


@dataclass(frozen=True)
class Exporter:
    """The series a test sets, as a link prober, Triton and client-side instrumentation would export them."""

    port: int
    bandwidth: Gauge                 # hetplace_link_bandwidth_bytes{site, pool}
    rtt: Gauge                       # hetplace_link_rtt_seconds{site, pool}
    triton: dict[str, Gauge]         # Triton's counters by name, {namespace, hetplace_io_workload, hetplace_io_pool}
    site_requests: Counter           # hetplace_site_requests_total{namespace, workload, site}
    request_duration: Histogram      # hetplace_request_duration_seconds{namespace, workload, site}


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
    site = ["namespace", "workload", "site"]
    site_requests = Counter("hetplace_site_requests", "Requests clients sent, by site.", site, registry=registry)
    request_duration = Histogram("hetplace_request_duration_seconds", "Latency clients saw, by site.", site,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0), registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield Exporter(port, bandwidth, rtt, triton, site_requests, request_duration)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def prometheus(link_exporter, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: `make test` installs Debian's prometheus (make tools)")
    exporter_port = link_exporter.port
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
