"""The engine's single-workload solve checked against an independent brute-force reading of model v1."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import reference_model as reference
from hetplace.api.pool import tco_cost_per_hour
from hetplace.engine.decision import Decision
from hetplace.engine.optimise import solve
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

pytestmark = pytest.mark.unit

GiB = 2**30
ROUTE_LATENCY_TOLERANCE_MS = 0.01
COST_RELATIVE_TOLERANCE = 1e-6


# --- the reference's own queueing, against the textbook ---------------------------------------

def erlang_c_by_sums(servers: int, offered_load: float) -> float:
    """Erlang C straight from its definition: the queued term over all terms."""
    queued = offered_load**servers / math.factorial(servers) * servers / (servers - offered_load)
    idle = sum(offered_load**k / math.factorial(k) for k in range(servers))
    return queued / (idle + queued)


@pytest.mark.parametrize(("servers", "offered_load", "waiting"), [
    pytest.param(1, 0.5, 0.5, id="one server waits as often as it is busy"),
    pytest.param(2, 1.0, 1 / 3, id="two servers at half load make one in three wait"),
    pytest.param(6, 4.8, erlang_c_by_sums(6, 4.8), id="six servers at 80 percent match the sum formula"),
    pytest.param(40, 30.0, erlang_c_by_sums(40, 30.0), id="forty servers at 75 percent match the sum formula"),
])
def test_reference_erlang_c_matches_the_textbook(servers: int, offered_load: float, waiting: float) -> None:
    assert reference.erlang_c(servers, offered_load) == pytest.approx(waiting, rel=1e-12)


# --- the worked example of docs/design.md §3 ----------------------------------------------------------

def factory_pools(factory_to_cloud_kbps: float) -> tuple[Pool, ...]:
    to_cloud = {"factory-eu-1": LinkState(factory_to_cloud_kbps, 25)}
    arm_box = tco_cost_per_hour(capex=600, amortization_years=3, power_watts=25, pue=1.0,
                                electricity_per_kwh=0.25, opex_per_hour=0.02)
    return (
        Pool("gpu-cloud-eu", "gpu", "eu-west-1", "cloud-eu", Resources(4, 16 * GiB, 1), 4, 0.81, to_cloud),
        Pool("cpu-cloud-eu", "cpu", "eu-west-1", "cloud-eu", Resources(4, 8 * GiB), 8, 0.178, to_cloud),
        Pool("arm-factory-eu-1", "arm", "eu-central-1", "factory-eu-1", Resources(6, 8 * GiB, 1), 2, arm_box,
             {"cloud-eu": LinkState(2000, 25)}),
        Pool("gpu-cloud-us", "gpu", "us-east-1", "cloud-us", Resources(4, 16 * GiB, 1), 4, 0.70,
             {"factory-eu-1": LinkState(5000, 90), "cloud-eu": LinkState(50000, 80)}),
    )


FACTORY_WORKLOAD = Workload(
    namespace="factory",
    name="defect-detector",
    response_bytes=1000,
    encodings=(Encoding("raw", 224_000), Encoding("compressed", 32_830, -0.005)),
    variants=(
        Variant("trt-fp16", "gpu", 0.845, 2.0, 3.0, 4, Resources(2, 4 * GiB, 1)),
        Variant("openvino-int8", "cpu", 0.84, 30, 45, 2, Resources(4, 4 * GiB)),
        Variant("trt-int8-orin", "arm", 0.838, 12, 18, 2, Resources(2, 4 * GiB, 1)),
    ),
    slo_latency_ms=150,
    percentile=99,
    min_accuracy=0.83,
    traffic=(Traffic("factory-eu-1", 20), Traffic("cloud-eu", 100)),
    regions=("eu-west-1", "eu-central-1"),
)

# site -> (pool, variant, replicas, encoding, predicted latency in ms to docs/design.md's one decimal)
Routes = dict[str, tuple[str, str, int, str, float]]


def site_table(groups) -> Routes:
    """Reference groups and engine groups alike, as site -> (pool, variant, replicas, encoding, ms)."""
    return {
        r.site: (g.pool, g.variant, g.replicas, r.encoding, r.predicted_latency_ms)
        for g in groups
        for r in g.routes
    }


def reference_routes(w: Workload, snap: Snapshot) -> tuple[float, Routes]:
    best = reference.optimum(w, snap).best
    assert best is not None, "the reference finds no placement"
    return best.cost_per_hour, site_table(best.groups)


def engine_routes(w: Workload, snap: Snapshot) -> tuple[float, Routes]:
    decision = solve(w, snap)
    assert decision.feasible, decision.reason
    return decision.cost_per_hour, site_table(decision.groups)


WORKED_EXAMPLE = [
    pytest.param(
        2000,
        0.534,
        {"cloud-eu": ("cpu-cloud-eu", "openvino-int8", 3, "raw", 82.9),
         "factory-eu-1": ("cpu-cloud-eu", "openvino-int8", 3, "compressed", 132.8)},
        id="at 2000 KB/s both sites share three cpu-cloud-eu replicas and the factory compresses",
    ),
    pytest.param(
        250,
        0.5831,
        {"cloud-eu": ("cpu-cloud-eu", "openvino-int8", 3, "raw", 68.6),
         "factory-eu-1": ("arm-factory-eu-1", "trt-int8-orin", 1, "raw", 25.1)},
        id="at 250 KB/s the factory moves to one replica on its own arm box and sends raw",
    ),
]
SOLVERS = [
    pytest.param(reference_routes, id="the reference model says so"),
    pytest.param(engine_routes, id="the engine says so"),
]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("factory_kbps", "cost_per_hour", "expected"), WORKED_EXAMPLE)
def test_worked_example(solver, factory_kbps: float, cost_per_hour: float, expected: Routes) -> None:
    cost, routes = solver(FACTORY_WORKLOAD, Snapshot(factory_pools(factory_kbps)))

    assert cost == pytest.approx(cost_per_hour, abs=5e-5)
    assert {site: shape[:4] for site, shape in routes.items()} == {site: e[:4] for site, e in expected.items()}
    for site, (*_, latency_ms) in expected.items():
        assert routes[site][4] == pytest.approx(latency_ms, abs=0.05), site


def test_worked_example_rejects_the_us_pool_for_its_region() -> None:
    decision = solve(FACTORY_WORKLOAD, Snapshot(factory_pools(2000)))

    assert any(r.pool == "gpu-cloud-us" and "region" in r.reason.lower() for r in decision.rejected)
    assert all(g.pool != "gpu-cloud-us" for g in decision.groups)


def one_gpu_behind_a_factory_link(objective: str) -> tuple[Workload, Snapshot]:
    """5 rps of 224 KB images over 2000 KB/s: raw meets a 400 ms SLO, compressed is far faster."""
    workload = dataclasses.replace(
        FACTORY_WORKLOAD, variants=FACTORY_WORKLOAD.variants[:1], slo_latency_ms=400,
        traffic=(Traffic("factory-eu-1", 5),), regions=(), objective=objective,
    )
    pool = Pool("gpu-cloud-eu", "gpu", "eu-west-1", "cloud-eu", Resources(4, 16 * GiB, 1), 1, 0.81,
                {"factory-eu-1": LinkState(2000, 25)})
    return workload, Snapshot((pool,))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("objective", "expected"), [
    pytest.param("MinCost", ("gpu-cloud-eu", "trt-fp16", 1, "raw", 285.1),
                 id="MinCost keeps the preferred raw encoding while it meets the SLO"),
    pytest.param("MinLatency", ("gpu-cloud-eu", "trt-fp16", 1, "compressed", 46.5),
                 id="MinLatency compresses when that is faster at the same cost"),
])
def test_encoding_follows_the_objective(solver, objective: str, expected: tuple) -> None:
    cost, routes = solver(*one_gpu_behind_a_factory_link(objective))

    assert cost == pytest.approx(0.81)
    assert routes["factory-eu-1"][:4] == expected[:4]
    assert routes["factory-eu-1"][4] == pytest.approx(expected[4], abs=0.05)


# --- random small fleets ----------------------------------------------------------------------

SITES = ("cloud-eu", "factory-1", "city-2")
POOL_SITES = SITES + ("cloud-us",)
HARDWARE = ("gpu", "cpu", "arm")
REGIONS = ("eu-west-1", "eu-central-1", "us-east-1")
NAMESPACES = ("factory", "retail")
# Preference order as a user would list it; accuracy deltas never make a sum land on a floor below.
ENCODINGS = (
    Encoding("raw", 224_000),
    Encoding("compressed", 32_830, -0.004),
    Encoding("features", 20_390, -0.012),
    Encoding("thumbnail", 6_000, -0.021),
)
ACCURACIES = (0.82, 0.83, 0.84, 0.85, 0.86)
ACCURACY_FLOORS = (0.795, 0.805, 0.805, 0.815, 0.825, 0.835)
# 120-300 KB/s is where a raw image stops fitting; 20-200 MB/s are good cloud links.
BANDWIDTHS_KBPS = (120, 250, 300, 600, 2000, 2000, 20_000, 20_000, 200_000)


@st.composite
def pools(draw, index: int, wanted: tuple[str, ...]) -> Pool:
    """A pool, usually of a hardware class some variant in `wanted` runs on."""
    hardware = draw(st.sampled_from(wanted + wanted + HARDWARE))
    accelerators = 0 if hardware == "cpu" else draw(st.sampled_from((1, 1, 2, 0)))
    cpu_cores, memory_gib = draw(st.sampled_from((4, 8, 16, 2))), draw(st.sampled_from((8, 16, 32, 4)))
    node = Resources(cpu_cores, memory_gib * GiB, accelerators)
    site = draw(st.sampled_from(POOL_SITES))
    # an explicit link to the pool's own site (which beats the local one) is the exception
    linked = draw(st.lists(st.sampled_from(SITES), unique=True, min_size=2, max_size=3))
    if site in linked and draw(st.sampled_from((True, True, False))):
        linked.remove(site)
    links = {
        other: LinkState(draw(st.sampled_from(BANDWIDTHS_KBPS)), draw(st.integers(1, 90))) for other in linked
    }
    hourly = st.integers(20, 1200).map(lambda mills: mills / 1000)
    owned = st.builds(tco_cost_per_hour, st.integers(200, 4000), st.sampled_from((3, 4, 5)),
                      st.integers(10, 300), st.sampled_from((1.0, 1.3)), st.sampled_from((0.12, 0.25)),
                      st.sampled_from((0.0, 0.02)))
    return Pool(
        name=f"{hardware}-pool-{index}",
        hardware=hardware,
        region=draw(st.sampled_from(REGIONS)),
        site=site,
        node=node,
        node_count=draw(st.integers(1, 4)),
        node_cost_per_hour=draw(st.one_of(hourly, owned)),
        links=links,
        allowed_namespaces=draw(st.sampled_from(((),) * 5 + (("factory",), ("retail",), NAMESPACES))),
        down=draw(st.sampled_from((False,) * 7 + (True,))),
    )


@st.composite
def variants(draw, index: int) -> Variant:
    hardware = draw(st.sampled_from(HARDWARE))
    latency_ms = draw(st.integers(4, 160)) / 4
    return Variant(
        name=f"{hardware}-variant-{index}",
        hardware=hardware,
        accuracy=draw(st.sampled_from(ACCURACIES)),
        latency_ms=latency_ms,
        tail_latency_ms=latency_ms * draw(st.integers(10, 25)) / 10,
        concurrency=draw(st.integers(1, 4)),
        resources=Resources(
            draw(st.sampled_from((0.5, 1, 2, 4))),
            draw(st.sampled_from((1, 2, 4, 8))) * GiB,
            0 if hardware == "cpu" else draw(st.sampled_from((0, 1))),
        ),
    )


@st.composite
def snapshots(draw, fleet: tuple[Pool, ...]) -> Snapshot:
    """The fleet with what other workloads already send over its links and hold in its nodes."""
    link_load = {}
    for pool in fleet:
        for site, state in pool.links.items():
            share = draw(st.sampled_from((0.0, 0.0, 0.0, 0.2, 0.5)))
            if share:
                link_load[(site, pool.name)] = share * state.bandwidth_kbps * 1000
    used = {}
    for pool in fleet:
        if draw(st.booleans()):
            whole = pool.capacity
            used[pool.name] = Resources(
                draw(st.integers(0, int(whole.cpu_cores) // 2)),
                draw(st.integers(0, int(whole.memory_bytes // GiB) // 2)) * GiB,
                draw(st.integers(0, whole.accelerators)),
            )
    return Snapshot(fleet, link_load, used)


@st.composite
def instances(draw, objectives: tuple[str, ...] = ("MinCost", "MinLatency")) -> tuple[Workload, Snapshot]:
    """One workload and 2-5 pools: tight and wide links, residency, tenancy, budgets, busy pools."""
    models = tuple(draw(variants(i)) for i in range(draw(st.integers(1, 3))))
    fleet = tuple(draw(pools(i, tuple(v.hardware for v in models))) for i in range(draw(st.integers(2, 5))))
    names = tuple(p.name for p in fleet)
    replicas_min = draw(st.sampled_from((0, 1, 1, 2)))
    sites = draw(st.lists(st.sampled_from(SITES), unique=True, min_size=1, max_size=3))
    workload = Workload(
        namespace=draw(st.sampled_from(NAMESPACES)),
        name="detector",
        response_bytes=draw(st.sampled_from((200, 1000, 4000))),
        encodings=tuple(draw(st.lists(st.sampled_from(ENCODINGS), unique_by=lambda e: e.name,
                                      min_size=1, max_size=3))),
        variants=models,
        slo_latency_ms=draw(st.integers(40, 400)),
        percentile=draw(st.sampled_from((50, 90, 95, 99))),
        min_accuracy=draw(st.sampled_from(ACCURACY_FLOORS)),
        traffic=tuple(Traffic(site, draw(st.integers(1, 80)) / 4) for site in sites),
        regions=draw(st.sampled_from(((),) * 4 + (("eu-west-1", "eu-central-1"), ("eu-west-1", "us-east-1")))),
        pools=draw(st.sampled_from(((),) * 5 + (names[:2], names[1:]))),
        max_pools=draw(st.integers(1, 3)),
        replicas_min=replicas_min,
        replicas_max=max(1, replicas_min + draw(st.sampled_from((0, 1, 3, 6, 12, 30)))),
        objective=draw(st.sampled_from(objectives)),
        max_cost_per_hour=draw(st.one_of(st.none(), st.integers(5, 400).map(lambda cents: cents / 100))),
        max_utilization=draw(st.sampled_from((0.6, 0.8, 0.95))),
        max_link_utilization=draw(st.sampled_from((0.5, 0.8, 0.95))),
    )
    return workload, draw(snapshots(fleet))


def per_site(decision: Decision) -> dict[str, tuple[str, str, int, str]]:
    return {r.site: (g.pool, g.variant, g.replicas, r.encoding) for g in decision.groups for r in g.routes}


def fleets(max_examples: int):
    """Hypothesis settings sized so the file runs in well under a minute, the same way on every run."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("objective", [
    pytest.param("MinCost", id="MinCost picks what brute force finds cheapest, preferring earlier encodings"),
    pytest.param("MinLatency", id="MinLatency picks what brute force finds fastest, then cheapest"),
])
@fleets(400)
@given(data=st.data())
def test_engine_agrees_with_brute_force(objective: str, data: st.DataObject) -> None:
    w, snap = data.draw(instances((objective,)))
    decision = solve(w, snap)
    expected = reference.optimum(w, snap)
    event("feasible" if expected.best else "infeasible")

    assert decision.feasible == (expected.best is not None), decision.reason
    if expected.best is None:
        return
    event("unique optimum" if expected.unique else "tied optimum")
    if not expected.cost_ambiguous:
        assert decision.cost_per_hour == pytest.approx(expected.best.cost_per_hour, rel=COST_RELATIVE_TOLERANCE)
    if objective == "MinLatency":
        assert decision.worst_latency_ms == pytest.approx(expected.best.worst_s * 1000, abs=1e-6)
    if expected.unique:
        assert per_site(decision) == expected.best.per_site()


def assert_keeps_the_rules(w: Workload, snap: Snapshot, decision: Decision) -> None:
    """What every returned placement owes docs/design.md §3, whichever optimum it picked."""
    assert decision.cost_per_hour >= 0
    if not decision.feasible:
        assert decision.groups == ()
        return
    pools = {p.name: p for p in snap.pools}
    variants = {v.name: v for v in w.variants}
    encodings = {e.name: i for i, e in enumerate(w.encodings)}
    traffic = {t.site: t for t in w.traffic}
    assert len(decision.groups) <= w.max_pools
    assert len({g.pool for g in decision.groups}) == len(decision.groups), "one variant per pool"
    assert sorted(r.site for g in decision.groups for r in g.routes) == sorted(traffic), "one route per site"
    group_costs = sum(g.cost_per_hour for g in decision.groups)
    assert decision.cost_per_hour == pytest.approx(group_costs, rel=COST_RELATIVE_TOLERANCE)
    if w.max_cost_per_hour is not None:
        assert decision.cost_per_hour <= w.max_cost_per_hour + reference.COST_TIE_PER_HOUR
    for group in decision.groups:
        pool, variant = pools[group.pool], variants[group.variant]
        assert not pool.down and variant.hardware == pool.hardware
        assert not w.regions or pool.region in w.regions, "residency: region"
        assert not w.pools or pool.name in w.pools, "residency: pool list"
        assert not pool.allowed_namespaces or w.namespace in pool.allowed_namespaces, "tenancy"
        assert group.cost_per_hour >= 0
        for route in group.routes:
            assert variant.accuracy + w.encodings[encodings[route.encoding]].accuracy_delta >= w.min_accuracy
            assert route.link_utilization <= w.max_link_utilization
            assert route.predicted_latency_ms <= w.slo_latency_ms + 1e-9
            assert route.requests_per_second == traffic[route.site].requests_per_second
        routes = tuple((traffic[r.site], encodings[r.encoding]) for r in group.routes)
        expected = reference.evaluate_group(w, snap, pool, variant, routes)
        assert expected is not None, f"the reference finds {group.pool}/{group.variant} infeasible"
        assert group.replicas == expected.replicas
        assert group.replicas == max(w.replicas_min, 1) or reference.group_with_replicas(
            w, snap, pool, variant, routes, group.replicas - 1) is None, "one replica fewer would do"
        assert group.cost_per_hour == pytest.approx(expected.cost_per_hour, rel=COST_RELATIVE_TOLERANCE)
        by_site = {r.site: r for r in expected.routes}
        for route in group.routes:
            mine = by_site[route.site]
            close = dict(abs=ROUTE_LATENCY_TOLERANCE_MS)
            assert route.predicted_latency_ms == pytest.approx(mine.predicted_latency_ms, **close)
            assert route.network_ms == pytest.approx(mine.network_s * 1000, **close)
            assert route.compute_ms == pytest.approx(mine.compute_s * 1000, **close)
            assert route.link_utilization == pytest.approx(mine.link_utilization, abs=1e-9)


@fleets(500)
@given(instances())
def test_every_placement_keeps_the_rules(instance: tuple[Workload, Snapshot]) -> None:
    w, snap = instance
    assert_keeps_the_rules(w, snap, solve(w, snap))


@fleets(300)
@given(instances(), st.randoms(use_true_random=False))
def test_shuffled_inputs_give_the_same_decision(instance: tuple[Workload, Snapshot], rng) -> None:
    w, snap = instance
    shuffled_pools = rng.sample(snap.pools, len(snap.pools))
    shuffled = dataclasses.replace(
        w,
        variants=tuple(rng.sample(w.variants, len(w.variants))),
        traffic=tuple(rng.sample(w.traffic, len(w.traffic))),
    )
    again = solve(shuffled, Snapshot(tuple(shuffled_pools), snap.link_load_bytes_per_s, snap.pool_used))
    first = solve(w, snap)

    assert (again.feasible, again.fingerprint(), again.cost_per_hour) == (
        first.feasible, first.fingerprint(), first.cost_per_hour)
