"""Link telemetry read from a real Prometheus (Debian's, started here) scraping an exporter this test
runs, through the operator's PromQL templates; stale and failed reads fall back and say so."""

from __future__ import annotations

import math
import time

import pytest
from servers import free_port, link_exporter, prometheus, wait_for  # noqa: F401  (fixtures)
from test_render import FACTORY

from hetplace.api.load import load_manifests
from hetplace.config import DEFAULT_QUERIES
from hetplace.engine.from_api import pool_from_spec
from hetplace.telemetry.prometheus import (
    GroupRef,
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
        observed, errors = telemetry.read([group, idle])
        assert errors == ()
        return observed if group in observed else None

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
