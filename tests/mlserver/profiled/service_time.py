"""The service-time distribution of a profiled model: a shifted exponential fixed by a variant's profile.

Pure and free of MLServer, so the tests' own process can check a profile before a server starts.

Why a shifted exponential. The engine (operator/hetplace/engine/queueing.py, docs/design.md §3) reads
a profile as two numbers: `latencyMs`, the mean service time S, which sets the offered load λ·S and
the M/M/c wait; and `tailLatencyMs`, the service time at the SLO percentile q (`service_quantile_s`
uses it from p90 up, and the mean below). A pure exponential with mean S has its q-quantile fixed at
S·ln(1/(1−q)) (4.6·S at p99), so it cannot honour a profile such as 20 ms mean / 35 ms p99. Adding a
constant shift d to an exponential of mean m keeps one free parameter per number:

    mean      d + m          = S
    quantile  d + m·z        = T,      z = ln(1/(1−q))
    so        m = (T − S)/(z − 1),     d = S − m,

which needs S <= T <= S·z (z > 1, i.e. q above 63.2%) unless T = S, where the service time is the
constant S. The served mean and quantile are then exactly the engine's S and S_q.

What it does not match: the engine's Erlang C wait assumes exponential service (coefficient of
variation 1); this one has m/S < 1 (0.21 for 20/35 ms at p99), so real queues here wait less than
M/M/c predicts, roughly by (1 + cv²)/2 in the Allen–Cunneen approximation. The engine's sum of a wait
quantile and a service quantile is likewise at or above the quantile of their sum. Both make the
model's p99 an upper estimate of what a server built on this profile measures under load.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceTime:
    """Service time = shift_ms + an exponential of mean scale_ms (scale_ms 0: the constant shift_ms)."""

    shift_ms: float
    scale_ms: float

    @classmethod
    def from_profile(cls, latency_ms: float, tail_latency_ms: float, percentile: float) -> ServiceTime:
        """The shifted exponential whose mean is latency_ms and whose `percentile` quantile is tail_latency_ms."""
        if latency_ms < 0:
            raise ValueError(f"latencyMs {latency_ms:g} must be >= 0")
        if tail_latency_ms == latency_ms:
            return cls(float(latency_ms), 0.0)
        if not 0 < percentile < 100:
            raise ValueError(f"percentile {percentile:g} must be in (0, 100)")
        if tail_latency_ms < latency_ms:
            raise ValueError(f"tailLatencyMs {tail_latency_ms:g} must be >= latencyMs {latency_ms:g}")
        z = math.log(1.0 / (1.0 - percentile / 100.0))
        if z <= 1.0:
            raise ValueError(f"tailLatencyMs {tail_latency_ms:g} above latencyMs {latency_ms:g} needs a percentile "
                             f"above {100 * (1 - math.exp(-1)):.1f} for a shifted exponential, got {percentile:g}")
        if tail_latency_ms > latency_ms * z:
            raise ValueError(f"tailLatencyMs {tail_latency_ms:g} must be <= {latency_ms * z:g} (latencyMs × "
                             f"ln(1/(1−q)) at p{percentile:g}): a shifted exponential cannot have a longer tail")
        scale_ms = (tail_latency_ms - latency_ms) / (z - 1.0)
        return cls(latency_ms - scale_ms, scale_ms)

    @property
    def mean_ms(self) -> float:
        return self.shift_ms + self.scale_ms

    def quantile_ms(self, percentile: float) -> float:
        return self.shift_ms + self.scale_ms * math.log(1.0 / (1.0 - percentile / 100.0))

    def draw_ms(self, rng: random.Random) -> float:
        return self.shift_ms + (rng.expovariate(1.0 / self.scale_ms) if self.scale_ms > 0 else 0.0)
