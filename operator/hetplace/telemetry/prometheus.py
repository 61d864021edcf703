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
