"""Link telemetry read from a real Prometheus (Debian's, started here) scraping an exporter this test
runs, through the operator's PromQL templates; stale and failed reads fall back and say so."""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from builders import a_pool
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import free_port, link_exporter, prometheus, wait_for  # noqa: F401  (fixtures)
from test_render import FACTORY

from hetplace.api.load import load_manifests
from hetplace.config import DEFAULT_QUERIES
from hetplace.engine.from_api import pool_from_spec
from hetplace.engine.observed import LinkObservation
from hetplace.telemetry.prometheus import (
    GroupRef,
    LinkReading,
    LinkTelemetry,
    PrometheusClient,
    ServiceTimeTelemetry,
    SiteTelemetry,
    TelemetryError,
    latency_quantile_s,
)

pytestmark = pytest.mark.integration


def factory_pools():
    return tuple(pool_from_spec(p.metadata.name, p.spec) for p in load_manifests([FACTORY / "pools"]).pools)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_a_link_reading_comes_from_prometheus_and_the_others_from_the_spec(prometheus, link_exporter):
    bandwidth, rtt = link_exporter.bandwidth, link_exporter.rtt
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
    bandwidth, rtt = link_exporter.bandwidth, link_exporter.rtt
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
    triton = link_exporter.triton
    labels = ("factory", "defect-detector", "cpu-cloud-eu")
    group = GroupRef("factory", "defect-detector", "cpu-cloud-eu", "openvino-int8")
    idle = GroupRef("factory", "defect-detector", "gpu-cloud-eu", "trt-fp16")
    telemetry = ServiceTimeTelemetry(PrometheusClient(prometheus), DEFAULT_QUERIES)

    def serve_and_read():
        # 10 requests a poll, each 45 ms in Triton of which 5 ms queued: 40 ms of compute
        triton["nv_inference_request_success"].labels(*labels).inc(10)
        triton["nv_inference_request_duration_us"].labels(*labels).inc(10 * 45_000)
        triton["nv_inference_queue_duration_us"].labels(*labels).inc(10 * 5_000)
        reading = telemetry.observe([group, idle])
        assert reading.errors == ()
        return reading.observed_ms if group in reading.observed_ms else None

    observed = wait_for(serve_and_read, 30, "two scrapes of Triton's counters")
    assert observed[group] == pytest.approx(40.0, rel=0.02)    # a scrape may fall between the three increments
    assert idle not in observed, "a group with no requests has no reading"


def test_each_sites_traffic_and_observed_latency_come_from_one_query_each(prometheus, link_exporter):
    telemetry = SiteTelemetry(PrometheusClient(prometheus), DEFAULT_QUERIES)
    key = ("factory/defect-detector", "factory-eu-1")

    def serve_and_read():
        # 199 requests in 40 ms and 1 in 400 ms a poll: p99 within (25, 50] ms, p99.9 in (250, 500] ms
        # (not 99 and 1: p99 would sit on the bucket's edge, where rate extrapolation can tip it over)
        for _ in range(199):
            link_exporter.request_duration.labels("factory", "defect-detector", "factory-eu-1").observe(0.04)
        link_exporter.request_duration.labels("factory", "defect-detector", "factory-eu-1").observe(0.4)
        link_exporter.site_requests.labels("factory", "defect-detector", "factory-eu-1").inc(200)
        reading = telemetry.read()
        assert reading.errors == ()
        return reading if key in reading.latency_buckets and key in reading.requests_per_second else None

    reading = wait_for(serve_and_read, 30, "two scrapes of the client series")
    assert reading.requests_per_second[key] > 0
    p99 = latency_quantile_s(reading.latency_buckets[key], 99)
    assert 0.025 < p99 <= 0.05
    assert latency_quantile_s(reading.latency_buckets[key], 99.9) > 0.25


@pytest.mark.parametrize("buckets, percentile, expected", [
    pytest.param(((0.1, 50.0), (0.2, 100.0), (math.inf, 100.0)), 50, 0.1, id="at a bucket's edge"),
    pytest.param(((0.1, 50.0), (0.2, 100.0), (math.inf, 100.0)), 75, 0.15, id="interpolated within a bucket"),
    pytest.param(((0.1, 0.0), (0.2, 0.0), (math.inf, 0.0)), 99, None, id="no requests: nothing observed"),
    pytest.param(((0.1, 50.0), (math.inf, 100.0)), 99, None, id="in the +Inf bucket: only a lower bound"),
])
def test_a_latency_quantile_is_read_from_a_cumulative_histogram(buckets, percentile, expected):
    assert latency_quantile_s(buckets, percentile) == (pytest.approx(expected) if expected is not None else None)


# --- Answers that cannot be used never stop a read -------------------------------------------------------------

LAB_SITES = (f"lab-{n}" for n in itertools.count(1))    # a link per test, so the shared exporter's series never mix


def test_a_measured_rtt_is_planned_with_where_no_bandwidth_is_exported(prometheus, link_exporter):
    """A gateway withholds a bandwidth it cannot estimate but exports the RTT it measured."""
    site = next(LAB_SITES)
    link_exporter.rtt.labels(site, "lab-pool").set(0.004)
    client = PrometheusClient(prometheus)
    wait_for(lambda: client.query(f'hetplace_link_rtt_seconds{{site="{site}"}}'), 30, "the scrape of the lab link")
    clock = Clock()
    telemetry = LinkTelemetry(client, DEFAULT_QUERIES["link_bandwidth_bytes"], DEFAULT_QUERIES["link_rtt_seconds"],
                              stale_after_s=300, clock=clock)
    reading = telemetry.read([lab_pool(site)])
    assert reading.observations == (LinkObservation(site, "lab-pool", 2000.0, 4.0),), "declared rate, measured RTT"
    assert reading.declared == ((site, "lab-pool"),) and reading.errors == ()
    assert reading.reasons[(site, "lab-pool")] == f"{site}→lab-pool: no bandwidth series"


def lab_pool(*sites: str):
    builder = a_pool("lab-pool").site("lab-cloud")
    for site in sites:
        builder = builder.link(site, kbps=2000, rtt_ms=25)
    return pool_from_spec("lab-pool", builder.build().spec)


@pytest.mark.parametrize("bandwidth_bytes, rtt_s, reason", [
    pytest.param(1e-300, 0.025, "bandwidth 1e-300 bytes/s is below 1 byte/s",
                 id="a bandwidth of 1e-300 bytes per second is no reading"),
    pytest.param(2e12, 0.025, "bandwidth 2e+12 bytes/s is over 1e+12 bytes/s",
                 id="a bandwidth over a terabyte per second is no reading"),
    pytest.param(math.nan, 0.025, "bandwidth nan bytes/s is not a number", id="a NaN bandwidth is no reading"),
    pytest.param(-math.inf, 0.025, "bandwidth -inf bytes/s is not finite",
                 id="a bandwidth of minus infinity is no reading"),
    pytest.param(250_000, -0.01, "RTT -0.01 s is negative", id="a negative RTT is no reading"),
    pytest.param(250_000, 700, "RTT 700 s is over 600 s", id="an RTT over ten minutes is no reading"),
    pytest.param(250_000, math.inf, "RTT inf s is not finite", id="an infinite RTT is no reading"),
])
def test_an_implausible_link_value_from_prometheus_is_no_reading_and_says_why(
        prometheus, link_exporter, bandwidth_bytes, rtt_s, reason):
    site = next(LAB_SITES)
    link_exporter.bandwidth.labels(site, "lab-pool").set(bandwidth_bytes)
    link_exporter.rtt.labels(site, "lab-pool").set(rtt_s)
    client = PrometheusClient(prometheus)
    wait_for(lambda: client.query(f'hetplace_link_bandwidth_bytes{{site="{site}"}}')
             and client.query(f'hetplace_link_rtt_seconds{{site="{site}"}}'), 30, "the scrape of the lab link")
    telemetry = LinkTelemetry(client, DEFAULT_QUERIES["link_bandwidth_bytes"], DEFAULT_QUERIES["link_rtt_seconds"],
                              stale_after_s=300, clock=Clock())
    reading = telemetry.read([lab_pool(site)])
    assert reading.declared == ((site, "lab-pool"),) and not reading.fresh
    # the other figure was measured: it is planned with, the implausible one is the declared one
    measured_bandwidth = reason.startswith("RTT")
    assert reading.observations == (LinkObservation(site, "lab-pool", 250.0 if measured_bandwidth else 2000.0,
                                                    25.0),)
    assert reading.reasons[(site, "lab-pool")] == f"{site}→lab-pool: {reason}"
    assert reading.errors == (), "Prometheus answered (NaN and ±Inf included): the value is wrong, not the query"


class FakePrometheus:
    """A local HTTP server in place of Prometheus: answers /api/v1/query as the test says, by PromQL
    (an empty vector to the rest), or hangs in one of the ways a server or proxy can."""

    def __init__(self) -> None:
        self.behaviours: dict[str, Callable[[BaseHTTPRequestHandler, threading.Event], None]] = {}
        self.default = answering(vector())
        self.released = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                promql = parse_qs(urlsplit(self.path).query).get("query", [""])[0]
                try:
                    fake.behaviours.get(promql, fake.default)(self, fake.released)
                except (BrokenPipeError, ConnectionResetError):
                    pass            # the client gave up: as it should on a hung answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reset(self) -> None:
        """Back to answering empty vectors; the hung answers of the test before end."""
        self.released.set()
        self.released = threading.Event()
        self.behaviours.clear()
        self.default = answering(vector())


def vector(*samples: tuple[dict[str, str], str], at_s: float | None = None) -> dict:
    at_s = time.time() if at_s is None else at_s
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [at_s, value]} for labels, value in samples]}}


def answering(answer: object, status: int = 200):
    """A handler answering `answer` (bytes, JSON, or a function making it at each request: a sample
    stamped when the test runs, not when it was collected)."""
    def respond(handler: BaseHTTPRequestHandler, released: threading.Event) -> None:
        given = answer() if callable(answer) else answer
        body = given if isinstance(given, bytes) else json.dumps(given).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return respond


def trickling_the_body(handler: BaseHTTPRequestHandler, released: threading.Event) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "1000000")
    handler.end_headers()
    while not released.wait(0.05):          # a byte well within any socket timeout, for ever
        handler.wfile.write(b" ")


def trickling_the_headers(handler: BaseHTTPRequestHandler, released: threading.Event) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not released.wait(0.05):
        handler.wfile.write(b"a")


def stalling_after_the_headers(handler: BaseHTTPRequestHandler, released: threading.Event) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "100")
    handler.end_headers()
    released.wait()


@pytest.fixture(scope="module")
def fake_server():
    fake = FakePrometheus()
    fake.thread.start()

    def listening():
        try:
            with urllib.request.urlopen(f"{fake.url}/api/v1/query?query=up", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(listening, 10, "the fake Prometheus to answer")
    yield fake
    fake.reset()
    fake.server.shutdown()
    fake.server.server_close()
    fake.thread.join(timeout=5)


@pytest.fixture
def fake_prometheus(fake_server):
    fake_server.reset()
    yield fake_server
    fake_server.reset()


def finished_within(seconds: float, call: Callable[[], object]) -> tuple[object, float]:
    """call()'s result or exception, and how long it took; a call that is still running fails the
    test rather than hanging the run."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as raised:   # noqa: BLE001 — reported to the test
            outcome.append(raised)

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"still running after {seconds:g} s"
    return outcome[0], time.monotonic() - started


AT = 1_700_000_000.0


@pytest.mark.parametrize("answer, problem", [
    pytest.param({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [AT, "1"]}, {"metric": {}, "value": [AT, "2"]}, {"metric": {}, "value": [1]}]}},
        'result[2].value is not a [time, "number"] pair: [1]', id="a value that is not a pair names the sample"),
    pytest.param({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
                 'result[0].value is not a [time, "number"] pair: null', id="a sample without a value"),
    pytest.param({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [AT, 7]}]}},
                 'result[0].value has no "number"', id="a value that is a JSON number, not a string"),
    pytest.param({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [AT, "fast"]}]}}, 'result[0].value has no "number"', id="a value that is not a number"),
    pytest.param({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": ["1700000000", "1"]}]}}, "result[0].value has no finite time",
        id="a time that is a string"),
    pytest.param({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"site": 1}, "value": [AT, "1"]}]}}, "result[0].metric is not an object of string labels",
        id="a label that is not a string"),
    pytest.param({"status": "success", "data": {"resultType": "vector", "result": {"a": 1}}},
                 'result is not a list: {"a": 1}', id="a result that is an object"),
    pytest.param({"status": "success", "data": {"resultType": "vector", "result": ["x"]}},
                 'result[0] is not an object: "x"', id="a sample that is a string"),
    pytest.param({"status": "success", "data": {"resultType": "scalar", "result": [1]}},
                 'result is not a [time, "number"] pair: [1]', id="a scalar that is not a pair"),
    pytest.param([1, 2], "the answer is not a JSON object: [1, 2]", id="an answer that is a list"),
    pytest.param({"status": "success", "data": []}, "data is not an object: []", id="data that is a list"),
])
def test_a_malformed_answer_fails_the_query_with_what_is_wrong(fake_prometheus, answer, problem):
    fake_prometheus.default = answering(answer)
    with pytest.raises(TelemetryError) as failed:
        PrometheusClient(fake_prometheus.url).query("up")
    assert problem in str(failed.value) and "query 'up'" in str(failed.value)


@pytest.mark.parametrize("hang", [
    pytest.param(trickling_the_body, id="a server that sends headers then a byte now and then has timed out"),
    pytest.param(trickling_the_headers, id="a server that sends its headers a byte at a time has timed out"),
    pytest.param(stalling_after_the_headers, id="a server that sends headers then nothing has timed out"),
])
def test_a_query_that_hangs_is_an_error_within_the_deadline(fake_prometheus, hang):
    fake_prometheus.default = hang
    client = PrometheusClient(fake_prometheus.url, timeout_s=1)
    raised, took_s = finished_within(15, lambda: client.query("up"))
    assert isinstance(raised, TelemetryError) and "timed out after 1 s" in str(raised), raised
    assert took_s < 2.5


GOOD = ("factory-eu-1", "lab-gpu")
BAD = ("cloud-eu", "lab-gpu")
ALSO_GOOD = ("factory-eu-2", "lab-gpu")


@pytest.mark.parametrize("bad_answer, reason, is_query_error", [
    pytest.param(answering({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1]}]}}),
        'cloud-eu→lab-gpu: bandwidth query: result[0].value is not a [time, "number"] pair: [1]', True,
        id="a malformed answer for one link degrades only that link"),
    pytest.param(stalling_after_the_headers, "cloud-eu→lab-gpu: bandwidth query: timed out after 1 s", True,
                 id="a hung query for one link degrades only that link"),
    pytest.param(answering({"status": "error", "errorType": "execution", "error": "query timed out"}, 503),
                 "cloud-eu→lab-gpu: bandwidth query: execution: query timed out", True,
                 id="a Prometheus error for one link degrades only that link"),
    pytest.param(answering(lambda: vector(({}, "1e-300"))), "cloud-eu→lab-gpu: bandwidth 1e-300 bytes/s is below 1 byte/s",
                 False, id="an implausible bandwidth for one link degrades only that link"),
    pytest.param(answering(vector()), "cloud-eu→lab-gpu: no bandwidth series", False,
                 id="no series for one link degrades only that link"),
])
def test_one_bad_link_among_good_ones_falls_back_alone_and_says_why(fake_prometheus, bad_answer, reason,
                                                                   is_query_error):
    def answer_every_link_with(bandwidth_bytes: str) -> None:
        for site, pool in (GOOD, BAD, ALSO_GOOD):
            fake_prometheus.behaviours[f"bandwidth {site} {pool}"] = answering(vector(({}, bandwidth_bytes)))
            fake_prometheus.behaviours[f"rtt {site} {pool}"] = answering(vector(({}, "0.025")))

    clock = Clock()
    telemetry = LinkTelemetry(PrometheusClient(fake_prometheus.url, timeout_s=1), "bandwidth {site} {pool}",
                              "rtt {site} {pool}", stale_after_s=300, clock=clock)
    pool = pool_from_spec("lab-gpu", a_pool("lab-gpu").site("lab-cloud").link(GOOD[0], 2000, 25)
                          .link(BAD[0], 2000, 25).link(ALSO_GOOD[0], 2000, 25).build().spec)
    answer_every_link_with("250000")
    assert telemetry.read([pool]).all_fresh
    fake_prometheus.behaviours[f"bandwidth {BAD[0]} {BAD[1]}"] = bad_answer
    clock.offset = 60
    reading, _ = finished_within(15, lambda: telemetry.read([pool]))
    assert not isinstance(reading, BaseException), reading
    assert reading.fresh == (GOOD, ALSO_GOOD)
    assert reading.last_known_good == (BAD,) and reading.declared == ()
    assert reading.reasons == {BAD: reason}
    assert len(reading.errors) == (1 if is_query_error else 0)
    assert reading.summary() == \
        f"2 links fresh (factory-eu-1→lab-gpu, factory-eu-2→lab-gpu); 1 on last-known-good ({reason})"


def links(count: int, site: str = "site") -> tuple[tuple[str, str], ...]:
    return tuple((f"{site}-{n}", "pool") for n in range(1, count + 1))


@pytest.mark.parametrize("links_by_state, summary", [
    pytest.param({"fresh": links(2)}, "2 links fresh (site-1→pool, site-2→pool)", id="every link fresh is named"),
    pytest.param({"fresh": links(1, "a"), "last_known_good": links(1, "b"), "declared": links(1, "c"),
                  "errors": ("query 'x' at http://prometheus: timed out after 5 s",),
                  "reasons": {("b-1", "pool"): "b-1→pool: RTT inf s is not finite",
                              ("c-1", "pool"): "c-1→pool: bandwidth query: timed out after 5 s"}},
                 "1 link fresh (a-1→pool); 1 on last-known-good (b-1→pool: RTT inf s is not finite); "
                 "1 on the declared value (c-1→pool: bandwidth query: timed out after 5 s)",
                 id="a link in each state says why the others are not fresh"),
    pytest.param({"declared": links(7), "reasons": {k: f"{k[0]}: no bandwidth series" for k in links(7)}},
                 "0 links fresh; 7 on the declared value (site-1: no bandwidth series, site-2: no bandwidth series, "
                 "site-3: no bandwidth series, site-4: no bandwidth series, site-5: no bandwidth series and 2 more)",
                 id="more than five links in a state are counted, not all named"),
    pytest.param({}, "no links to read", id="no links at all is said so"),
])
def test_a_link_reading_sums_itself_up_in_one_line(links_by_state, summary):
    in_no_state: dict = {"observations": (), "fresh": (), "last_known_good": (), "declared": ()}
    assert LinkReading(**{**in_no_state, **links_by_state}).summary() == summary


def service_queries() -> dict[str, str]:
    return {name: f"{name} {{namespace}}/{{workload}} {{pool}}"
            for name in ("request_duration_us", "queue_duration_us", "request_success")}


SERVING = GroupRef("factory", "defect-detector", "cpu-cloud-eu", "openvino-int8")
ODD = GroupRef("factory", "defect-detector", "gpu-cloud-eu", "trt-fp16")


@pytest.mark.parametrize("duration_us, queue_us, success, reason", [
    pytest.param("-1", "0", "10", "request_duration_us rate -1 µs/s is negative", id="a negative duration rate"),
    pytest.param("NaN", "0", "10", "request_duration_us rate nan µs/s is not a number", id="a NaN duration rate"),
    pytest.param("450000", "+Inf", "10", "queue_duration_us rate inf µs/s is not finite",
                 id="an infinite queueing rate"),
    pytest.param("450000", "0", "-10", "request_success rate -10 requests/s is negative",
                 id="a negative success rate"),
    pytest.param("450000", "500000", "10", "service time -5 ms is not positive",
                 id="more queueing than request time"),
    pytest.param("1e15", "0", "1", "service time 1e+12 ms is over 600000 ms", id="a service time of decades"),
    pytest.param("0", "0", "0", "no requests yet", id="a group with no requests yet"),
])
def test_an_implausible_service_time_is_no_reading_of_that_group_alone(fake_prometheus, duration_us, queue_us,
                                                                       success, reason):
    answers = {"request_duration_us": "450000", "queue_duration_us": "50000", "request_success": "10"}
    for group, values in ((SERVING, answers), (ODD, {"request_duration_us": duration_us,
                                                     "queue_duration_us": queue_us, "request_success": success})):
        for name, value in values.items():
            fake_prometheus.behaviours[f"{name} {group.namespace}/{group.workload} {group.pool}"] = \
                answering(vector(({}, value)))
    reading = ServiceTimeTelemetry(PrometheusClient(fake_prometheus.url), service_queries()).observe([SERVING, ODD])
    assert reading.observed_ms == {SERVING: pytest.approx(40.0)}
    assert reading.reasons == {ODD: f"factory/defect-detector on gpu-cloud-eu (trt-fp16): {reason}"}
    assert reading.errors == ()


def site_series(site: str, **labels: str) -> dict[str, str]:
    return {"namespace": "factory", "workload": "defect-detector", "site": site, **labels}


@pytest.mark.parametrize("odd_requests, odd_buckets, reasons", [
    pytest.param([(site_series("cloud-eu"), "-3")], [],
                 ["factory/defect-detector at cloud-eu: request rate -3 requests/s is negative"],
                 id="a negative request rate from one site"),
    pytest.param([(site_series("cloud-eu"), "NaN")], [],
                 ["factory/defect-detector at cloud-eu: request rate nan requests/s is not a number"],
                 id="a NaN request rate from one site"),
    pytest.param([({"namespace": "factory"}, "3")], [],
                 ['a site_requests series without namespace, workload and site labels: {"namespace": "factory"}'],
                 id="a request series without its site"),
    pytest.param([], [(site_series("cloud-eu", le="0.1"), "1"), (site_series("cloud-eu", le="fast"), "2")],
                 ['factory/defect-detector at cloud-eu: latency histogram: bucket le="fast" is not a number '
                  'of seconds'],
                 id="a bucket whose le is not a number spoils that site's histogram"),
    pytest.param([], [(site_series("cloud-eu", le="0.1"), "1"), (site_series("cloud-eu", le="+Inf"), "-Inf")],
                 ["factory/defect-detector at cloud-eu: latency histogram: bucket le=inf rate -inf requests/s "
                  "is not finite"], id="a bucket with an infinite rate spoils that site's histogram"),
])
def test_an_implausible_site_series_is_no_reading_of_that_site_alone(fake_prometheus, odd_requests, odd_buckets,
                                                                    reasons):
    good_key = ("factory/defect-detector", "factory-eu-1")
    fake_prometheus.behaviours["site_requests"] = answering(vector((site_series("factory-eu-1"), "5"), *odd_requests))
    fake_prometheus.behaviours["route_latency_buckets"] = answering(vector(
        (site_series("factory-eu-1", le="0.1"), "4"), (site_series("factory-eu-1", le="+Inf"), "5"), *odd_buckets))
    reading = SiteTelemetry(PrometheusClient(fake_prometheus.url),
                            {"site_requests": "site_requests", "route_latency_buckets": "route_latency_buckets"}).read()
    assert reading.requests_per_second == {good_key: 5.0}
    assert reading.latency_buckets == {good_key: ((0.1, 4.0), (math.inf, 5.0))}
    assert list(reading.reasons) == reasons and reading.errors == ()


# Any JSON at all, and answers shaped like Prometheus's with any JSON in each place
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
numbers = st.sampled_from(["NaN", "+Inf", "-Inf", "1e-300", "250000", "0.025", "-1", "0", "1e999"]) | \
    st.text(max_size=6)
pairs = st.lists(st.floats() | st.integers() | json_values, min_size=0, max_size=3) | \
    st.tuples(st.floats() | st.integers(min_value=-10**400, max_value=10**400), numbers).map(list)
labels = st.dictionaries(st.sampled_from(["namespace", "workload", "site", "le", "pool"]),
                         st.sampled_from(["factory", "defect-detector", "cloud-eu", "0.1", "+Inf", "x"]) | json_values)
items = st.fixed_dictionaries({}, optional={"metric": labels | json_values, "value": pairs | json_values,
                                            "histogram": json_values}) | json_values
shaped = st.fixed_dictionaries({}, optional={
    "status": st.sampled_from(["success", "error"]) | json_values,
    "errorType": json_values, "error": json_values,
    "data": st.fixed_dictionaries({}, optional={
        "resultType": st.sampled_from(["vector", "scalar", "matrix"]) | json_values,
        "result": st.lists(items, max_size=4) | pairs | json_values}) | json_values})
bodies = st.one_of(json_values.map(lambda v: json.dumps(v).encode()), shaped.map(lambda v: json.dumps(v).encode()),
                   st.binary(max_size=40))


@settings(max_examples=300, deadline=None)
@given(body=bodies, status=st.sampled_from([200, 200, 200, 400, 503]))
def test_any_answer_at_all_gives_samples_or_a_telemetry_error_and_no_read_ever_raises(fake_server, body, status):
    fake_server.default = answering(body, status)
    client = PrometheusClient(fake_server.url, timeout_s=5)
    try:
        samples = client.query("up")
    except TelemetryError:
        pass
    else:
        assert all(isinstance(s.value, float) and math.isfinite(s.at_s) for s in samples)
        assert all(isinstance(v, str) for s in samples for v in s.labels.values())
    links = LinkTelemetry(client, "{site} {pool}", "{site} {pool}", stale_after_s=300, clock=time.time)
    reading = links.read([lab_pool("lab-1")])
    assert len(reading.fresh) + len(reading.last_known_good) + len(reading.declared) == 1
    assert reading.summary()
    ServiceTimeTelemetry(client, service_queries()).observe([SERVING])
    SiteTelemetry(client, {"site_requests": "a", "route_latency_buckets": "b"}).read()


def test_a_prometheus_that_never_answers_costs_two_timeouts_not_one_per_query():
    """Two queries in a row with no answer: the client asks no more until the next read — links,
    service times and site series alike — and every link falls back."""
    import socket
    import time as clock_time

    from hetplace.engine.snapshot import LinkState, Pool, Resources
    from hetplace.telemetry.prometheus import GroupRef, LinkTelemetry, ServiceTimeTelemetry, SiteTelemetry
    from hetplace.config import Settings

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)            # accepts connections, never answers
    try:
        client = PrometheusClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.5)
        links = {f"site-{n}": LinkState(2000.0, 25.0) for n in range(12)}
        pool = Pool("lab-cpu", "cpu", "eu-west-1", "cloud-eu", Resources(4.0, 8e9, 0), 4, 0.2, links)
        queries = Settings().queries
        telemetry = LinkTelemetry(client, queries["link_bandwidth_bytes"], queries["link_rtt_seconds"], 300.0,
                                  clock_time.time)
        groups = [GroupRef("ns", f"w{n}", "lab-cpu", "v") for n in range(20)]
        reading = telemetry.read([pool])
        service = ServiceTimeTelemetry(client, queries).observe(groups)
        sites = SiteTelemetry(client, queries).read()
        client.new_read()
        again, _ = finished_within(5, lambda: telemetry.read([pool]))
    finally:
        silent.close()
    assert len(reading.declared) == 12 and not reading.fresh
    assert len(reading.errors) == 2, "only two queries were sent (each sent one times out: an error)"
    assert "not asked: 2 queries in a row got no answer" in reading.reasons[("site-11", "lab-cpu")]
    assert service.errors == () and len(service.reasons) == 20 and not service.observed_ms
    assert sites.errors == () and all("not asked" in r for r in sites.reasons)
    assert len(again.errors) == 2, "the next read asks Prometheus again"


@pytest.mark.parametrize("first, later", [
    pytest.param(("1700000000", "250000"), ("1700000000", "250000"),
                 id="a sample that only grows older says the same thing at every read"),
    pytest.param(("1700000100", "0.31"), ("1700000100", "0.33"),
                 id="a bad value that wobbles in its third digit says the same thing at every read"),
])
def test_the_reasons_status_shows_do_not_change_from_read_to_read(fake_prometheus, first, later):
    """What TelemetryFresh says goes into every placed workload's status: a reason that changed at
    every read (a sample's age, a value's last digits) would rewrite them all each cycle."""
    from hetplace.telemetry.prometheus import LinkTelemetry

    def answer_with(at: str, bandwidth: str) -> None:
        for what, value in (("bandwidth", bandwidth), ("rtt", "0.025")):
            fake_prometheus.behaviours[f"{what} {BAD[0]} {BAD[1]}"] = answering({
                "status": "success", "data": {"resultType": "vector", "result": [
                    {"metric": {}, "value": [float(at), value]}]}})

    clock = Clock()
    clock.offset = 1_700_000_400 - clock()
    telemetry = LinkTelemetry(PrometheusClient(fake_prometheus.url, timeout_s=1), "bandwidth {site} {pool}",
                              "rtt {site} {pool}", stale_after_s=300, clock=clock)
    pool = pool_from_spec("lab-gpu", a_pool("lab-gpu").site("lab-cloud").link(BAD[0], 2000, 25).build().spec)
    answer_with(*first)
    before = telemetry.read([pool]).summary()
    clock.offset += 37
    answer_with(*later)
    after = telemetry.read([pool]).summary()
    assert "fresh" in before and before == after
