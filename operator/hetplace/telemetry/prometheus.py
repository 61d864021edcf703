"""A small client of the Prometheus HTTP API (instant queries), and link observations read through it.

Observations carry their sample time; `LinkTelemetry` keeps the last good reading of every link,
so a failed or stale scrape falls back to it, then to the declared link, and says which
(DESIGN §4, the `TelemetryFresh` condition).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from hetplace.engine.observed import LinkObservation
from hetplace.engine.snapshot import Pool


class TelemetryError(Exception):
    """Prometheus could not be read; the message says what was asked and what came back."""


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float
    at_s: float        # the sample's timestamp (Unix seconds)


class PrometheusClient:
    """Instant queries against /api/v1/query."""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, promql: str) -> list[Sample]:
        url = f"{self.base_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                body = json.load(response)
        except urllib.error.HTTPError as refused:     # 4xx/5xx still carry Prometheus's reason
            try:
                body = json.load(refused)
            except (json.JSONDecodeError, OSError):
                raise TelemetryError(f"query {promql!r} at {self.base_url}: {refused}") from None
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError, OSError) as failed:
            raise TelemetryError(f"query {promql!r} at {self.base_url}: {failed}") from None
        if body.get("status") != "success":
            raise TelemetryError(f"query {promql!r} at {self.base_url}: {body.get('errorType')}: {body.get('error')}")
        data = body.get("data", {})
        if data.get("resultType") not in ("vector", "scalar"):
            raise TelemetryError(f"query {promql!r}: expected an instant vector, got {data.get('resultType')}")
        if data["resultType"] == "scalar":
            at, value = data["result"]
            return [Sample({}, float(value), float(at))]
        return [Sample(item.get("metric", {}), float(item["value"][1]), float(item["value"][0]))
                for item in data.get("result", [])]


@dataclass(frozen=True)
class LinkReading:
    """The links to plan with, and how fresh each one is."""

    observations: tuple[LinkObservation, ...]
    fresh: tuple[tuple[str, str], ...]          # (site, pool) read in this scrape
    last_known_good: tuple[tuple[str, str], ...]  # (site, pool) from an earlier scrape, within staleness
    declared: tuple[tuple[str, str], ...]       # (site, pool) with no usable reading: the spec's value
    errors: tuple[str, ...] = ()

    @property
    def all_fresh(self) -> bool:
        return not self.last_known_good and not self.declared and not self.errors


@dataclass
class LinkTelemetry:
    """Reads every declared link's bandwidth and RTT through the configured PromQL templates."""

    client: PrometheusClient
    bandwidth_query: str            # template with {site} and {pool}; bytes/s
    rtt_query: str                  # template with {site} and {pool}; seconds
    stale_after_s: float
    clock: Callable[[], float]
    _last_good: dict[tuple[str, str], tuple[LinkObservation, float]] = field(default_factory=dict)

    def read(self, pools: Iterable[Pool]) -> LinkReading:
        now = self.clock()
        observations, fresh, kept, declared, errors = [], [], [], [], []
        for pool in pools:
            for site in sorted(pool.links):
                key = (site, pool.name)
                try:
                    reading = self._read_one(site, pool.name, now)
                except TelemetryError as failed:
                    errors.append(str(failed))
                    reading = None
                if reading is not None:
                    self._last_good[key] = (reading, now)
                    observations.append(reading)
                    fresh.append(key)
                elif key in self._last_good and now - self._last_good[key][1] <= self.stale_after_s:
                    observations.append(self._last_good[key][0])
                    kept.append(key)
                else:
                    declared.append(key)
        return LinkReading(tuple(observations), tuple(fresh), tuple(kept), tuple(declared), tuple(errors))

    def _read_one(self, site: str, pool: str, now: float) -> LinkObservation | None:
        names = {"site": site, "pool": pool, "namespace": "", "workload": "", "variant": ""}
        bandwidth = self.client.query(self.bandwidth_query.format(**names))
        rtt = self.client.query(self.rtt_query.format(**names))
        if not bandwidth or not rtt:
            return None
        newest = min(bandwidth[0].at_s, rtt[0].at_s)
        bytes_per_s, rtt_s = bandwidth[0].value, rtt[0].value
        if now - newest > self.stale_after_s or not (math.isfinite(bytes_per_s) and bytes_per_s > 0) \
                or not (math.isfinite(rtt_s) and rtt_s >= 0):
            return None
        return LinkObservation(site, pool, bytes_per_s / 1000.0, rtt_s * 1000.0)


@dataclass(frozen=True)
class GroupRef:
    """A running group, as the Triton metric labels name it."""

    namespace: str
    workload: str
    pool: str
    variant: str


@dataclass
class ServiceTimeTelemetry:
    """Triton's own counters per running group: mean compute time per request (request duration
    minus queueing, over successful requests), in ms. A group with no requests yet has no reading."""

    client: PrometheusClient
    queries: Mapping[str, str]       # request_duration_us, queue_duration_us, request_success

    def read(self, groups: Iterable[GroupRef]) -> tuple[dict[GroupRef, float], tuple[str, ...]]:
        observed, errors = {}, []
        for g in groups:
            names = {"namespace": g.namespace, "workload": g.workload, "pool": g.pool, "variant": g.variant, "site": ""}
            try:
                duration, queue, success = [self.client.query(self.queries[q].format(**names))
                                            for q in ("request_duration_us", "queue_duration_us", "request_success")]
            except TelemetryError as failed:
                errors.append(str(failed))
                continue
            if not duration or not success or success[0].value <= 0:
                continue
            compute_us = (duration[0].value - (queue[0].value if queue else 0.0)) / success[0].value
            if math.isfinite(compute_us) and compute_us > 0:
                observed[g] = compute_us / 1000.0
        return observed, tuple(errors)


@dataclass(frozen=True)
class SiteReading:
    """What clients at each site see, per workload (NAMESPACE/NAME, site): request rate, and the
    cumulative latency histogram as (upper bound in seconds, rate of requests at or under it)."""

    requests_per_second: Mapping[tuple[str, str], float]
    latency_buckets: Mapping[tuple[str, str], tuple[tuple[float, float], ...]]
    errors: tuple[str, ...] = ()


@dataclass
class SiteTelemetry:
    """Reads the fleet's per-site traffic and client-side latency histograms in one query each
    (series labelled namespace, workload, site — and le for the histogram)."""

    client: PrometheusClient
    queries: Mapping[str, str]

    def read(self) -> SiteReading:
        rates: dict[tuple[str, str], float] = {}
        buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
        errors = []
        try:
            for s in self.client.query(self.queries["site_requests"]):
                if math.isfinite(s.value) and s.value >= 0 and _site_key(s):
                    rates[_site_key(s)] = s.value
        except TelemetryError as failed:
            errors.append(str(failed))
        try:
            for s in self.client.query(self.queries["route_latency_buckets"]):
                le = s.labels.get("le")
                if _site_key(s) and le is not None and math.isfinite(s.value):
                    buckets.setdefault(_site_key(s), []).append((float(le), s.value))
        except TelemetryError as failed:
            errors.append(str(failed))
        return SiteReading(rates, {k: tuple(sorted(v)) for k, v in buckets.items()}, tuple(errors))


def _site_key(s: Sample) -> tuple[str, str] | None:
    namespace, workload, site = (s.labels.get(k) for k in ("namespace", "workload", "site"))
    return (f"{namespace}/{workload}", site) if namespace and workload and site else None


def latency_quantile_s(buckets: tuple[tuple[float, float], ...], percentile: float) -> float | None:
    """The latency at `percentile` from a cumulative histogram, interpolated within the bucket it
    falls in (as PromQL's histogram_quantile); None with no requests, or when it falls in the
    +Inf bucket (then only a lower bound is known)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = percentile / 100.0 * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in buckets:
        if count >= rank:
            if math.isinf(upper_bound):
                return None
            if count == lower_count:
                return upper_bound
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = upper_bound, count
    return None
