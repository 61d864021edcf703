"""A brute-force reading of placement model v1 (docs/design.md §3), written apart from the engine to check it.

Everything here is plain `math` over the engine's input dataclasses: every assignment of
(pool, variant, encoding) to every site is enumerated, assignments breaking a rule are dropped,
each group gets the fewest replicas that meet the SLO, and the objective picks the optimum.
It is only meant for small instances (a few pools, variants, encodings and sites).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from hetplace.engine.snapshot import Encoding, Pool, Snapshot, Traffic, Variant, Workload

# A pool's own site reaches it over the local network unless an explicit link says otherwise.
LOCAL_BANDWIDTH_BYTES_PER_S = 1_250_000.0 * 1000.0
LOCAL_RTT_S = 0.5 / 1000.0
# Costs closer than this are the same cost (docs/design.md §3: ties within 1e-9 $/h).
COST_TIE_PER_HOUR = 1e-9
# Two costs further apart than this are surely ordered the same way by any sane arithmetic;
# between the tie width and this the order depends on rounding, so the optimum is ambiguous.
COST_CLEAR_GAP_PER_HOUR = 1e-7
# Latencies (seconds) closer than this could be ordered either way by rounding.
LATENCY_NOISE_S = 1e-9
# Resource ratios are whole numbers of replicas up to floating-point noise.
FIT_SLACK = 1e-9


# --- queueing, transfer, cost and capacity ---------------------------------------------------

def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in M/M/c, from the Erlang-B recurrence."""
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    occupancy = offered_load / servers
    return blocking / (1.0 - occupancy * (1.0 - blocking))


def compute_seconds(w: Workload, variant: Variant, arrivals_per_s: float, replicas: int) -> float | None:
    """Queueing wait at the SLO percentile plus service time, or None when the group is too busy."""
    service_s = variant.latency_ms / 1000.0
    quantile_service_s = variant.tail_latency_ms / 1000.0 if w.percentile >= 90 else service_s
    servers = replicas * variant.concurrency
    if arrivals_per_s * service_s / servers > w.max_utilization + 1e-12:  # "at or under", up to float noise
        return None
    waiting = erlang_c(servers, arrivals_per_s * service_s)
    not_late = 1.0 - w.percentile / 100.0
    if waiting <= not_late:
        wait_s = 0.0
    else:
        wait_s = math.log(waiting / not_late) / (servers / service_s - arrivals_per_s)
    return wait_s + quantile_service_s


def link(pool: Pool, site: str) -> tuple[float, float] | None:
    """(bandwidth bytes/s, RTT s) from `site` to `pool`; an explicit link beats the local one."""
    if site in pool.links:
        state = pool.links[site]
        return state.bandwidth_kbps * 1000.0, state.rtt_ms / 1000.0
    if site == pool.site:
        return LOCAL_BANDWIDTH_BYTES_PER_S, LOCAL_RTT_S
    return None


@dataclass(frozen=True)
class Transfer:
    network_s: float
    link_utilization: float


def transfer(w: Workload, snap: Snapshot, pool: Pool, traffic: Traffic, encoding: Encoding) -> Transfer | None:
    """Time on the wire for one request and its response, or None without a usable link."""
    path = link(pool, traffic.site)
    if path is None:
        return None
    bandwidth, rtt_s = path
    payload = encoding.request_bytes + w.response_bytes
    background = snap.link_load_bytes_per_s.get((traffic.site, pool.name), 0.0)
    utilization = (background + traffic.requests_per_second * payload) / bandwidth
    if utilization > w.max_link_utilization:
        return None
    return Transfer(rtt_s + payload / (bandwidth * (1.0 - utilization)), utilization)


def _requested(variant: Variant, offered: tuple[float, float, float]) -> list[tuple[float, float]]:
    asked = (variant.resources.cpu_cores, variant.resources.memory_bytes, variant.resources.accelerators)
    return [(a, o) for a, o in zip(asked, offered) if a > 0]


def _node(pool: Pool) -> tuple[float, float, float]:
    return pool.node.cpu_cores, pool.node.memory_bytes, pool.node.accelerators


def replica_cost_per_hour(pool: Pool, variant: Variant) -> float:
    """Node price times the replica's dominant share of a node."""
    shares = [a / o if o > 0 else math.inf for a, o in _requested(variant, _node(pool))]
    return pool.node_cost_per_hour * max(shares, default=0.0)


def _whole_fits(variant: Variant, offered: tuple[float, float, float]) -> int:
    counts = [math.floor(o / a + FIT_SLACK) for a, o in _requested(variant, offered)]
    return max(0, min(counts))


def replica_capacity(snap: Snapshot, pool: Pool, variant: Variant) -> int:
    """Replicas of `variant` the pool can still take: whole nodes, and what others leave free."""
    per_node = _whole_fits(variant, _node(pool))
    used = snap.pool_used.get(pool.name)
    taken = (used.cpu_cores, used.memory_bytes, used.accelerators) if used else (0.0, 0.0, 0.0)
    free = tuple(pool.node_count * offered - t for offered, t in zip(_node(pool), taken))
    return min(pool.node_count * per_node, _whole_fits(variant, free))


# --- routes and groups ------------------------------------------------------------------------

def route_passes_filters(w: Workload, pool: Pool, variant: Variant, encoding: Encoding) -> bool:
    """The hard filters that depend only on one route (link usability is checked with transfer)."""
    return (
        not pool.down
        and variant.hardware == pool.hardware
        and (not w.regions or pool.region in w.regions)
        and (not w.pools or pool.name in w.pools)
        and (not pool.allowed_namespaces or w.namespace in pool.allowed_namespaces)
        and variant.accuracy + encoding.accuracy_delta >= w.min_accuracy
    )


@dataclass(frozen=True)
class RouteOutcome:
    site: str
    encoding: str
    encoding_rank: int
    latency_s: float
    network_s: float
    compute_s: float
    link_utilization: float

    @property
    def predicted_latency_ms(self) -> float:
        return self.latency_s * 1000.0


@dataclass(frozen=True)
class GroupOutcome:
    pool: str
    variant: str
    replicas: int
    cost_per_hour: float
    routes: tuple[RouteOutcome, ...]

    @property
    def worst_s(self) -> float:
        return max(r.latency_s for r in self.routes)


Routes = tuple[tuple[Traffic, int], ...]  # (traffic of a site, index of its encoding)


def group_with_replicas(
    w: Workload, snap: Snapshot, pool: Pool, variant: Variant, routes: Routes, replicas: int
) -> GroupOutcome | None:
    """The group at exactly `replicas`, or None when that count breaks a bound, capacity or the SLO."""
    if not max(w.replicas_min, 1) <= replicas <= min(w.replicas_max, replica_capacity(snap, pool, variant)):
        return None
    transfers = [transfer(w, snap, pool, traffic, w.encodings[rank]) for traffic, rank in routes]
    if None in transfers:
        return None
    compute_s = compute_seconds(w, variant, sum(t.requests_per_second for t, _ in routes), replicas)
    if compute_s is None or max(t.network_s for t in transfers) + compute_s > w.slo_latency_ms / 1000.0:
        return None
    return GroupOutcome(
        pool.name,
        variant.name,
        replicas,
        replicas * replica_cost_per_hour(pool, variant),
        tuple(
            RouteOutcome(
                traffic.site, w.encodings[rank].name, rank, path.network_s + compute_s,
                path.network_s, compute_s, path.link_utilization,
            )
            for (traffic, rank), path in zip(routes, transfers)
        ),
    )


def evaluate_group(
    w: Workload, snap: Snapshot, pool: Pool, variant: Variant, routes: Routes
) -> GroupOutcome | None:
    """The group with the fewest replicas meeting the SLO on every route, or None if none does."""
    transfers = [transfer(w, snap, pool, traffic, w.encodings[rank]) for traffic, rank in routes]
    if None in transfers:
        return None
    # Waiting is never negative, so no replica count beats the network plus the service time.
    service_s = variant.tail_latency_ms / 1000.0 if w.percentile >= 90 else variant.latency_ms / 1000.0
    if max(t.network_s for t in transfers) + service_s > w.slo_latency_ms / 1000.0:
        return None
    for replicas in range(max(w.replicas_min, 1), w.replicas_max + 1):
        group = group_with_replicas(w, snap, pool, variant, routes, replicas)
        if group is not None:
            return group
    return None


# --- whole placements -------------------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    groups: tuple[GroupOutcome, ...]

    @property
    def cost_per_hour(self) -> float:
        return sum(g.cost_per_hour for g in self.groups)

    @property
    def encoding_rank(self) -> int:
        return sum(r.encoding_rank for g in self.groups for r in g.routes)

    @property
    def worst_s(self) -> float:
        return max(g.worst_s for g in self.groups)

    def per_site(self) -> dict[str, tuple[str, str, int, str]]:
        """site -> (pool, variant, replicas, encoding): what a decision must agree on."""
        return {r.site: (g.pool, g.variant, g.replicas, r.encoding) for g in self.groups for r in g.routes}


def feasible_placements(w: Workload, snap: Snapshot) -> list[Placement]:
    """Every assignment of (pool, variant, encoding) to every site that keeps every rule."""
    sites = sorted(w.traffic, key=lambda t: t.site)
    choices = [
        (pool, variant, rank)
        for pool in snap.pools
        for variant in w.variants
        for rank, encoding in enumerate(w.encodings)
        if route_passes_filters(w, pool, variant, encoding)
    ]
    pools = {p.name: p for p in snap.pools}
    variants = {v.name: v for v in w.variants}
    cache: dict[tuple, GroupOutcome | None] = {}
    found = []
    for assignment in itertools.product(choices, repeat=len(sites)):
        grouped: dict[tuple[str, str], list[tuple[Traffic, int]]] = {}
        for traffic, (pool, variant, rank) in zip(sites, assignment):
            grouped.setdefault((pool.name, variant.name), []).append((traffic, rank))
        pools_used = [pool for pool, _ in grouped]
        if len(set(pools_used)) < len(pools_used) or len(grouped) > w.max_pools:
            continue
        groups = []
        for (pool, variant), routes in grouped.items():
            key = (pool, variant, tuple((t.site, rank) for t, rank in routes))
            if key not in cache:
                cache[key] = evaluate_group(w, snap, pools[pool], variants[variant], tuple(routes))
            groups.append(cache[key])
        if all(groups):
            placement = Placement(tuple(groups))
            if w.max_cost_per_hour is None or placement.cost_per_hour <= w.max_cost_per_hour + COST_TIE_PER_HOUR:
                found.append(placement)
    return found


@dataclass(frozen=True)
class Optimum:
    """The reference answer: the best placement, and whether rounding could have picked another."""

    best: Placement | None
    # the best per-site choice is the only one rounding-proof arithmetic could pick
    unique: bool
    # another placement ties the objective so closely that its (different) cost could win
    cost_ambiguous: bool


def _cost_beaten(other: float, best: float) -> bool | None:
    """True when `other` is clearly dearer, False when it is the same cost, None when unclear."""
    if other - best > COST_CLEAR_GAP_PER_HOUR:
        return True
    if abs(other - best) <= COST_TIE_PER_HOUR / 100:
        return False
    return None


def _min_cost_beaten(p: Placement, best: Placement) -> bool:
    cost = _cost_beaten(p.cost_per_hour, best.cost_per_hour)
    if cost is not False:
        return bool(cost)
    if p.encoding_rank != best.encoding_rank:
        return p.encoding_rank > best.encoding_rank
    return p.worst_s > best.worst_s + LATENCY_NOISE_S


def _min_latency_beaten(p: Placement, best: Placement) -> bool:
    if p.worst_s > best.worst_s + LATENCY_NOISE_S:
        return True
    if abs(p.worst_s - best.worst_s) > 1e-15:
        return False
    cost = _cost_beaten(p.cost_per_hour, best.cost_per_hour)
    if cost is not False:
        return bool(cost)
    return p.encoding_rank > best.encoding_rank


def optimum(w: Workload, snap: Snapshot) -> Optimum:
    """The placement the objective picks among all feasible ones."""
    placements = feasible_placements(w, snap)
    if not placements:
        return Optimum(None, True, False)
    if w.objective == "MinLatency":
        best = min(placements, key=lambda p: (p.worst_s, p.cost_per_hour, p.encoding_rank))
        beaten = _min_latency_beaten
    else:
        cheapest = min(p.cost_per_hour for p in placements)
        tied = [p for p in placements if p.cost_per_hour <= cheapest + COST_TIE_PER_HOUR]
        best = min(tied, key=lambda p: (p.encoding_rank, p.worst_s))
        beaten = _min_cost_beaten
    rivals = [p for p in placements if p.per_site() != best.per_site() and not beaten(p, best)]
    cost_ambiguous = any(
        _cost_beaten(p.cost_per_hour, best.cost_per_hour) is not False
        or _cost_beaten(best.cost_per_hour, p.cost_per_hour) is not False
        for p in rivals
    )
    return Optimum(best, not rivals, cost_ambiguous)
