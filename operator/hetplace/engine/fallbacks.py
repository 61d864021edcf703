"""Per site, the order its requests should try a workload's running groups: the decided route,
then every other group that can reach the site, ranked by the latency the placement model
predicts when the site's traffic moves there (docs/routes.md).

Nothing is re-chosen: the groups keep the replicas they run, as a fallback taken when a pool
dies does not resize either. Only the encoding is picked per fallback: the first in preference
order within the SLO, else the fastest. Pure, so the operator (routes ConfigMap) and the
simulator (the gateway's failover) rank alike.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from hetplace.engine.decision import Decision, GroupPlan
from hetplace.engine.filters import accuracy_met
from hetplace.engine.queueing import compute_latency_s
from hetplace.engine.snapshot import Pool, Workload
from hetplace.engine.usage import route_bytes_per_s

SLO_TOLERANCE_MS = 1e-6


@dataclass(frozen=True, slots=True)
class RouteOption:
    """One way a site's requests can be served, in the order a site tries them."""

    pool: str
    variant: str
    encoding: str
    predicted_latency_ms: float | None     # None: overloaded, or the link would saturate
    within_slo: bool
    decided: bool = False
    draining: bool = False


def route_options(w: Workload, pools: Iterable[Pool], serving: Decision, draining: Decision | None = None,
                  traffic: Mapping[str, float] | None = None,
                  background_bytes_per_s: Mapping[tuple[str, str], float] | None = None) -> dict[str, list[RouteOption]]:
    """site -> its routes, decided first. `serving`: the placement whose routes are in force;
    `draining`: groups being removed after a move (fallbacks until they go); `traffic`: site ->
    requests/s now (default: the rates the decision was made for); `background_bytes_per_s`:
    what other workloads send over each (site, pool) link."""
    by_name = {p.name: p for p in pools}
    rates = {r.site: r.requests_per_second for g in serving.groups for r in g.routes}
    rates.update(traffic or {})
    encodings = {e.name: e for e in w.encodings}
    own_load: dict[tuple[str, str], float] = defaultdict(float, background_bytes_per_s or {})
    arrival: dict[tuple[str, str], float] = defaultdict(float)
    decided: dict[str, tuple[GroupPlan, str, float]] = {}
    for g in serving.groups:
        for r in g.routes:
            rate = rates.get(r.site, r.requests_per_second)
            decided[r.site] = (g, r.encoding, r.predicted_latency_ms)
            arrival[(g.pool, g.variant)] += rate
            if r.encoding in encodings:
                own_load[(r.site, g.pool)] += route_bytes_per_s(w, encodings[r.encoding], rate)
    groups = [(g, False) for g in serving.groups]
    seen = {(g.pool, g.variant) for g in serving.groups}
    groups += [(g, True) for g in (draining.groups if draining else ()) if (g.pool, g.variant) not in seen]

    out = {}
    for site, (home, encoding, predicted) in sorted(decided.items()):
        first = RouteOption(home.pool, home.variant, encoding, predicted,
                            predicted <= w.slo_latency_ms + SLO_TOLERANCE_MS, decided=True)
        others = [option for g, leaving in groups if (g.pool, g.variant) != (home.pool, home.variant)
                  if (option := _fallback(w, by_name, g, leaving, site, rates.get(site, 0.0),
                                          (home.pool, encoding), own_load, arrival)) is not None]
        others.sort(key=lambda o: (o.predicted_latency_ms is None, o.predicted_latency_ms or 0.0, o.pool, o.variant))
        out[site] = [first, *others]
    return out


def _fallback(w: Workload, pools: Mapping[str, Pool], g: GroupPlan, leaving: bool, site: str, rate: float,
              home: tuple[str, str], link_load: Mapping[tuple[str, str], float],
              arrival: Mapping[tuple[str, str], float]) -> RouteOption | None:
    """Group g serving `site` on top of what it serves, or None when it cannot reach the site."""
    pool = pools.get(g.pool)
    variant = next((v for v in w.variants if v.name == g.variant), None)
    if pool is None or pool.down or variant is None:
        return None
    link = pool.link_from(site)
    accurate = [e for e in w.encodings if accuracy_met(w, variant, e) is None]
    if link is None or not accurate:
        return None
    v = w.variant_on(pool.name, variant)
    compute_s = float(compute_latency_s(np.array([g.replicas]), v.concurrency,
                                        np.array([arrival.get((g.pool, g.variant), 0.0) + rate]),
                                        v.latency_ms, v.tail_latency_ms, w.percentile)[0])
    # the site's traffic leaves its home route: take it off that link before adding it here
    home_pool, home_encoding = home
    base = link_load.get((site, pool.name), 0.0)
    if home_pool == pool.name:
        base -= next((route_bytes_per_s(w, e, rate) for e in w.encodings if e.name == home_encoding), 0.0)
    bandwidth = link.bandwidth_bytes_per_s
    latencies = []
    for e in accurate:
        utilization = (max(base, 0.0) + route_bytes_per_s(w, e, rate)) / bandwidth
        if utilization >= 1.0 or not math.isfinite(compute_s):
            latencies.append(math.inf)
            continue
        network_s = link.rtt_ms / 1000.0 + (e.request_bytes + w.response_bytes) / (bandwidth * (1.0 - utilization))
        latencies.append((network_s + compute_s) * 1000.0)
    within = [i for i, ms in enumerate(latencies) if ms <= w.slo_latency_ms + SLO_TOLERANCE_MS]
    best = within[0] if within else min(range(len(accurate)), key=lambda i: latencies[i])
    ms = latencies[best]
    return RouteOption(g.pool, g.variant, accurate[best].name, ms if math.isfinite(ms) else None,
                       bool(within), draining=leaving)
