"""What deployed placements deliver under the conditions of the moment: each route's latency as
the model predicts it with the replicas and encodings that are actually running.

Unlike `solve` or `evaluate`, nothing is re-chosen here: a deployment does not resize itself
when a link slows down, so a route can miss its SLO (or not be served at all, when its pool is
down or the site has no route). The simulator scores policies with this.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from hetplace.engine.decision import Decision
from hetplace.engine.queueing import compute_latency_s
from hetplace.engine.snapshot import Pool, Workload
from hetplace.engine.usage import route_bytes_per_s


@dataclass(frozen=True)
class RouteMeasure:
    """One site's traffic of one workload under the current conditions."""

    workload: str
    site: str
    requests_per_second: float
    latency_ms: float            # inf when the route is not served
    slo_latency_ms: float
    served_by: str               # "pool/variant", or "" when nothing serves the site
    why_missed: str = ""

    @property
    def within_slo(self) -> bool:
        return self.latency_ms <= self.slo_latency_ms + 1e-6


def measure_fleet(placed: Iterable[tuple[Workload, Decision | None]], pools: Iterable[Pool],
                  background_bytes_per_s: Mapping[tuple[str, str], float] | None = None) -> list[RouteMeasure]:
    """Every route of every workload (current traffic) on what is deployed, links shared by all."""
    placed = list(placed)
    by_name = {p.name: p for p in pools}
    link_load: dict[tuple[str, str], float] = defaultdict(float, background_bytes_per_s or {})
    for w, d in placed:
        for key, rate in _offered_link_load(w, d).items():
            link_load[key] += rate
    out: list[RouteMeasure] = []
    for w, d in placed:
        out.extend(_measure_workload(w, d, by_name, link_load))
    return out


def _serving(w: Workload, d: Decision | None) -> dict[str, tuple[str, str, str]]:
    """site -> (pool, variant, encoding) of the deployed placement."""
    if d is None or not d.feasible:
        return {}
    return {r.site: (g.pool, g.variant, r.encoding) for g in d.groups for r in g.routes}


def _offered_link_load(w: Workload, d: Decision | None) -> dict[tuple[str, str], float]:
    """Bytes/s each (site, pool) link carries for this workload at its current traffic."""
    serving = _serving(w, d)
    encodings = {e.name: e for e in w.encodings}
    load: dict[tuple[str, str], float] = defaultdict(float)
    for t in w.traffic:
        if t.site in serving and serving[t.site][2] in encodings:
            pool, _, encoding = serving[t.site]
            load[(t.site, pool)] += route_bytes_per_s(w, encodings[encoding], t.requests_per_second)
    return load


def _measure_workload(w: Workload, d: Decision | None, pools: Mapping[str, Pool],
                      link_load: Mapping[tuple[str, str], float]) -> list[RouteMeasure]:
    serving = _serving(w, d)
    variants = {v.name: v for v in w.variants}
    encodings = {e.name: e for e in w.encodings}
    replicas = {(g.pool, g.variant): g.replicas for g in d.groups} if serving else {}
    arrival: dict[tuple[str, str], float] = defaultdict(float)
    for t in w.traffic:
        if t.site in serving:
            arrival[serving[t.site][:2]] += t.requests_per_second
    compute_s = {}
    for (pool, variant), lam in arrival.items():
        v = variants.get(variant)
        if v is None:      # renamed under a running placement: its profile is no longer known
            compute_s[(pool, variant)] = math.nan
            continue
        v = w.variant_on(pool, v)
        compute_s[(pool, variant)] = float(compute_latency_s(
            np.array([replicas[(pool, variant)]]), v.concurrency, np.array([lam]),
            v.latency_ms, v.tail_latency_ms, w.percentile)[0])

    out = []
    for t in w.traffic:
        def miss(why: str, served_by: str = "") -> RouteMeasure:
            return RouteMeasure(w.key, t.site, t.requests_per_second, math.inf, w.slo_latency_ms, served_by, why)

        if t.site not in serving:
            out.append(miss("no route serves this site"))
            continue
        pool_name, variant, encoding = serving[t.site]
        served_by = f"{pool_name}/{variant}"
        if variant not in variants or encoding not in encodings:
            gone = f"variant {variant}" if variant not in variants else f"encoding {encoding}"
            out.append(miss(f"{gone} is no longer in the spec", served_by))
            continue
        pool = pools.get(pool_name)
        if pool is None or pool.down:
            out.append(miss(f"pool {pool_name} is down", served_by))
            continue
        link = pool.link_from(t.site)
        if link is None:
            out.append(miss(f"no link from {t.site} to {pool_name}", served_by))
            continue
        bandwidth = link.bandwidth_bytes_per_s
        utilization = link_load[(t.site, pool_name)] / bandwidth
        if utilization >= 1.0:
            out.append(miss(f"link {t.site} -> {pool_name} is saturated ({utilization:.0%})", served_by))
            continue
        payload = encodings[encoding].request_bytes + w.response_bytes
        network_s = link.rtt_ms / 1000.0 + payload / (bandwidth * (1.0 - utilization))
        compute = compute_s[(pool_name, variant)]
        if not math.isfinite(compute):
            out.append(miss(f"{served_by} is overloaded", served_by))
            continue
        latency_ms = (network_s + compute) * 1000.0
        why = "" if latency_ms <= w.slo_latency_ms + 1e-6 else \
            f"{latency_ms:.1f} ms over the {w.slo_latency_ms:g} ms SLO"
        out.append(RouteMeasure(w.key, t.site, t.requests_per_second, latency_ms, w.slo_latency_ms, served_by, why))
    return out
