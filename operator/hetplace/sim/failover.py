"""What the site's gateway does with a route that fails: within the same request it tries the next
route of the list it holds (docs/routes.md), so a site whose pool is down or whose link is saturated
is served by the first fallback that is live right now."""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

from hetplace.engine.decision import Decision
from hetplace.engine.fallbacks import RouteOption
from hetplace.engine.measure import FleetLoad, RouteKey, RouteMeasure, Serving, fleet_load, group_compute_s, \
    serving_routes
from hetplace.engine.snapshot import Pool, Workload
from hetplace.engine.usage import route_bytes_per_s

HeldRoutes = Mapping[str, Mapping[str, Sequence[RouteOption]]]     # workload key -> site -> routes, decided first


def fail_over(placed: Sequence[tuple[Workload, Decision | None]], pools: Iterable[Pool], held: HeldRoutes,
              measured: Iterable[RouteMeasure]) -> dict[RouteKey, Serving]:
    """(workload, site) -> the fallback serving it, for every route `measured` as unreachable whose site
    holds a fallback that is live: its pool up, its link below saturation and its group stable with
    the site's traffic added. Sites fail over one by one in the order measured, each seeing the
    traffic moved before it: a site that moves takes its traffic off the route that failed, and a
    site whose own link those moves relieved stays where it is."""
    by_name = {p.name: p for p in pools}
    workloads = {w.key: (w, d) for w, d in placed}
    load: FleetLoad | None = None
    moved: dict[RouteKey, Serving] = {}
    for m in measured:
        options = held.get(m.workload, {}).get(m.site, ())
        if not m.unreachable or m.requests_per_second <= 0 or len(options) < 2:
            continue
        w, d = workloads[m.workload]
        home = serving_routes(w, d).get(m.site)
        if home is None:
            continue
        if load is None:
            load = fleet_load(placed)
        load.add(w, m.site, m.requests_per_second, home, -1.0)
        replicas = {(g.pool, g.variant): g.replicas for g in d.groups}
        to = None
        if not _reachable(w, by_name.get(home[0]), m.site, home[2], m.requests_per_second, load):
            to = next(((o.pool, o.variant, o.encoding) for o in options[1:]
                       if _reachable(w, by_name.get(o.pool), m.site, o.encoding, m.requests_per_second, load)
                       and _has_room(w, o, replicas.get((o.pool, o.variant)), m.requests_per_second, load)), None)
        load.add(w, m.site, m.requests_per_second, to or home)
        if to is not None:
            moved[(m.workload, m.site)] = to
    return moved


def _reachable(w: Workload, pool: Pool | None, site: str, encoding_name: str, requests_per_second: float,
               load: FleetLoad) -> bool:
    """The pool is up and its link from `site` stays below saturation with this traffic added."""
    encoding = next((e for e in w.encodings if e.name == encoding_name), None)
    link = pool.link_from(site) if pool is not None and not pool.down else None
    if link is None or encoding is None:
        return False
    added_bytes_per_s = route_bytes_per_s(w, encoding, requests_per_second)
    return (load.link_bytes_per_s[(site, pool.name)] + added_bytes_per_s) / link.bandwidth_bytes_per_s < 1.0


def _has_room(w: Workload, option: RouteOption, replicas: int | None, requests_per_second: float,
              load: FleetLoad) -> bool:
    """The running group stays stable (not overloaded) with this traffic added."""
    if replicas is None:
        return False
    arrival = load.group_requests_per_s[(w.key, option.pool, option.variant)] + requests_per_second
    return math.isfinite(group_compute_s(w, option.pool, option.variant, replicas, arrival))
