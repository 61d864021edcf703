"""A small client of the Prometheus HTTP API (instant queries), and link observations read through it.

Observations carry their sample time; `LinkTelemetry` keeps the last good reading of every link,
so a failed or stale scrape falls back to it, then to the declared link, and says which
(docs/design.md §4, the `TelemetryFresh` condition).

What cannot be used never stops a read (docs/telemetry.md, "Answers hetplace cannot use"):

- `PrometheusClient.query` returns samples or raises `TelemetryError`, for any answer at all. An
  answer that is not what the Prometheus API defines (its JSON shape or types, any one sample
  included) fails the whole query: a proxy or exporter that garbles one sample cannot be trusted
  for its neighbours. Prometheus's own "NaN", "+Inf" and "-Inf" are well-formed, and are samples.
- The readers judge each value by what it measures: out of its plausible range, it is no reading
  of that link, group or site, with a reason naming it and the value. A failed query degrades only
  the link or group it was for; `read` never raises.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from hetplace.engine.observed import LinkObservation
from hetplace.engine.snapshot import Pool

# Beyond these a value is a unit or exporter bug, not a measurement
MIN_BANDWIDTH_BYTES_PER_S = 1.0          # what a link below 1 byte/s carries is nothing
MAX_BANDWIDTH_BYTES_PER_S = 1e12         # 8 Tbit/s: more than any site's uplink
MAX_RTT_S = 600.0                        # ten minutes: milliseconds exported as seconds, say
MAX_SERVICE_TIME_MS = 600_000.0          # ten minutes of compute per request
MAX_REQUESTS_PER_S = 1e9

MAX_ANSWER_BYTES = 64 * 1024 * 1024      # a whole fleet's site series fit many times over
_CHUNK_BYTES = 64 * 1024
_MOST_LISTED = 5                         # links named per category in a summary, then "and N more"
_EXCERPT_CHARS = 80                      # of a malformed value quoted in a message

# Prometheus writes sample values as Go formats float64, and NaN, +Inf, -Inf
_PROMETHEUS_FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN")


class TelemetryError(Exception):
    """Prometheus could not be read; the message says what was asked and what came back, and
    `problem` just what came back (for a message that names the query otherwise)."""

    def __init__(self, promql: str, base_url: str, problem: str, unanswered: bool = False,
                 asked: bool = True) -> None:
        super().__init__(f"query {_excerpt_text(repr(promql), 300)} at {base_url}: {problem}")
        self.promql = promql
        self.problem = problem
        self.unanswered = unanswered        # no answer at all (timed out, unreachable)
        self.asked = asked                  # False: not sent, Prometheus did not answer the ones before


class _Unusable(Exception):
    """An answer, or no answer, that is not a result; the message says why (becomes a TelemetryError)."""


class _Unanswered(_Unusable):
    """No answer at all: the query timed out, or Prometheus could not be reached."""


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float       # may be NaN or ±inf, as Prometheus answered: the readers judge it
    at_s: float        # the sample's timestamp (Unix seconds), finite


class PrometheusClient:
    """Instant queries against /api/v1/query. A query takes at most `timeout_s` in all: connecting,
    waiting and reading (a server that sends a byte now and then would never trip a socket timeout).

    A query with no answer costs the whole timeout: after `give_up_after` in a row (Prometheus is
    down or hung, not one query slow) the client asks no more until `new_read` — or one read of a
    fleet's links, groups and sites would take hours while Prometheus hangs."""

    def __init__(self, base_url: str, timeout_s: float = 5.0, give_up_after: int = 2) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.give_up_after = give_up_after
        self._unanswered: list[str] = []     # the last queries, in a row, that got no answer

    def new_read(self) -> None:
        """A new read of telemetry begins: ask Prometheus again."""
        self._unanswered = []

    def query(self, promql: str) -> list[Sample]:
        if len(self._unanswered) >= self.give_up_after:
            raise TelemetryError(promql, self.base_url, f"not asked: {len(self._unanswered)} queries in a row got "
                                 f"no answer ({self._unanswered[-1]})", unanswered=True, asked=False)
        url = f"{self.base_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            samples = _samples(*self._fetch(url))
        except _Unanswered as unanswered:
            self._unanswered.append(str(unanswered))
            raise TelemetryError(promql, self.base_url, str(unanswered), unanswered=True) from None
        except _Unusable as unusable:
            self._unanswered = []
            raise TelemetryError(promql, self.base_url, str(unusable)) from None
        self._unanswered = []
        return samples

    def _fetch(self, url: str) -> tuple[int, bytes]:
        # A worker thread, so that name resolution and a trickle of headers are inside the deadline
        # too. Past it the worker is abandoned (a daemon): it stops at its next read of the body, or
        # once the server closes or stays silent for `timeout_s`
        deadline = time.monotonic() + self.timeout_s
        outcome: list[tuple[int, bytes] | str] = []
        worker = threading.Thread(target=lambda: outcome.append(self._download(url, deadline)),
                                  name="prometheus-query", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if not outcome:
            raise _Unanswered(f"timed out after {self.timeout_s:g} s")
        if isinstance(outcome[0], str):
            unanswered = outcome[0].startswith(("timed out", "cannot reach"))
            raise (_Unanswered if unanswered else _Unusable)(outcome[0])
        return outcome[0]

    def _download(self, url: str, deadline: float) -> tuple[int, bytes] | str:
        """The HTTP status and body, or why there is none (it runs in a thread of its own: nothing
        may escape it)."""
        try:
            try:
                response = urllib.request.urlopen(url, timeout=self.timeout_s)
            except urllib.error.HTTPError as refused:     # 4xx/5xx still carry Prometheus's reason
                response = refused
            with response:
                body, size = [], 0
                while chunk := response.read1(_CHUNK_BYTES):
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        return f"the answer is over {MAX_ANSWER_BYTES} bytes"
                    if time.monotonic() > deadline:
                        return f"timed out after {self.timeout_s:g} s"
                    body.append(chunk)
                return response.status, b"".join(body)
        except urllib.error.URLError as unreachable:
            return f"cannot reach {self.base_url}: {_excerpt_text(str(unreachable.reason), 200)}"
        except TimeoutError:
            return f"timed out after {self.timeout_s:g} s"
        except Exception as failed:   # noqa: BLE001 — any failure of the HTTP stack is a failed query
            return _excerpt_text(f"{type(failed).__name__}: {failed}", 200)


def _samples(http_status: int, body: bytes) -> list[Sample]:
    """The samples of an instant query's answer, or _Unusable saying what is wrong with it."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        start = _excerpt_text(repr(body[:_EXCERPT_CHARS]))
        raise _Unusable(f"HTTP {http_status}, an answer that is not JSON: {start}") from None
    if not 200 <= http_status < 300 and not (isinstance(answer, dict) and answer.get("status") == "error"):
        raise _Unusable(f"HTTP {http_status}: {_excerpt(answer)}")
    if not isinstance(answer, dict):
        raise _Unusable(f"the answer is not a JSON object: {_excerpt(answer)}")
    if answer.get("status") == "error":
        error_type, error = answer.get("errorType"), answer.get("error")
        raise _Unusable(f"{_excerpt_text(str(error_type))}: {_excerpt_text(str(error), 300)}")
    if answer.get("status") != "success":
        raise _Unusable(f'status is neither "success" nor "error": {_excerpt(answer.get("status"))}')
    data = answer.get("data")
    if not isinstance(data, dict):
        raise _Unusable(f"data is not an object: {_excerpt(data)}")
    result_type, result = data.get("resultType"), data.get("result")
    if result_type == "scalar":
        at_s, value = _time_and_value(result, "result")
        return [Sample({}, value, at_s)]
    if result_type != "vector":
        raise _Unusable(f"expected an instant vector, got {_excerpt(result_type)}")
    if not isinstance(result, list):
        raise _Unusable(f"result is not a list: {_excerpt(result)}")
    return [_sample(item, f"result[{i}]") for i, item in enumerate(result)]


def _sample(item: object, where: str) -> Sample:
    if not isinstance(item, dict):
        raise _Unusable(f"{where} is not an object: {_excerpt(item)}")
    labels = item.get("metric")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise _Unusable(f"{where}.metric is not an object of string labels: {_excerpt(labels)}")
    if "value" not in item and "histogram" in item:
        raise _Unusable(f"{where} is a native histogram, not a float sample")
    at_s, value = _time_and_value(item.get("value"), f"{where}.value")
    return Sample(dict(labels), value, at_s)


def _time_and_value(pair: object, where: str) -> tuple[float, float]:
    if not (isinstance(pair, list) and len(pair) == 2):
        raise _Unusable(f'{where} is not a [time, "number"] pair: {_excerpt(pair)}')
    at, value = pair
    at_s = _finite(at)
    if at_s is None:
        raise _Unusable(f"{where} has no finite time in seconds: {_excerpt(pair)}")
    if not (isinstance(value, str) and _PROMETHEUS_FLOAT.fullmatch(value)):
        raise _Unusable(f'{where} has no "number" (a float as Prometheus writes it): {_excerpt(pair)}')
    return at_s, float(value)


def _finite(number: object) -> float | None:
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        return None
    try:
        seconds = float(number)
    except OverflowError:          # a JSON integer of hundreds of digits
        return None
    return seconds if math.isfinite(seconds) else None


def _excerpt(value: object) -> str:
    """A JSON value as a message can quote it: short."""
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        text = f"a {type(value).__name__}"
    return _excerpt_text(text)


def _excerpt_text(text: str, most_chars: int = _EXCERPT_CHARS) -> str:
    return text if len(text) <= most_chars else text[:most_chars - 1] + "…"


def _implausible(what: str, value: float, unit: str, low: float, high: float, low_text: str = "") -> str | None:
    """Why `value` is no reading of `what`, or None: within [low, high] it is one."""
    shown = f"{what} {float(f'{value:.2g}'):g} {unit}"   # two digits: noise in a bad value rewrites no status
    if math.isnan(value):
        return f"{shown} is not a number"
    if math.isinf(value):
        return f"{shown} is not finite"
    if value < low:
        return f"{shown} is negative" if low == 0 else f"{shown} is below {low_text or f'{low:g} {unit}'}"
    if value > high:
        return f"{shown} is over {high:g} {unit}"
    return None


def _ask(client: PrometheusClient, template: str, names: Mapping[str, str]) -> list[Sample]:
    try:
        promql = template.format(**names)
    except (KeyError, IndexError, ValueError, AttributeError) as unfilled:   # checked at start; not here
        raise TelemetryError(template, client.base_url, f"the template cannot be filled in: {unfilled!r}") from None
    return client.query(promql)


def link_name(link: tuple[str, str]) -> str:
    site, pool = link
    return f"{site}→{pool}"


@dataclass(frozen=True)
class LinkReading:
    """The links to plan with, and how fresh each one is."""

    observations: tuple[LinkObservation, ...]
    fresh: tuple[tuple[str, str], ...]          # (site, pool) read in this scrape
    last_known_good: tuple[tuple[str, str], ...]  # (site, pool) from an earlier scrape, within staleness
    declared: tuple[tuple[str, str], ...]       # (site, pool) with no usable reading: the spec's value
    errors: tuple[str, ...] = ()                # queries that failed, with the query and the server
    reasons: Mapping[tuple[str, str], str] = field(default_factory=dict)   # (site, pool) not fresh -> why

    @property
    def all_fresh(self) -> bool:
        return not self.last_known_good and not self.declared and not self.errors

    def summary(self) -> str:
        """One line for the TelemetryFresh message: which links are fresh, and why the others are not,
        e.g. "2 links fresh (a→b, c→d); 1 on last-known-good (x→y: bandwidth 1e-300 bytes/s is below
        1 byte/s); 1 on the declared value (e→f: bandwidth query: timed out after 5 s)"."""
        if not (self.fresh or self.last_known_good or self.declared):
            return "no links to read"
        links = "link" if len(self.fresh) == 1 else "links"
        parts = [f"{len(self.fresh)} {links} fresh" + _listed([link_name(k) for k in self.fresh])]
        for category, keys in (("on last-known-good", self.last_known_good), ("on the declared value", self.declared)):
            if keys:
                why = [_excerpt_text(self.reasons.get(k, link_name(k)), 160) for k in keys]
                parts.append(f"{len(keys)} {category}" + _listed(why))
        return "; ".join(parts)


def _listed(items: list[str]) -> str:
    if not items:
        return ""
    more = len(items) - _MOST_LISTED
    return f" ({', '.join(items[:_MOST_LISTED])}{f' and {more} more' if more > 0 else ''})"


@dataclass
class LinkTelemetry:
    """Reads every declared link's bandwidth and RTT through the configured PromQL templates."""

    client: PrometheusClient
    bandwidth_query: str            # template with {site} and {pool}; bytes/s
    rtt_query: str                  # template with {site} and {pool}; seconds
    stale_after_s: float
    clock: Callable[[], float]
    # ((site, pool), "bandwidth" | "RTT") -> (the last good value: bytes/s or s, when it was read)
    _last_good: dict[tuple[tuple[str, str], str], tuple[float, float]] = field(default_factory=dict)

    def read(self, pools: Iterable[Pool]) -> LinkReading:
        """Never raises. Bandwidth and RTT fall back each on its own — to the last good reading of that
        figure, then to the declared value — so a site that measures RTT but cannot see the link's rate
        (a gateway withholds a bandwidth it cannot estimate) still plans with the RTT it measured. A
        link is as fresh as its staler figure; `reasons` says which figure fell back and why."""
        now = self.clock()
        observations, fresh, kept, declared, errors = [], [], [], [], []
        reasons: dict[tuple[str, str], str] = {}
        for pool in pools:
            for site in sorted(pool.links):
                key = (site, pool.name)
                figures, why, worst = {}, [], "fresh"
                for what in ("bandwidth", "RTT"):
                    try:
                        value = self._read_figure(what, site, pool.name, now)
                    except TelemetryError as failed:
                        if failed.asked:
                            errors.append(str(failed))
                        value = failed.problem
                    if not isinstance(value, str):
                        self._last_good[(key, what)] = (value, now)
                        figures[what] = value
                        continue
                    why.append(value)
                    held = self._last_good.get((key, what))
                    if held is not None and now - held[1] <= self.stale_after_s:
                        figures[what] = held[0]
                        worst = "declared" if worst == "declared" else "kept"
                    else:
                        worst = "declared"
                if why:
                    reasons[key] = f"{link_name(key)}: {'; '.join(why)}"
                if figures:     # a figure not measured is the declared one
                    link = pool.links[site]
                    observations.append(LinkObservation(site, pool.name,
                                                         figures.get("bandwidth", link.bandwidth_kbps * 1000.0) / 1000.0,
                                                         figures.get("RTT", link.rtt_ms / 1000.0) * 1000.0))
                {"fresh": fresh, "kept": kept, "declared": declared}[worst].append(key)
        return LinkReading(tuple(observations), tuple(fresh), tuple(kept), tuple(declared), tuple(errors), reasons)

    def _read_figure(self, what: str, site: str, pool: str, now: float) -> float | str:
        """The link's bandwidth (bytes/s) or RTT (s), or why there is none."""
        names = {"site": site, "pool": pool, "namespace": "", "workload": "", "variant": ""}
        sample = self._first(what, self.bandwidth_query if what == "bandwidth" else self.rtt_query, names)
        if isinstance(sample, str):
            return sample
        if now - sample.at_s > self.stale_after_s:
            # not its age: the reason goes into status, which must not be rewritten every read
            return f"the {what} sample is older than {self.stale_after_s:g} s"
        if what == "bandwidth":
            implausible = _implausible("bandwidth", sample.value, "bytes/s", MIN_BANDWIDTH_BYTES_PER_S,
                                       MAX_BANDWIDTH_BYTES_PER_S, low_text="1 byte/s")
        else:
            implausible = _implausible("RTT", sample.value, "s", 0.0, MAX_RTT_S)
        return implausible or sample.value

    def _first(self, what: str, template: str, names: Mapping[str, str]) -> Sample | str:
        """The query's first series (a template should aggregate to one), or why there is none."""
        try:
            samples = _ask(self.client, template, names)
        except TelemetryError as failed:
            raise TelemetryError(failed.promql, self.client.base_url, f"{what} query: {failed.problem}",
                                 failed.unanswered, failed.asked) from None
        return samples[0] if samples else f"no {what} series"


@dataclass(frozen=True)
class GroupRef:
    """A running group, as the Triton metric labels name it."""

    namespace: str
    workload: str
    pool: str
    variant: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.workload} on {self.pool} ({self.variant})"


@dataclass(frozen=True)
class ServiceTimeReading:
    """Each running group's observed service time, and why the others have none."""

    observed_ms: Mapping[GroupRef, float]
    errors: tuple[str, ...] = ()                            # queries that failed, with the query and the server
    reasons: Mapping[GroupRef, str] = field(default_factory=dict)   # group with no reading -> why


@dataclass
class ServiceTimeTelemetry:
    """Triton's own counters per running group: mean compute time per request (request duration
    minus queueing, over successful requests), in ms. A group with no requests yet has no reading."""

    client: PrometheusClient
    queries: Mapping[str, str]       # request_duration_us, queue_duration_us, request_success

    def observe(self, groups: Iterable[GroupRef]) -> ServiceTimeReading:
        """Never raises: a group that cannot be read has its reason in `reasons`."""
        observed, errors, reasons = {}, [], {}
        for g in groups:
            try:
                service_time = self._service_time_ms(g)
            except TelemetryError as failed:
                if failed.asked:
                    errors.append(str(failed))
                service_time = failed.problem
            if isinstance(service_time, float):
                observed[g] = service_time
            else:
                reasons[g] = f"{g}: {service_time}"
        return ServiceTimeReading(observed, tuple(errors), reasons)

    def _service_time_ms(self, g: GroupRef) -> float | str:
        """The group's observed service time, or why there is none."""
        names = {"namespace": g.namespace, "workload": g.workload, "pool": g.pool, "variant": g.variant, "site": ""}
        rates: dict[str, float | None] = {}
        for name, unit in (("request_duration_us", "µs/s"), ("queue_duration_us", "µs/s"),
                           ("request_success", "requests/s")):
            try:
                samples = _ask(self.client, self.queries[name], names)
            except TelemetryError as failed:
                raise TelemetryError(failed.promql, self.client.base_url, f"{name} query: {failed.problem}",
                                     failed.unanswered, failed.asked) from None
            rates[name] = samples[0].value if samples else None
            if samples and (why := _implausible(f"{name} rate", samples[0].value, unit, 0.0, math.inf)):
                return why
        if rates["request_duration_us"] is None or rates["request_success"] is None:
            return "no request_duration_us or request_success series"
        if rates["request_success"] == 0:
            return "no requests yet"
        compute_ms = (rates["request_duration_us"] - (rates["queue_duration_us"] or 0.0)) / \
            rates["request_success"] / 1000.0
        if not compute_ms > 0:      # queueing counted after its request's duration, between two scrapes
            return f"service time {compute_ms:g} ms is not positive"
        return _implausible("service time", compute_ms, "ms", 0.0, MAX_SERVICE_TIME_MS) or compute_ms


@dataclass(frozen=True)
class SiteReading:
    """What clients at each site see, per workload (NAMESPACE/NAME, site): request rate, and the
    cumulative latency histogram as (upper bound in seconds, rate of requests at or under it)."""

    requests_per_second: Mapping[tuple[str, str], float]
    latency_buckets: Mapping[tuple[str, str], tuple[tuple[float, float], ...]]
    errors: tuple[str, ...] = ()        # queries that failed, with the query and the server
    reasons: tuple[str, ...] = ()       # series that are no reading, each naming its workload and site


@dataclass
class SiteTelemetry:
    """Reads the fleet's per-site traffic and client-side latency histograms in one query each
    (series labelled namespace, workload, site — and le for the histogram)."""

    client: PrometheusClient
    queries: Mapping[str, str]

    def read(self) -> SiteReading:
        """Never raises: a series that is no reading is left out, with its reason in `reasons`."""
        errors: list[str] = []
        reasons: list[str] = []
        rates: dict[tuple[str, str], float] = {}
        for s, key in self._series("site_requests", errors, reasons):
            why = _implausible("request rate", s.value, "requests/s", 0.0, MAX_REQUESTS_PER_S)
            if why:
                reasons.append(f"{key[0]} at {key[1]}: {why}")
            else:
                rates[key] = s.value
        buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
        spoiled: dict[tuple[str, str], str] = {}     # one unusable bucket makes the whole histogram wrong
        for s, key in self._series("route_latency_buckets", errors, reasons):
            le = s.labels.get("le")
            le_s = float(le) if le is not None and _PROMETHEUS_FLOAT.fullmatch(le) and le != "NaN" else None
            why = (f"bucket le={_excerpt(le)} is not a number of seconds" if le_s is None
                   else _implausible(f"bucket le={le_s:g} rate", s.value, "requests/s", 0.0, MAX_REQUESTS_PER_S))
            if why:
                spoiled.setdefault(key, f"{key[0]} at {key[1]}: latency histogram: {why}")
            else:
                buckets.setdefault(key, []).append((le_s, s.value))
        reasons.extend(spoiled.values())
        usable = {k: tuple(sorted(v)) for k, v in buckets.items() if k not in spoiled}
        return SiteReading(rates, usable, tuple(errors), tuple(reasons))

    def _series(self, name: str, errors: list[str], reasons: list[str]) -> list[tuple[Sample, tuple[str, str]]]:
        """The query's series with their (workload, site); a failure or an unlabelled series is noted."""
        try:
            samples = _ask(self.client, self.queries[name], {})
        except TelemetryError as failed:
            if failed.asked:
                errors.append(str(failed))
            else:
                reasons.append(f"{name}: {failed.problem}")
            return []
        keyed = []
        for s in samples:
            key = _site_key(s)
            if key is None:
                reasons.append(f"a {name} series without namespace, workload and site labels: {_excerpt(s.labels)}")
            else:
                keyed.append((s, key))
        return keyed


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
