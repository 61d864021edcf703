"""What deployed placements deliver under the conditions of the moment: each route's latency as
the model predicts it with the replicas and encodings that are actually running.

Unlike `solve` or `evaluate`, nothing is re-chosen here: a deployment does not resize itself
when a link slows down, so a route can miss its SLO (or not be served at all, when its pool is
down or the site has no route). The simulator scores policies with this. A site's gateway may
send a failed route's requests to another of the workload's running groups instead (`rerouted`);
those are measured like any route, loading the group and the link they moved to.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from hetplace.engine.decision import Decision
from hetplace.engine.queueing import compute_latency_s
from hetplace.engine.snapshot import Pool, Workload
from hetplace.engine.usage import route_bytes_per_s

RouteKey = tuple[str, str]              # (workload NAMESPACE/NAME, site)
Serving = tuple[str, str, str]          # (pool, variant, encoding) a site's requests go to


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
    unreachable: bool = False    # its requests fail (pool down, no link, link saturated): what a gateway fails over on
    fallback: bool = False       # served by a fallback a gateway failed over to, not by the decided route

    @property
    def within_slo(self) -> bool:
        return self.latency_ms <= self.slo_latency_ms + 1e-6


@dataclass
class FleetLoad:
    """What the fleet's routes put on each (site, pool) link, in bytes/s, and on each group, in requests/s
    (keyed by (workload, pool, variant)), at current traffic."""

    link_bytes_per_s: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    group_requests_per_s: dict[tuple[str, str, str], float] = field(default_factory=lambda: defaultdict(float))

    def add(self, w: Workload, site: str, requests_per_second: float, to: Serving, sign: float = 1.0) -> None:
        """Put a site's traffic on the route `to` (sign -1: take it off)."""
        pool, variant, encoding = to
        self.group_requests_per_s[(w.key, pool, variant)] += sign * requests_per_second
        found = next((e for e in w.encodings if e.name == encoding), None)
        if found is not None:
            self.link_bytes_per_s[(site, pool)] += sign * route_bytes_per_s(w, found, requests_per_second)


def measure_fleet(placed: Iterable[tuple[Workload, Decision | None]], pools: Iterable[Pool],
                  background_bytes_per_s: Mapping[tuple[str, str], float] | None = None, *,
                  rerouted: Mapping[RouteKey, Serving] | None = None) -> list[RouteMeasure]:
    """Every route of every workload (current traffic) on what is deployed, links shared by all.
    `rerouted`: (workload, site) -> the route serving that site instead of its decided one."""
    placed = list(placed)
    by_name = {p.name: p for p in pools}
    load = fleet_load(placed, background_bytes_per_s, rerouted)
    out: list[RouteMeasure] = []
    for w, d in placed:
        out.extend(_measure_workload(w, d, by_name, load, rerouted or {}))
    return out


def serving_routes(w: Workload, d: Decision | None,
                   rerouted: Mapping[RouteKey, Serving] | None = None) -> dict[str, Serving]:
    """site -> (pool, variant, encoding) its requests go to: the deployed placement's, or the rerouted one."""
    if d is None or not d.feasible:
        return {}
    serving = {r.site: (g.pool, g.variant, r.encoding) for g in d.groups for r in g.routes}
    if rerouted:
        serving.update({site: to for (key, site), to in rerouted.items() if key == w.key and site in serving})
    return serving


def fleet_load(placed: Iterable[tuple[Workload, Decision | None]],
               background_bytes_per_s: Mapping[tuple[str, str], float] | None = None,
               rerouted: Mapping[RouteKey, Serving] | None = None) -> FleetLoad:
    """The load every link and group carries with each site's current traffic on the route serving it."""
    load = FleetLoad()
    load.link_bytes_per_s.update(background_bytes_per_s or {})
    for w, d in placed:
        serving = serving_routes(w, d, rerouted)
        for t in w.traffic:
            if t.site in serving:
                load.add(w, t.site, t.requests_per_second, serving[t.site])
    return load


def group_compute_s(w: Workload, pool: str, variant_name: str, replicas: int, requests_per_second: float) -> float:
    """The compute latency at the SLO percentile of a group of `replicas` taking `requests_per_second`:
    inf when overloaded, nan when the spec no longer names the variant."""
    variant = next((v for v in w.variants if v.name == variant_name), None)
    if variant is None:      # renamed under a running placement: its profile is no longer known
        return math.nan
    v = w.variant_on(pool, variant)
    return float(compute_latency_s(np.array([replicas]), v.concurrency, np.array([requests_per_second]),
                                   v.latency_ms, v.tail_latency_ms, w.percentile)[0])


def _measure_workload(w: Workload, d: Decision | None, pools: Mapping[str, Pool], load: FleetLoad,
                      rerouted: Mapping[RouteKey, Serving]) -> list[RouteMeasure]:
    serving = serving_routes(w, d, rerouted)
    variants = {v.name for v in w.variants}
    encodings = {e.name: e for e in w.encodings}
    replicas = {(g.pool, g.variant): g.replicas for g in d.groups} if serving else {}
    compute_s = {(pool, variant): group_compute_s(w, pool, variant, replicas[(pool, variant)],
                                                  load.group_requests_per_s[(w.key, pool, variant)])
                 for pool, variant, _ in set(serving.values()) if (pool, variant) in replicas}

    out = []
    for t in w.traffic:
        moved = (w.key, t.site) in rerouted and t.site in serving

        def miss(why: str, served_by: str = "", unreachable: bool = False) -> RouteMeasure:
            return RouteMeasure(w.key, t.site, t.requests_per_second, math.inf, w.slo_latency_ms, served_by, why,
                                unreachable, moved)

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
            out.append(miss(f"pool {pool_name} is down", served_by, unreachable=True))
            continue
        link = pool.link_from(t.site)
        if link is None:
            out.append(miss(f"no link from {t.site} to {pool_name}", served_by, unreachable=True))
            continue
        bandwidth = link.bandwidth_bytes_per_s
        utilization = load.link_bytes_per_s[(t.site, pool_name)] / bandwidth
        if utilization >= 1.0:
            out.append(miss(f"link {t.site} -> {pool_name} is saturated ({utilization:.0%})", served_by,
                            unreachable=True))
            continue
        payload = encodings[encoding].request_bytes + w.response_bytes
        network_s = link.rtt_ms / 1000.0 + payload / (bandwidth * (1.0 - utilization))
        compute = compute_s.get((pool_name, variant), math.nan)
        if not math.isfinite(compute):
            out.append(miss(f"{served_by} is overloaded", served_by))
            continue
        latency_ms = (network_s + compute) * 1000.0
        why = "" if latency_ms <= w.slo_latency_ms + 1e-6 else \
            f"{latency_ms:.1f} ms over the {w.slo_latency_ms:g} ms SLO"
        out.append(RouteMeasure(w.key, t.site, t.requests_per_second, latency_ms, w.slo_latency_ms, served_by, why,
                                False, moved))
    return out
