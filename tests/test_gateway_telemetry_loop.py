"""The site-to-operator telemetry loop closed in one test, with every part real: tritonclient sends
requests at a few rates and payload sizes through `hetplace gateway` to two MLServer processes
standing in for two pools; Debian's Prometheus scrapes the gateway's metrics every second; and the
operator's own telemetry readers (`PrometheusClient` with the default templates of
`hetplace.config`, as `hetplace run` builds them) read back what was sent: the site's request rate,
the latency at the SLO percentile, and the links' RTT and bandwidth (docs/telemetry.md)."""

from __future__ import annotations

import bisect
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from builders import a_pool
from mlserver_pools import Pool, start_pools
from servers import GatewayProcess, running_prometheus, start_gateway, wait_for

from hetplace.config import DEFAULT_QUERIES
from hetplace.engine.from_api import pool_from_spec
from hetplace.site.telemetry import LATENCY_BUCKETS_S
from hetplace.telemetry.prometheus import LinkTelemetry, PrometheusClient, SiteTelemetry, latency_quantile_s

pytestmark = pytest.mark.integration

SITE = "factory-eu-1"
NAMESPACE, WORKLOAD, MODEL = "factory", "defect-detector", "defect-detector"
SLO_PERCENTILE = 99                 # the factory workload's (manifests/examples/factory/workload.yaml)
WINDOW_S = 300                      # the `[5m]` of the default site and link templates
DECLARED_KBPS, DECLARED_RTT_MS = 2000.0, 25.0     # what the pools declare: a reading must not be these


# (requests per second, float32 values per request): 4 values is ~0.1 KB of JSON, 20 000 about 224 KB
PHASES = ((20.0, 4), (10.0, 5_000), (5.0, 20_000))
PHASE_S = 4.0


def routes_file(path: Path, decided: Pool, fallback: Pool) -> Path:
    """The detector's routes ConfigMap as the operator writes it: `decided` raw, `fallback` compressed."""
    def route(pool: Pool, encoding: str, is_decided: bool) -> dict:
        return {"pool": pool.name, "variant": "onnx", "encoding": encoding, "model": MODEL, "http": pool.http,
                "grpc": pool.grpc, "predictedLatencyMs": 20.0, "withinSlo": True, "decided": is_decided}

    document = {"version": 2, "workload": f"{NAMESPACE}/{WORKLOAD}", "generation": 1,
                "decidedAt": "2026-12-07T22:00:00Z", "model": MODEL, "sloLatencyMs": 150,
                "sites": {SITE: [route(decided, "raw", True), route(fallback, "compressed", False)]}}
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{WORKLOAD}-routes", "namespace": NAMESPACE,
                     "labels": {"app.kubernetes.io/managed-by": "hetplace"}},
        "data": {"routes.json": json.dumps(document)}}))
    return path


@dataclass
class Sent:
    """What the clients sent and saw: each request's end-to-end seconds, and anything that failed."""

    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.seconds) + len(self.errors)


def send(gateway: GatewayProcess, sent: Sent, per_second: float, values: int, duration_s: float) -> None:
    """Requests at a steady rate for `duration_s`, through tritonclient over HTTP and gRPC in turn, each
    timed from before the client builds it to after it decoded the answer."""
    http_client = triton_http.InferenceServerClient(gateway.http, network_timeout=30)
    grpc_client = triton_grpc.InferenceServerClient(gateway.grpc)
    data = np.ones(values, dtype=np.float32)
    interval_s = 1.0 / per_second
    began = next_at = time.monotonic()
    try:
        while next_at < began + duration_s:
            time.sleep(max(0.0, next_at - time.monotonic()))
            start = time.perf_counter()
            try:
                if sent.count % 2:
                    tensor = triton_grpc.InferInput("scores", [values], "FP32")
                    tensor.set_data_from_numpy(data)
                    total = grpc_client.infer(MODEL, [tensor], client_timeout=30).as_numpy("total")[0]
                else:
                    tensor = triton_http.InferInput("scores", [values], "FP32")
                    tensor.set_data_from_numpy(data, binary_data=False)   # MLServer reads JSON tensors only
                    total = http_client.infer(MODEL, [tensor]).as_numpy("total")[0]
                if total != values:
                    raise AssertionError(f"wrong answer {total} for {values} ones")
                sent.seconds.append(time.perf_counter() - start)
            except Exception as e:     # every failure a client sees counts
                sent.errors.append(f"{type(e).__name__}: {e}")
            next_at += interval_s
    finally:
        http_client.close()
        grpc_client.close()


def bucket_top_s(seconds: float) -> float:
    """The upper bound of the gateway's latency bucket that holds `seconds` (inf past the last one)."""
    i = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
    return LATENCY_BUCKETS_S[i] if i < len(LATENCY_BUCKETS_S) else math.inf


LINK_SERIES = ("hetplace_link_bandwidth_bytes", "hetplace_link_rtt_seconds")


def caught_up(gateway: GatewayProcess, client: PrometheusClient, pools) -> dict | None:
    """Each pool's (bandwidth, RTT) as the gateway exports them now (None: withheld), once Prometheus's
    latest samples are these and every link has an RTT; else None."""
    exported = {}
    for pool in pools:
        figures = tuple(gateway.sample(name, site=SITE, pool=pool) for name in LINK_SERIES)
        scraped = tuple(next((s.value for s in client.query(f'{name}{{site="{SITE}",pool="{pool}"}}')), None)
                        for name in LINK_SERIES)
        if figures != scraped or figures[1] is None:
            return None
        exported[pool] = figures
    return exported


def test_what_clients_send_through_the_gateway_is_what_the_operator_reads_back(tmp_path):
    began = time.monotonic()
    decided, fallback = start_pools(["pool-a", "pool-b"], tmp_path / "pools")
    gateway = None
    try:
        gateway = start_gateway(SITE, tmp_path, "--routes", str(routes_file(tmp_path / "routes.yaml", decided,
                                                                             fallback)))
        with running_prometheus(tmp_path / "prometheus", {"gateway": [gateway.metrics_target]}) as url:
            client = PrometheusClient(url)
            counter = (f'hetplace_site_requests_total{{namespace="{NAMESPACE}",workload="{WORKLOAD}",'
                       f'site="{SITE}"}}')
            sent = Sent()
            # one request, alone until Prometheus holds it: the counter's first sample is then 1, and
            # every later request falls inside the span rate() measures
            send(gateway, sent, 1.0, 4, 0.5)
            wait_for(lambda: [s for s in client.query(counter) if s.value == sent.count], 20,
                     "Prometheus to scrape the first request")
            for per_second, values in PHASES:
                send(gateway, sent, per_second, values, PHASE_S)
            assert sent.errors == [], sent.errors[:5]
            wait_for(lambda: [s for s in client.query(counter) if s.value == sent.count], 20,
                     f"Prometheus to scrape all {sent.count} requests")
            links = {name: pool_from_spec(name, a_pool(name).link(SITE, DECLARED_KBPS, DECLARED_RTT_MS).build().spec)
                     for name in (decided.name, fallback.name)}
            exported = wait_for(lambda: caught_up(gateway, client, links), 20,
                                "Prometheus to hold the link figures the gateway exports, an RTT for each")

            # -- read back exactly as the operator does ------------------------------------------------
            reading = SiteTelemetry(PrometheusClient(url), DEFAULT_QUERIES).read()
            link_reading = LinkTelemetry(PrometheusClient(url), DEFAULT_QUERIES["link_bandwidth_bytes"],
                                         DEFAULT_QUERIES["link_rtt_seconds"], 300.0, time.time).read(links.values())
            rtt_read = {p: client.query(DEFAULT_QUERIES["link_rtt_seconds"].format(site=SITE, pool=p))[0].value
                        for p in links}

        key = (f"{NAMESPACE}/{WORKLOAD}", SITE)
        assert (reading.errors, reading.reasons) == ((), ())
        # The template is a rate over 5 minutes: with all of the traffic inside the window it reads
        # what was sent / 300 s. Nothing is lost (the warm-up's sample of 1 starts the span, and
        # extrapolation towards zero puts it back); extrapolating to the window's end adds at most
        # 1.1 scrape intervals over a span of more than 12 s of phases: under 10%.
        assert sent.count - 1 <= reading.requests_per_second[key] * WINDOW_S <= 1.12 * sent.count, \
            (reading.requests_per_second[key], sent.count)
        # The gateway times each request within the client's timing of it, so its histogram holds
        # nothing past the bucket of the slowest request a client saw; interpolating within that
        # bucket (as histogram_quantile does) may land above that request, never above the bucket.
        observed_s = latency_quantile_s(reading.latency_buckets[key], SLO_PERCENTILE)
        assert observed_s is not None and 0 < observed_s <= bucket_top_s(max(sent.seconds)), \
            (observed_s, max(sent.seconds))

        for pool in links:
            bandwidth, rtt = exported[pool]
            # RTT through the default template (the worst of the window, so no less than the gateway's
            # figure now): a connection set-up or health probe time, on loopback well under a
            # millisecond; 50 ms allows for a loaded machine
            assert 0 < rtt <= rtt_read[pool] < 0.05, (pool, rtt, rtt_read[pool])
            if (SITE, pool) in link_reading.fresh:
                (observation,) = [o for o in link_reading.observations if o.pool == pool]
                # the worst of the window: no more bandwidth, no less RTT than the gateway exports now
                assert bandwidth is not None and 1.0 <= observation.bandwidth_kbps * 1000 <= bandwidth, \
                    (pool, observation, bandwidth)
                assert observation.rtt_ms == pytest.approx(rtt_read[pool] * 1000)
                assert observation.bandwidth_kbps != DECLARED_KBPS and observation.rtt_ms != DECLARED_RTT_MS
            else:
                # the estimator could not see this link (loopback: transfer time lost in noise) and said
                # so by exporting nothing; the operator reads that as no reading, not as a number
                assert bandwidth is None, (pool, bandwidth)
                assert (SITE, pool) in link_reading.declared
                assert link_reading.reasons[(SITE, pool)] == f"{SITE}→{pool}: no bandwidth series"
                # ... while the RTT it measured is planned with, beside the declared bandwidth
                (observation,) = [o for o in link_reading.observations if o.pool == pool]
                assert observation.bandwidth_kbps == DECLARED_KBPS
                assert observation.rtt_ms == pytest.approx(rtt_read[pool] * 1000)
        assert link_reading.errors == ()
        assert time.monotonic() - began < 60, "the loop takes under a minute"
    finally:
        if gateway is not None:
            gateway.stop()
        decided.stop()
        fallback.stop()
