"""Compute-side latency: the M/M/c (Erlang C) wait quantile plus the service tail."""

from __future__ import annotations

import math

import numpy as np
from scipy import special


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that a request waits in an M/M/c queue (Erlang C), for load a < c."""
    return float(erlang_c_array(np.array([servers], dtype=float), np.array([offered_load]))[0])


def erlang_c_array(servers: np.ndarray, offered_load: np.ndarray) -> np.ndarray:
    """Erlang C for arrays, through Erlang B = Poisson pmf/cdf (stable for large c)."""
    c = np.asarray(servers, dtype=float)
    a = np.asarray(offered_load, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pmf = c * np.log(a) - a - special.gammaln(c + 1.0)
        cdf = special.gammaincc(c + 1.0, a)
        blocking = np.where(a > 0, np.exp(log_pmf) / cdf, 0.0)
        rho = a / c
        wait = blocking / (1.0 - rho * (1.0 - blocking))
    return np.where(a > 0, np.clip(wait, 0.0, 1.0), 0.0)


def service_quantile_s(latency_ms, tail_latency_ms, percentile: float):
    """The service time at the SLO percentile: the tail profile from p90 up, else the mean."""
    return (tail_latency_ms if percentile >= 90 else latency_ms) / 1000.0


def compute_latency_s(
    replicas: np.ndarray,
    concurrency: int | np.ndarray,
    arrival_rate: np.ndarray,
    latency_ms: float | np.ndarray,
    tail_latency_ms: float | np.ndarray,
    percentile: float,
) -> np.ndarray:
    """Wait quantile + service quantile for each (replicas, arrival rate); inf where overloaded.

    Every argument but the percentile broadcasts, so candidates of different variants go at once.

    Callers apply the utilisation cap; this only requires the queue to be stable.
    """
    service_s = latency_ms / 1000.0
    servers = np.asarray(replicas, dtype=float) * concurrency
    lam = np.asarray(arrival_rate, dtype=float)
    offered = lam * service_s
    q = percentile / 100.0
    stable = offered < servers
    with np.errstate(divide="ignore", invalid="ignore"):
        p_wait = erlang_c_array(np.where(stable, servers, 1.0), np.where(stable, offered, 0.0))
        drain = servers / service_s - lam
        wait = np.where(p_wait <= 1.0 - q, 0.0, np.log(p_wait / (1.0 - q)) / drain)
    total = wait + service_quantile_s(latency_ms, tail_latency_ms, percentile)
    return np.where(stable, total, math.inf)


def min_replicas_for_utilization(
    arrival_rate: np.ndarray, latency_ms: float, concurrency: int, max_utilization: float
) -> np.ndarray:
    """Fewest replicas keeping λ·S/c at or under the utilisation cap."""
    needed = np.asarray(arrival_rate, dtype=float) * (latency_ms / 1000.0) / (concurrency * max_utilization)
    return np.maximum(np.ceil(needed - 1e-9), 1).astype(np.int64)
