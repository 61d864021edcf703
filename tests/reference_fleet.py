"""An exhaustive reading of fleet placement (docs/design.md §3, model v1, many workloads), written apart from the engine.

The fleet problem: every site of every workload gets a route (pool, variant, encoding); link
loads are the sum over all workloads on each (site, pool) link plus the snapshot's background;
each group (workload, pool, variant) takes the fewest replicas that keep the utilisation cap
and every route's SLO at those loads; pools must hold the sum of all groups plus what others
already use; the objective is the cheapest fleet (every workload treated as MinCost).

`evaluate_fleet` scores one fleet route assignment by the rules, in the order a reader would
check them. `fleet_optimum` enumerates every fleet assignment and keeps the cheapest. Its
pruning rests on one fact, stated once: adding workloads to a fleet only adds link load and
pool usage, and more load never helps (u and t_net grow, so the set of replica counts meeting
the SLO shrinks and its minimum grows). Hence (1) a workload assignment infeasible on its own
is infeasible in any fleet, (2) a workload costs at least its stand-alone cost in any fleet,
and (3) a prefix of the fleet that is already infeasible stays so. `prune=False` switches all
of it off and evaluates the plain cartesian product; tests check that both agree.

Only the input dataclasses of the engine are imported; queueing, links, capacity and costs are
re-derived here from docs/design.md §3.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Mapping, Sequence

# the two references share the textbook formulas that do not depend on the fleet
from reference_model import erlang_c, replica_cost_per_hour
from reference_model import link as link_of

from hetplace.engine.snapshot import (
    Encoding,
    LinkState,
    Pool,
    Resources,
    Snapshot,
    Traffic,
    Variant,
    Workload,
)


ACCURACY_SLACK = 1e-12
LINK_UTILIZATION_SLACK = 1e-12
UTILIZATION_SLACK = 1e-9
SLO_SLACK_S = 1e-9
CAPACITY_RELATIVE_SLACK = 1e-9
# Resource ratios are whole numbers of replicas up to floating-point noise.
FIT_SLACK = 1e-9
# Costs closer than this are the same cost.
COST_TIE_PER_HOUR = 1e-9

GiB = 2**30

Route = tuple[str, str, str]  # (pool, variant, encoding)
FleetRoutes = Mapping[str, Mapping[str, Route]]  # workload key -> site -> route


# --- queueing ---------------------------------------------------------------------------------

def compute_seconds(w: Workload, variant: Variant, arrivals_per_s: float, replicas: int) -> float | None:
    """Wait at the SLO percentile plus service time, or None when over the utilisation cap."""
    service_s = variant.latency_ms / 1000.0
    quantile_service_s = variant.tail_latency_ms / 1000.0 if w.percentile >= 90 else service_s
    servers = replicas * variant.concurrency
    offered = arrivals_per_s * service_s
    if offered / servers > w.max_utilization + UTILIZATION_SLACK or offered >= servers:
        return None
    waiting = erlang_c(servers, offered)
    not_late = 1.0 - w.percentile / 100.0
    if waiting <= not_late:
        wait_s = 0.0
    else:
        wait_s = math.log(waiting / not_late) / (servers / service_s - arrivals_per_s)
    return wait_s + quantile_service_s


def minimal_replicas(w: Workload, variant: Variant, arrivals_per_s: float, worst_network_s: float) -> int | None:
    """The fewest replicas in [max(min, 1), max] meeting the cap and the SLO on the slowest route."""
    slo_s = w.slo_latency_ms / 1000.0
    quantile_service_s = variant.tail_latency_ms / 1000.0 if w.percentile >= 90 else variant.latency_ms / 1000.0
    if worst_network_s + quantile_service_s > slo_s + SLO_SLACK_S:
        return None  # waiting is never negative, so no replica count helps
    for replicas in range(max(w.replicas_min, 1), w.replicas_max + 1):
        compute_s = compute_seconds(w, variant, arrivals_per_s, replicas)
        if compute_s is not None and worst_network_s + compute_s <= slo_s + SLO_SLACK_S:
            return replicas
    return None


# --- links, resources, cost -------------------------------------------------------------------

def _vector(r: Resources) -> tuple[float, float, float]:
    return r.cpu_cores, r.memory_bytes, float(r.accelerators)


def replicas_per_node(pool: Pool, variant: Variant) -> float:
    """Whole replicas of `variant` one node holds (inf when the variant requests nothing)."""
    counts = [
        math.floor(offered / asked + FIT_SLACK) if offered > 0 else 0
        for asked, offered in zip(_vector(variant.resources), _vector(pool.node))
        if asked > 0
    ]
    return min(counts, default=math.inf)


def route_filter_reason(w: Workload, pool: Pool, variant: Variant, encoding: Encoding, site: str) -> str | None:
    """Why one route breaks a rule that depends on it alone, or None."""
    if pool.down:
        return f"{pool.name} is down"
    if variant.hardware != pool.hardware:
        return f"{variant.name} runs on {variant.hardware}, {pool.name} is {pool.hardware}"
    if w.regions and pool.region not in w.regions:
        return f"{pool.name} region {pool.region} not in {w.regions}"
    if w.pools and pool.name not in w.pools:
        return f"{pool.name} not in {w.pools}"
    if pool.allowed_namespaces and w.namespace not in pool.allowed_namespaces:
        return f"namespace {w.namespace} not allowed in {pool.name}"
    if variant.accuracy + encoding.accuracy_delta < w.min_accuracy - ACCURACY_SLACK:
        return f"{variant.name}+{encoding.name} below accuracy {w.min_accuracy}"
    if link_of(pool, site) is None:
        return f"no link from {site} to {pool.name}"
    return None


def _site_rps(w: Workload) -> dict[str, float]:
    """Requests per second per site (repeated traffic entries for one site add up)."""
    rps: dict[str, float] = {}
    for t in w.traffic:
        rps[t.site] = rps.get(t.site, 0.0) + t.requests_per_second
    return rps


# --- one fleet assignment ---------------------------------------------------------------------

@dataclass(frozen=True)
class FleetEvaluation:
    """A fleet route assignment scored by the rules; `reason` is empty when it is feasible."""

    reason: str
    cost_per_hour: float | None = None
    workload_cost: dict[str, float] = field(default_factory=dict)
    replicas: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)
    link_load: dict[tuple[str, str], float] = field(default_factory=dict)
    # workload key -> site -> predicted latency (ms) at the chosen replicas
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return not self.reason


def evaluate_fleet(
    workloads: Sequence[Workload],
    snapshot: Snapshot,
    routes: FleetRoutes,
    _replica_cache: dict | None = None,
) -> FleetEvaluation:
    """Score `routes` for `workloads`: minimal replicas at the coupled link loads, then every rule.

    Unknown names (workload, site, pool, variant, encoding) raise ValueError; a missing route
    (an unplaced site or workload) or any broken rule gives an infeasible evaluation.
    """
    keys = [w.key for w in workloads]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate workload keys in {keys}")
    unknown = set(routes) - set(keys)
    if unknown:
        raise ValueError(f"routes for unknown workloads {sorted(unknown)}")
    pools = {p.name: p for p in snapshot.pools}
    cache = {} if _replica_cache is None else _replica_cache

    # 1. every site routed, names known, the per-route filters
    for w in workloads:
        chosen = routes.get(w.key, {})
        rps = _site_rps(w)
        extra = set(chosen) - set(rps)
        if extra:
            raise ValueError(f"{w.key}: routes for sites without traffic {sorted(extra)}")
        missing = set(rps) - set(chosen)
        if missing:
            return FleetEvaluation(f"{w.key}: sites {sorted(missing)} not placed")
        variants = {v.name: v for v in w.variants}
        encodings = {e.name: e for e in w.encodings}
        for site, (pool_name, variant_name, encoding_name) in chosen.items():
            if pool_name not in pools or variant_name not in variants or encoding_name not in encodings:
                raise ValueError(f"{w.key}: unknown pool/variant/encoding in {site} -> "
                                 f"{(pool_name, variant_name, encoding_name)}")
            reason = route_filter_reason(w, pools[pool_name], variants[variant_name],
                                         encodings[encoding_name], site)
            if reason:
                return FleetEvaluation(f"{w.key}: {site}: {reason}")
        # 2. one variant per pool, at most max_pools pools
        groups = {(pool, variant) for pool, variant, _ in chosen.values()}
        pools_used = [pool for pool, _ in groups]
        if len(set(pools_used)) != len(pools_used):
            return FleetEvaluation(f"{w.key}: two variants in one pool")
        if len(pools_used) > w.max_pools:
            return FleetEvaluation(f"{w.key}: {len(pools_used)} pools > maxPools {w.max_pools}")

    # 3. link loads: background plus every workload's routes
    link_load: dict[tuple[str, str], float] = {
        k: float(v) for k, v in snapshot.link_load_bytes_per_s.items() if v
    }
    for w in workloads:
        rps = _site_rps(w)
        encodings = {e.name: e for e in w.encodings}
        for site, (pool_name, _, encoding_name) in routes[w.key].items():
            payload = encodings[encoding_name].request_bytes + w.response_bytes
            link_load[(site, pool_name)] = link_load.get((site, pool_name), 0.0) + rps[site] * payload

    # 4. per route: utilisation and transfer; 5. per group: minimal replicas
    replicas: dict[str, dict[tuple[str, str], int]] = {}
    latency_ms: dict[str, dict[str, float]] = {}
    workload_cost: dict[str, float] = {}
    pool_use: dict[str, list[float]] = {
        name: list(_vector(used)) for name, used in snapshot.pool_used.items()
    }
    for wi, w in enumerate(workloads):
        rps = _site_rps(w)
        variants = {v.name: v for v in w.variants}
        encodings = {e.name: e for e in w.encodings}
        network_s: dict[str, float] = {}
        grouped: dict[tuple[str, str], list[str]] = {}
        for site, (pool_name, variant_name, encoding_name) in routes[w.key].items():
            bandwidth, rtt_s = link_of(pools[pool_name], site)
            utilization = link_load[(site, pool_name)] / bandwidth
            if utilization > w.max_link_utilization + LINK_UTILIZATION_SLACK or utilization >= 1.0:
                return FleetEvaluation(
                    f"{w.key}: link {site}->{pool_name} at {utilization:.4f} > {w.max_link_utilization}",
                    link_load=link_load,
                )
            payload = encodings[encoding_name].request_bytes + w.response_bytes
            network_s[site] = rtt_s + payload / (bandwidth * (1.0 - utilization))
            grouped.setdefault((pool_name, variant_name), []).append(site)
        replicas[w.key] = {}
        latency_ms[w.key] = {}
        cost = 0.0
        for (pool_name, variant_name), sites in sorted(grouped.items()):
            pool, variant = pools[pool_name], variants[variant_name]
            arrivals = sum(rps[s] for s in sites)
            worst = max(network_s[s] for s in sites)
            key = (wi, variant_name, arrivals, worst)
            if key not in cache:
                cache[key] = minimal_replicas(w, variant, arrivals, worst)
            r = cache[key]
            if r is None:
                return FleetEvaluation(f"{w.key}: no replica count meets the SLO in {pool_name}/{variant_name}",
                                       link_load=link_load)
            # 6a. capacity of one group: whole replicas per node times nodes
            if r > pool.node_count * replicas_per_node(pool, variant):
                return FleetEvaluation(f"{w.key}: {r} replicas of {variant_name} do not fit {pool_name}",
                                       link_load=link_load)
            use = pool_use.setdefault(pool_name, [0.0, 0.0, 0.0])
            for i, asked in enumerate(_vector(variant.resources)):
                use[i] += r * asked
            replicas[w.key][(pool_name, variant_name)] = r
            compute_s = compute_seconds(w, variant, arrivals, r)
            for s in sites:
                latency_ms[w.key][s] = (network_s[s] + compute_s) * 1000.0
            cost += r * replica_cost_per_hour(pool, variant)
        # 7. budget of the workload
        if w.max_cost_per_hour is not None and cost > w.max_cost_per_hour + COST_TIE_PER_HOUR:
            return FleetEvaluation(f"{w.key}: ${cost:.4f}/h > maxCostPerHour {w.max_cost_per_hour}",
                                   link_load=link_load)
        workload_cost[w.key] = cost

    # 6b. aggregate capacity of every pool the fleet uses, all workloads plus background
    for pool_name in sorted({pool for groups in replicas.values() for pool, _ in groups}):
        pool, use = pools[pool_name], pool_use[pool_name]
        for used, offered in zip(use, _vector(pool.capacity)):
            if used - offered > CAPACITY_RELATIVE_SLACK * max(abs(offered), 1.0):
                return FleetEvaluation(f"{pool_name}: requests exceed capacity", link_load=link_load)

    return FleetEvaluation(
        "",
        sum(workload_cost.values()),
        workload_cost,
        replicas,
        link_load,
        latency_ms,
    )


def fleet_cost_of(workloads: Sequence[Workload], snapshot: Snapshot, routes: FleetRoutes) -> float | None:
    """Total $/h of a fleet route assignment at minimal replicas, or None when it breaks a rule."""
    return evaluate_fleet(workloads, snapshot, routes).cost_per_hour


# --- the exhaustive optimum ------------------------------------------------------------------

@dataclass(frozen=True)
class FleetOptimum:
    """The cheapest fleet placement: routes, minimal replicas and link loads (background included)."""

    cost_per_hour: float
    routes: dict[str, dict[str, Route]]
    replicas: dict[str, dict[tuple[str, str], int]]
    link_load: dict[tuple[str, str], float]
    workload_cost: dict[str, float] = field(default_factory=dict)
    # fleet assignments whose cost ties the optimum (routes among those are an arbitrary pick)
    optimal_assignments: int = 1
    # fleet assignments evaluated in full (a measure of the search, not of the answer)
    evaluated: int = 0


def route_options(w: Workload, snapshot: Snapshot, site: str) -> list[Route]:
    """Every (pool, variant, encoding) a site of `w` may use, by the rules of one route alone."""
    return [
        (pool.name, variant.name, encoding.name)
        for pool in snapshot.pools
        for variant in w.variants
        for encoding in w.encodings
        if route_filter_reason(w, pool, variant, encoding, site) is None
    ]


def workload_assignments(w: Workload, snapshot: Snapshot) -> list[dict[str, Route]]:
    """Every site -> route map of one workload with one variant per pool and at most maxPools pools."""
    sites = sorted(_site_rps(w))
    found = []
    for combo in itertools.product(*(route_options(w, snapshot, s) for s in sites)):
        groups = {(pool, variant) for pool, variant, _ in combo}
        pools_used = [pool for pool, _ in groups]
        if len(set(pools_used)) == len(pools_used) and len(pools_used) <= w.max_pools:
            found.append(dict(zip(sites, combo)))
    return found


def fleet_optimum(
    workloads: Sequence[Workload], snapshot: Snapshot, *, prune: bool = True
) -> FleetOptimum | None:
    """The cheapest fleet placement placing every workload, or None when none exists."""
    workloads = tuple(workloads)
    cache: dict = {}
    per_workload = [workload_assignments(w, snapshot) for w in workloads]
    best: FleetEvaluation | None = None
    best_routes: dict | None = None
    near_best: list[float] = []  # costs seen within a tie of the best so far
    evaluated = 0

    def consider(routes: dict, evaluation: FleetEvaluation) -> None:
        nonlocal best, best_routes
        cost = evaluation.cost_per_hour
        if best is None or cost < best.cost_per_hour - COST_TIE_PER_HOUR:
            best, best_routes = evaluation, routes
        if cost <= best.cost_per_hour + COST_TIE_PER_HOUR:
            near_best.append(cost)

    if not prune:
        for combo in itertools.product(*per_workload):
            routes = {w.key: a for w, a in zip(workloads, combo)}
            evaluation = evaluate_fleet(workloads, snapshot, routes, cache)
            evaluated += 1
            if evaluation.feasible:
                consider(routes, evaluation)
    else:
        # (1)/(2): keep stand-alone feasible assignments, their stand-alone cost a lower bound
        candidates: list[list[tuple[float, dict[str, Route]]]] = []
        for w, assignments in zip(workloads, per_workload):
            scored = []
            for a in assignments:
                alone = evaluate_fleet((w,), snapshot, {w.key: a}, {})
                if alone.feasible:
                    scored.append((alone.cost_per_hour, a))
            if not scored:
                return None
            scored.sort(key=lambda pair: pair[0])  # cheap first finds a good bound early
            candidates.append(scored)
        cheapest_rest = [sum(c[0][0] for c in candidates[i:]) for i in range(len(candidates) + 1)]

        def search(depth: int, routes: dict, prefix_cost: float) -> None:
            nonlocal evaluated
            for alone_cost, a in candidates[depth]:
                bound = prefix_cost + alone_cost + cheapest_rest[depth + 1]
                if best is not None and bound > best.cost_per_hour + COST_TIE_PER_HOUR:
                    break  # sorted by stand-alone cost: every later candidate is bounded out too
                extended = {**routes, workloads[depth].key: a}
                evaluation = evaluate_fleet(workloads[: depth + 1], snapshot, extended, cache)
                evaluated += 1
                if not evaluation.feasible:
                    continue  # (3): more workloads never repair a prefix
                if depth + 1 == len(workloads):
                    consider(extended, evaluation)
                else:
                    search(depth + 1, extended, evaluation.cost_per_hour)

        search(0, {}, 0.0)

    if best is None:
        return None
    return FleetOptimum(
        cost_per_hour=best.cost_per_hour,
        routes={k: dict(v) for k, v in best_routes.items()},
        replicas=best.replicas,
        link_load=best.link_load,
        workload_cost=best.workload_cost,
        optimal_assignments=sum(1 for c in near_best if c <= best.cost_per_hour + COST_TIE_PER_HOUR),
        evaluated=evaluated,
    )


def individual_optima_conflict(workloads: Sequence[Workload], snapshot: Snapshot) -> bool:
    """True when every workload can be placed alone but the fleet costs more than the sum (or fails)."""
    alone = [fleet_optimum((w,), snapshot) for w in workloads]
    if any(a is None for a in alone):
        return False
    fleet = fleet_optimum(workloads, snapshot)
    return fleet is None or fleet.cost_per_hour > sum(a.cost_per_hour for a in alone) + 1e-7


def fleet_assignment_count(workloads: Sequence[Workload], snapshot: Snapshot) -> int:
    """How many fleet assignments the plain cartesian product holds."""
    return math.prod(len(workload_assignments(w, snapshot)) for w in workloads)


# --- small interesting instances --------------------------------------------------------------
# One cheap "contested" pool that most workloads can run on, next to dearer fallbacks. In the
# "capacity" mode it holds about one replica, so workloads that each want it alone must share
# it; in the "link" mode it has room, but sits in the cloud behind one thin link from the site
# most workloads send from, so what one workload sends slows or blocks the others.

SITES = ("cloud", "edge-a", "edge-b")


def _pool_templates(rng: random.Random) -> dict[str, Pool]:
    def links(choices_kbps: Sequence[float], rtt_ms: Sequence[float], *sites: str) -> dict[str, LinkState]:
        return {s: LinkState(rng.choice(choices_kbps), rng.choice(rtt_ms)) for s in sites}

    thin = (500.0, 800.0, 1200.0, 2000.0)
    pools = [
        Pool("cpu-cloud", "cpu", "eu-west-1", "cloud", Resources(4, 8 * GiB), rng.choice([1, 1, 2]),
             rng.choice([0.15, 0.178]), links(thin, (10.0, 20.0, 30.0), "edge-a", "edge-b")),
        Pool("arm-cloud", "arm", "eu-west-1", "cloud", Resources(4, 8 * GiB, 1), rng.choice([1, 1, 2]),
             rng.choice([0.145, 0.2]), links(thin, (10.0, 20.0, 30.0), "edge-a", "edge-b")),
        Pool("arm-edge-a", "arm", "eu-central-1", "edge-a", Resources(6, 8 * GiB, 1), rng.choice([1, 1, 1, 2]),
             rng.choice([0.08, 0.12]), links(thin, (5.0, 10.0), "edge-b")),
        Pool("gpu-cloud", "gpu", "eu-west-1", "cloud", Resources(4, 16 * GiB, 1), rng.choice([2, 3]),
             rng.choice([0.7, 0.81]), links((2000.0, 4000.0, 8000.0), (20.0, 30.0), "edge-a", "edge-b")),
        Pool("cpu-edge-b", "cpu", "eu-central-1", "edge-b", Resources(4, 8 * GiB), rng.choice([1, 2]),
             rng.choice([0.3, 0.4]), links(thin, (5.0, 10.0), "edge-a") | links((5000.0,), (20.0,), "cloud")),
    ]
    return {p.name: p for p in pools}


def _variant(rng: random.Random, hardware: str, small: bool = False) -> Variant:
    if small:  # a second, lighter and less accurate variant on the same hardware
        base = _variant(rng, hardware)
        return dataclasses.replace(
            base, name=base.name + "-small", accuracy=base.accuracy - 0.006, latency_ms=base.latency_ms * 1.5,
            tail_latency_ms=base.tail_latency_ms * 1.5, resources=dataclasses.replace(
                base.resources, cpu_cores=base.resources.cpu_cores / 2, memory_bytes=base.resources.memory_bytes / 2))
    if hardware == "gpu":
        latency = rng.choice([2.0, 3.0])
        return Variant("trt-fp16", "gpu", 0.845, latency, latency * 1.5, 4, Resources(2, 4 * GiB, 1))
    if hardware == "cpu":
        latency = rng.choice([20.0, 30.0])
        return Variant("openvino-int8", "cpu", 0.84, latency, latency * 1.5, 2, Resources(4, 4 * GiB))
    latency = rng.choice([10.0, 12.0])
    return Variant("trt-int8-orin", "arm", 0.838, latency, latency * 1.5, 2, Resources(2, 4 * GiB, 1))


def _workload(rng: random.Random, index: int, first_hardware: str, hot_site: str, hot_share: float,
              rps_choices: Sequence[float]) -> Workload:
    others = [h for h in ("gpu", "cpu", "arm") if h != first_hardware]
    hardware = [first_hardware] + rng.sample(others, rng.choice([1, 1, 2]))
    if rng.random() < hot_share:  # most workloads send from the fleet's busiest site, over the same links
        sites = sorted({hot_site, rng.choice(SITES)} if rng.random() < 0.6 else {hot_site})
    else:
        sites = sorted(set(rng.sample(SITES, rng.choice([1, 2]))))
    return Workload(
        namespace=rng.choice(["team-a", "team-b"]),
        name=f"model-{index}",
        response_bytes=1000,
        encodings=(
            Encoding("raw", rng.choice([40_000, 60_000, 120_000, 224_000])),
            Encoding("compressed", rng.choice([16_000, 32_830]), rng.choice([-0.002, -0.005, -0.008])),
        ),
        variants=tuple(_variant(rng, h) for h in hardware)
        + ((_variant(rng, first_hardware, small=True),) if rng.random() < 0.3 else ()),
        slo_latency_ms=rng.choice([120.0, 150.0, 250.0, 400.0]),
        percentile=rng.choice([50.0, 95.0, 99.0]),
        min_accuracy=rng.choice([0.83, 0.836]),
        traffic=tuple(Traffic(s, float(rng.choice(rps_choices))) for s in sites),
        max_pools=rng.choice([1, 2, 2, 3]),
        replicas_max=rng.choice([4, 8]),
        max_cost_per_hour=rng.choice([None, None, None, 1.0]),
    )


def small_fleet(
    seed: int,
    n_workloads: int | None = None,
    n_pools: int | None = None,
    max_assignments: int = 200_000,
    require_conflict: bool = False,
) -> tuple[tuple[Workload, ...], Snapshot]:
    """A fleet small enough to enumerate, with scarce pools and thin shared links.

    n_workloads defaults to a draw from 2..3 and n_pools from 2..4. Draws are repeated from the
    same seeded stream until every workload can be placed on its own (the fleet may still be
    infeasible), the plain cartesian product holds at most `max_assignments` fleet
    assignments, and, with `require_conflict`, the workloads' individual optima conflict.
    """
    rng = random.Random(seed)
    while True:
        k = n_workloads if n_workloads is not None else rng.choice([2, 3])
        m = n_pools if n_pools is not None else rng.choice([2, 3, 4])
        templates = _pool_templates(rng)
        link_mode = rng.random() < 0.5
        if link_mode:
            hot_site = rng.choice(["edge-a", "edge-b"])
            contested = dataclasses.replace(templates[rng.choice(["cpu-cloud", "arm-cloud"])], node_count=3)
            workloads = tuple(
                _workload(rng, i, contested.hardware, hot_site, 1.0, (5.0, 8.0, 12.0, 20.0)) for i in range(k)
            )
            # thin enough that the workloads' compressed traffic from the hot site, each alone
            # comfortably under the cap, together goes over it
            sent = [
                sum(t.requests_per_second for t in w.traffic if t.site == hot_site)
                * (min(e.request_bytes for e in w.encodings) + w.response_bytes)
                for w in workloads
            ]
            alone_kbps, together_kbps = max(sent) / 0.6 / 1000.0, sum(sent) / 0.8 / 1000.0
            bandwidth_kbps = round(rng.uniform(alone_kbps, max(alone_kbps, together_kbps)), -1)
            contested = dataclasses.replace(
                contested, links={**contested.links, hot_site: LinkState(bandwidth_kbps, rng.choice([10.0, 20.0]))}
            )
            # the cheap edge box would sidestep the link, so it is left out
            rest = [p for name, p in templates.items() if name not in (contested.name, "arm-edge-a")]
        else:
            hot_site = rng.choice(["edge-a", "edge-a", "edge-b", "edge-b", "cloud"])
            contested = templates[rng.choice(["cpu-cloud", "cpu-cloud", "arm-cloud", "arm-edge-a"])]
            workloads = tuple(
                _workload(rng, i, contested.hardware if rng.random() < 0.95 else rng.choice(["gpu", "cpu", "arm"]),
                          hot_site, 0.8, (2.0, 5.0, 8.0, 12.0, 20.0))
                for i in range(k)
            )
            rest = [p for name, p in templates.items() if name != contested.name]
        chosen = [contested] + rng.sample(rest, min(m, len(rest) + 1) - 1)
        if rng.random() < 0.7 and not any(p.name in ("gpu-cloud", "cpu-edge-b") for p in chosen):
            chosen[-1] = templates[rng.choice(["gpu-cloud", "cpu-edge-b"])]  # a roomier, dearer fallback
        background_links: dict[tuple[str, str], float] = {}
        background_pools: dict[str, Resources] = {}
        if rng.random() < 0.2 and contested.links:
            background_links[(rng.choice(sorted(contested.links)), contested.name)] = rng.choice([20_000.0, 50_000.0])
        if rng.random() < 0.15:
            background_pools[rng.choice(chosen).name] = Resources(2, 2 * GiB)
        snapshot = Snapshot(tuple(chosen), background_links, background_pools)
        if not 0 < fleet_assignment_count(workloads, snapshot) <= max_assignments:
            continue
        if any(fleet_optimum((w,), snapshot) is None for w in workloads):
            continue
        if require_conflict and not individual_optima_conflict(workloads, snapshot):
            continue
        return workloads, snapshot
