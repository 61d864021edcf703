"""Servers the integration tests start on 127.0.0.1 and stop: Debian's Prometheus, scraping an
exporter of link and Triton series that the test sets, or any targets a test names (import the
fixtures into a test module, or call `running_prometheus`); and `hetplace gateway` as a process."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.parser import text_string_to_metric_families


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


@contextlib.contextmanager
def running_prometheus(home: Path, targets: Mapping[str, list[str]]) -> Iterator[str]:
    """Debian's Prometheus on a free port, scraping each job's `host:port` targets every second; yields
    its base URL once it is ready, and stops it after."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: `make test` installs Debian's prometheus (make tools)")
    home.mkdir(parents=True, exist_ok=True)
    jobs = [{"job_name": job, "static_configs": [{"targets": list(addresses)}]} for job, addresses in targets.items()]
    (home / "prometheus.yml").write_text(json.dumps({     # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": jobs}))
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

    try:
        wait_for(ready, 60, "prometheus to be ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def prometheus(link_exporter, tmp_path_factory):
    with running_prometheus(tmp_path_factory.mktemp("prometheus"),
                            {"links": [f"127.0.0.1:{link_exporter.port}"]}) as url:
        yield url


# --- steady load ---------------------------------------------------------------------------------------

class PacedLoad:
    """Requests at a steady rate from a thread until the `with` ends, each on its own schedule: `send(i)`
    makes request i and raises on anything a client would count as an error (a wrong answer too);
    every error is kept, with the request's number."""

    def __init__(self, per_second: float, send: Callable[[int], None], close: Callable[[], None] = lambda: None) -> None:
        self.send = send
        self.close = close      # after the last request: the clients `send` used
        self.interval_s = 1.0 / per_second
        self.sent = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.send(self.sent)
            except Exception as e:   # every kind of failure a client sees counts
                self.errors.append(f"request {self.sent}: {type(e).__name__}: {e}")
            self.sent += 1
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> "PacedLoad":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.close()


# --- hetplace gateway ---------------------------------------------------------------------------------

@dataclass
class GatewayProcess:
    """`hetplace gateway` as a site runs it: HTTP, gRPC and metrics listeners on `host` (127.0.0.1 unless
    the network lab runs it on a site's address)."""

    site: str
    http_port: int
    grpc_port: int
    metrics_port: int
    process: subprocess.Popen
    log: Path
    scheme: str = "http"            # https: it serves TLS, checked against `ca`
    ca: Path | None = None
    host: str = "127.0.0.1"

    @property
    def http(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.http}"

    @property
    def grpc(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_target(self) -> str:
        """The metrics listener as a Prometheus scrape target."""
        return f"{self.host}:{self.metrics_port}"

    def status(self, path: str) -> int:
        """The HTTP status of GET `path` (0: no answer)."""
        context = ssl.create_default_context(cafile=self.ca) if self.ca else None
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=2, context=context) as response:
                return response.status
        except urllib.error.HTTPError as answered:
            return answered.code
        except OSError:
            return 0

    def routes(self) -> dict:
        """The read-only routes document, `GET /v2/hetplace/routes`."""
        with urllib.request.urlopen(f"http://{self.http}/v2/hetplace/routes", timeout=5) as response:
            return json.load(response)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.metrics_target}/metrics", timeout=5) as response:
            return response.read().decode()

    def sample(self, name: str, **labels: str) -> float | None:
        """A sample of the gateway's own exposition (None: no such series)."""
        for family in text_string_to_metric_families(self.metrics()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return None

    def alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"the gateway exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        """SIGTERM, as Kubernetes stops a pod; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def start_gateway(site: str, home: Path, *args: str, env: Mapping[str, str] | None = None,
                  until: str = "/v2/health/ready", scheme: str = "http", ca: Path | None = None,
                  quick: bool = True, listen: str = "127.0.0.1", ports: tuple[int, int, int] | None = None,
                  prefix: Sequence[str] = (), within: Callable[[Callable[[], bool]], bool] | None = None
                  ) -> GatewayProcess:
    """`python -m hetplace gateway --site SITE *args` (`--routes FILE`, `--workload NS/NAME`, flags)
    on free ports of 127.0.0.1; `quick`: link probes every second and a 5 s deadline, as tests want.
    Returns once GET `until` answers 200 (`/v2/health/live`: listening, routes or not).
    The network lab (tests/netlab.py) passes `listen` (a site's address), `ports` (HTTP, gRPC, metrics),
    the command `prefix` that enters the site's namespace, and `within`, which runs the readiness check there."""
    http_port, grpc_port, metrics_port = ports or free_ports(3)
    log = home / f"gateway-{http_port}.log"
    quick_flags = ("--probe-interval-seconds", "1", "--deadline-seconds", "5") if quick else ()
    with log.open("w") as out:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "hetplace", "gateway", "--site", site, "--listen", listen,
             "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
             *quick_flags, *args],
            env=dict(os.environ if env is None else env), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT)
    gateway = GatewayProcess(site, http_port, grpc_port, metrics_port, process, log, scheme, ca, listen)

    def answering() -> bool:
        gateway.alive()
        return gateway.status(until) == 200 if within is None else within(lambda: gateway.status(until) == 200)

    try:
        wait_for(answering, 30, f"the gateway to answer {until} (log: {log})")
    except BaseException:
        gateway.stop()
        raise
    return gateway