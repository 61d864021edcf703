"""What a site produces for the operator: the series it reads by default (docs/telemetry.md) —
site traffic, client latency, link bandwidth and RTT — plus the gateway's own counters, and the
estimators that turn timed requests and light probes into link figures.

Link figures, and what they can and cannot see:

* **Bandwidth, passively.** Every upstream request gives one sample: the bytes it moved (body sent
  plus body received) and the time from the first byte sent to the last byte received. Over a
  window (the last `window_samples`, none older than `window_s`) the estimator fits
  `seconds = a + bytes / bandwidth` by least squares: the intercept `a` soaks up RTT and the
  model's compute time, the slope is the link's transfer time per byte. This needs requests of
  different sizes (a spread of at least `min_spread` between the smallest and largest) and a
  positive slope; a site that always sends the same payload, or a link so fast that transfer time
  drowns in compute-time noise (loopback, a LAN), gives no passive figure — and then none is
  exported rather than a guess (a throughput of bytes/elapsed would count compute time as link
  time and make the link look saturated). It sees the path the requests take, gateway to pool,
  including any proxy; it cannot see other traffic sharing the link, so it is the rate the
  requests achieve, not capacity left.
* **Bandwidth, actively**, where the link carried no traffic for `idle_s`: a pair of requests
  the server reads in full and refuses without running the model (a JSON body without `inputs`,
  padded to a size) — one small, one large — into a second window fitted the same way, on the bytes
  that actually moved (a refusal may quote the body back). Probe bytes, both ways, are paid before
  they are sent from a `ProbeBudget` that accrues at 5% of the link's last estimated bandwidth.
* **RTT**: the minimum over the window of TCP connection set-up times of real requests (one
  round trip; pooled connections make these rare) and of timed `GET /v2/health/live` probes (one
  round trip plus the server's near-zero handling), sent when no sample is recent. The minimum,
  because queueing only ever adds.

A figure older than `stale_s` is withdrawn from the exposition, so the operator falls back to its
last known good or declared value instead of reading an old one as fresh.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SITE_LABELS = ("namespace", "workload", "site")
LINK_LABELS = ("site", "pool")
# Client-seen latency for SLOs of 5 ms to 2 s: about four buckets per octave-and-a-half, so the
# operator's interpolation inside a bucket (as histogram_quantile does) errs by well under a bucket.
LATENCY_BUCKETS_S = (0.001, 0.002, 0.003, 0.004, 0.005, 0.0065, 0.008, 0.01, 0.0125, 0.015, 0.02, 0.025,
                     0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65,
                     0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 10.0)
PROBE_SHARE = 0.05                      # probe traffic stays within 5% of the link's bandwidth
ASSUMED_BANDWIDTH_BYTES = 125_000.0     # 1 Mbit/s: what a budget pays at before any estimate


class FailureReason(str, Enum):
    """Why an upstream attempt did not serve (the `reason` of hetplace_gateway_upstream_errors_total)."""

    CONNECT = "connect"          # refused, reset, unreachable, DNS, TLS handshake
    TIMEOUT = "timeout"          # no answer within the attempt's time
    SERVER_ERROR = "server_error"  # a 5xx (HTTP) or UNAVAILABLE/INTERNAL-like status (gRPC)
    PROTOCOL = "protocol"        # the connection broke mid-answer or the answer was garbled


class SiteMetrics:
    """Every series a site exports, in one registry of its own (tests make their own)."""

    def __init__(self, site: str, registry: CollectorRegistry | None = None) -> None:
        self.site = site
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("hetplace_site_requests", "Requests clients at this site sent, by workload.",
                                SITE_LABELS, registry=r)
        self.duration = Histogram("hetplace_request_duration_seconds",
                                  "End-to-end latency clients at this site saw through the gateway, in seconds.",
                                  SITE_LABELS, buckets=LATENCY_BUCKETS_S, registry=r)
        self.bandwidth = Gauge("hetplace_link_bandwidth_bytes",
                               "Bandwidth from this site to the pool, bytes per second, measured from requests "
                               "and light probes.", LINK_LABELS, registry=r)
        self.rtt = Gauge("hetplace_link_rtt_seconds", "Round-trip time from this site to the pool, in seconds.",
                         LINK_LABELS, registry=r)
        self.failovers = Counter("hetplace_gateway_failovers",
                                 "Times a request moved on to its next route after one failed.", SITE_LABELS,
                                 registry=r)
        self.upstream_errors = Counter("hetplace_gateway_upstream_errors",
                                       "Upstream attempts that did not serve, by pool and reason.",
                                       ("pool", "reason"), registry=r)
        self.route_in_use = Gauge("hetplace_gateway_route_in_use",
                                  "1 for the route that served the workload's last request at this site, else 0.",
                                  (*SITE_LABELS, "pool", "variant"), registry=r)
        self.reload_errors = Counter("hetplace_gateway_routes_reload_errors",
                                     "Routes documents that could not be used; the last good ones were kept.",
                                     registry=r)
        self.last_load = Gauge("hetplace_gateway_routes_last_load_timestamp_seconds",
                               "Unix time routes were last loaded without error.", registry=r)
        self.model_conflicts = Counter("hetplace_gateway_model_conflicts",
                                       "Times two workloads were found serving one model name (the first by "
                                       "namespace/name wins).", ("model",), registry=r)
        self.probe_bytes = Counter("hetplace_gateway_probe_bytes",
                                   "Bytes of link probes sent and answered, by pool: what probing took from the "
                                   "link (kept within 5% of its bandwidth).", ("pool",), registry=r)
        self._in_use: dict[tuple[str, str], tuple[str, str]] = {}
        self._lock = threading.Lock()
        # (namespace, workload) -> its request counter and latency histogram: `labels()` validates and
        # locks on every call, and this runs on every request (these series are never removed)
        self._per_request: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def request(self, namespace: str, workload: str, seconds: float) -> None:
        series = self._per_request.get((namespace, workload))
        if series is None:
            series = self._per_request[namespace, workload] = (self.requests.labels(namespace, workload, self.site),
                                                               self.duration.labels(namespace, workload, self.site))
        series[0].inc()
        series[1].observe(seconds)

    def failover(self, namespace: str, workload: str) -> None:
        self.failovers.labels(namespace, workload, self.site).inc()

    def upstream_error(self, pool: str, reason: FailureReason) -> None:
        self.upstream_errors.labels(pool, reason.value).inc()

    def served_by(self, namespace: str, workload: str, pool: str, variant: str) -> None:
        """The route in use: this one 1, the one before it 0 (changes only when the route does)."""
        key = (namespace, workload)
        with self._lock:
            before = self._in_use.get(key)
            if before == (pool, variant):
                return
            self._in_use[key] = (pool, variant)
        if before is not None:
            self.route_in_use.labels(namespace, workload, self.site, *before).set(0)
        self.route_in_use.labels(namespace, workload, self.site, pool, variant).set(1)

    def routes_reload_error(self) -> None:
        self.reload_errors.inc()

    def routes_loaded(self, unix_time: float) -> None:
        self.last_load.set(unix_time)

    def model_conflict(self, model: str) -> None:
        self.model_conflicts.labels(model).inc()

    def probed(self, pool: str, size_bytes: float) -> None:
        self.probe_bytes.labels(pool).inc(size_bytes)

    def link(self, pool: str, bandwidth_bytes: float | None, rtt_seconds: float | None) -> None:
        """Publish a link's figures; None withdraws that series (no figure is better than an old one)."""
        for gauge, value in ((self.bandwidth, bandwidth_bytes), (self.rtt, rtt_seconds)):
            if value is None:
                try:
                    gauge.remove(self.site, pool)
                except KeyError:
                    pass
            else:
                gauge.labels(self.site, pool).set(value)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class TransferSample:
    at: float          # monotonic seconds
    size_bytes: float
    seconds: float


class TransferFit:
    """A windowed least-squares fit of transfer time on bytes: `seconds = intercept + bytes / bandwidth`."""

    def __init__(self, window_samples: int = 256, window_s: float = 120.0, min_samples: int = 8,
                 min_spread: float = 1.5) -> None:
        self.window_s = window_s
        self.min_samples = min_samples
        self.min_spread = min_spread
        self._samples: deque[TransferSample] = deque(maxlen=window_samples)

    def add(self, at: float, size_bytes: float, seconds: float) -> None:
        if size_bytes > 0 and seconds > 0 and math.isfinite(seconds):
            self._samples.append(TransferSample(at, size_bytes, seconds))

    def last_at(self) -> float | None:
        return self._samples[-1].at if self._samples else None

    def bandwidth_bytes(self, now: float) -> float | None:
        """Bytes per second, or None when the window cannot tell (too few samples, sizes too alike,
        no positive slope)."""
        samples = [s for s in self._samples if now - s.at <= self.window_s]
        if len(samples) < self.min_samples:
            return None
        sizes = [s.size_bytes for s in samples]
        if max(sizes) < self.min_spread * min(sizes):
            return None
        n = len(samples)
        mean_x = sum(sizes) / n
        mean_y = sum(s.seconds for s in samples) / n
        sxx = sum((x - mean_x) ** 2 for x in sizes)
        sxy = sum((s.size_bytes - mean_x) * (s.seconds - mean_y) for s in samples)
        if sxx <= 0 or sxy <= 0:
            return None
        bandwidth = sxx / sxy
        return bandwidth if 1.0 <= bandwidth <= 1e12 else None    # outside: not a reading (docs/telemetry.md)


class ProbeBudget:
    """Bytes an active probe may send on one link: they accrue at `share` of the link's last estimated
    bandwidth from an empty start, so probe bytes over any stretch from the start never exceed that
    share of what the link carried meanwhile; the balance is capped at `horizon_s` of accrual."""

    def __init__(self, share: float = PROBE_SHARE, horizon_s: float = 60.0) -> None:
        self.share = share
        self.horizon_s = horizon_s
        self._balance = 0.0
        self._since: float | None = None
        self._rate = 0.0
        self.spent_bytes = 0.0

    def accrue(self, now: float, bandwidth_bytes: float) -> None:
        # the time since the last call accrues at the lower of the figure then and now: a link whose
        # estimate just rose has not yet shown it had that bandwidth all along
        if self._since is not None and now > self._since:
            self._balance += self.share * min(self._rate, bandwidth_bytes) * (now - self._since)
        self._balance = min(self._balance, self.share * bandwidth_bytes * self.horizon_s)
        self._since = now if self._since is None else max(self._since, now)
        self._rate = bandwidth_bytes

    def affordable(self, now: float, bandwidth_bytes: float) -> float:
        self.accrue(now, bandwidth_bytes)
        return self._balance

    def spend(self, now: float, bandwidth_bytes: float, size_bytes: float) -> bool:
        """Pay for a probe of `size_bytes`; False (and nothing paid) when the balance cannot."""
        self.accrue(now, bandwidth_bytes)
        if size_bytes > self._balance:
            return False
        self._balance -= size_bytes
        self.spent_bytes += size_bytes
        return True


@dataclass(frozen=True)
class ProbePlan:
    """What to probe on a link now: an RTT probe, and/or a bandwidth pair of these body sizes."""

    rtt: bool
    bandwidth_sizes: tuple[int, int] | None


@dataclass
class LinkEstimate:
    """One link's figures from its samples (site -> pool)."""

    passive: TransferFit = field(default_factory=TransferFit)
    probed: TransferFit = field(default_factory=lambda: TransferFit(window_samples=32, window_s=600.0, min_samples=4))
    rtt_samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=64))
    budget: ProbeBudget = field(default_factory=ProbeBudget)
    last_bandwidth: tuple[float, float] | None = None      # (at, bytes/s): the last figure known

    def bandwidth_bytes(self, now: float, stale_s: float) -> float | None:
        figure = self.passive.bandwidth_bytes(now) or self.probed.bandwidth_bytes(now)
        if figure is not None:
            self.last_bandwidth = (now, figure)
            return figure
        if self.last_bandwidth and now - self.last_bandwidth[0] <= stale_s:
            return self.last_bandwidth[1]
        return None

    def rtt_seconds(self, now: float, window_s: float) -> float | None:
        recent = [seconds for at, seconds in self.rtt_samples if now - at <= window_s]
        return min(recent) if recent else None


class LinkTelemetry:
    """Link figures from this site to each pool its routes reach: samples in, gauges and probe plans out.
    Thread-safe; time is passed in (monotonic seconds)."""

    def __init__(self, metrics: SiteMetrics | None = None, *, idle_s: float = 30.0, rtt_window_s: float = 60.0,
                 stale_s: float = 300.0, max_probe_bytes: int = 64 * 1024, min_probe_bytes: int = 4 * 1024,
                 share: float = PROBE_SHARE) -> None:
        self.metrics = metrics
        self.idle_s = idle_s
        self.rtt_window_s = rtt_window_s
        self.stale_s = stale_s
        self.max_probe_bytes = max_probe_bytes
        self.min_probe_bytes = min_probe_bytes
        self.share = share
        self._links: dict[str, LinkEstimate] = {}
        self._lock = threading.Lock()

    def _link(self, pool: str) -> LinkEstimate:
        link = self._links.get(pool)
        if link is None:
            link = self._links[pool] = LinkEstimate(budget=ProbeBudget(self.share))
        return link

    def observe_transfer(self, pool: str, now: float, size_bytes: float, seconds: float) -> None:
        """A real request's bytes (sent + received) and the time from its first byte out to its last in."""
        with self._lock:
            self._link(pool).passive.add(now, size_bytes, seconds)

    def observe_probe(self, pool: str, now: float, size_bytes: float, seconds: float) -> None:
        with self._lock:
            self._link(pool).probed.add(now, size_bytes, seconds)

    def observe_rtt(self, pool: str, now: float, seconds: float) -> None:
        if seconds >= 0 and math.isfinite(seconds):
            with self._lock:
                self._link(pool).rtt_samples.append((now, seconds))

    def bandwidth_bytes(self, pool: str, now: float) -> float | None:
        with self._lock:
            return self._link(pool).bandwidth_bytes(now, self.stale_s)

    def rtt_seconds(self, pool: str, now: float) -> float | None:
        with self._lock:
            return self._link(pool).rtt_seconds(now, self.stale_s)

    def plan_probes(self, pool: str, now: float) -> ProbePlan:
        """What to probe on the link to `pool` now, paid from its budget (paid here: a plan is a promise).

        RTT: when no RTT sample is younger than the RTT window. Bandwidth: when real requests give no
        figure — none used the link for `idle_s`, or those that do are all of one size, which the fit
        cannot separate from the fixed part of their time — and the probe window has none either,
        with the large body sized to what the budget affords (at most `max_probe_bytes`, none below
        `min_probe_bytes`)."""
        with self._lock:
            link = self._link(pool)
            paying_at = link.bandwidth_bytes(now, self.stale_s) or ASSUMED_BANDWIDTH_BYTES
            recent_rtt = any(now - at <= self.rtt_window_s for at, _ in link.rtt_samples)
            rtt = not recent_rtt and link.budget.spend(now, paying_at, RTT_PROBE_BYTES)
            sizes = None
            last_real = link.passive.last_at()
            idle = last_real is None or now - last_real >= self.idle_s
            unseen = idle or link.passive.bandwidth_bytes(now) is None
            if unseen and link.probed.bandwidth_bytes(now) is None:
                large = int(min(self.max_probe_bytes,
                                link.budget.affordable(now, paying_at) - BANDWIDTH_PROBE_OVERHEAD_BYTES))
                large = large // ECHO_FACTOR
                if large >= self.min_probe_bytes:
                    small = SMALL_PROBE_BYTES
                    cost = ECHO_FACTOR * (large + small) + BANDWIDTH_PROBE_OVERHEAD_BYTES
                    if link.budget.spend(now, paying_at, cost):
                        sizes = (small, large)
        if self.metrics is not None and (rtt or sizes):     # what the plan may take from the link, at most
            self.metrics.probed(pool, (RTT_PROBE_BYTES if rtt else 0) + (cost if sizes else 0))
        return ProbePlan(rtt=rtt, bandwidth_sizes=sizes)

    def probe_spent_bytes(self, pool: str) -> float:
        with self._lock:
            return self._link(pool).budget.spent_bytes

    def publish(self, now: float, pools: list[str] | None = None) -> None:
        """Set the gauges from the current figures (withdraw a figure gone stale)."""
        if self.metrics is None:
            return
        with self._lock:
            names = list(self._links) if pools is None else pools
            figures = [(p, self._link(p).bandwidth_bytes(now, self.stale_s), self._link(p).rtt_seconds(now, self.stale_s))
                       for p in names]
        for pool, bandwidth, rtt in figures:
            self.metrics.link(pool, bandwidth, rtt)


# What a probe costs on the wire, counted against the budget: request and response with headers.
RTT_PROBE_BYTES = 400
SMALL_PROBE_BYTES = 64
BANDWIDTH_PROBE_OVERHEAD_BYTES = 1200     # two requests' and two refusals' headers
ECHO_FACTOR = 2     # a refusal may quote the body it refuses (MLServer's 422 does): a probe is paid both ways
