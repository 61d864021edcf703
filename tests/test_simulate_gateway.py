"""The sites' gateways in a simulation: a route whose pool is down or whose link is saturated is served,
in the same step, by the first live fallback of the routes its site holds; `--no-gateway` compares."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from builders import a_pool, a_scenario, a_workload, write_manifests
from hetplace.api.load import load_manifests
from hetplace.sim import POLICIES
from hetplace.sim.report import simulation_json, summary_table
from hetplace.sim.runner import Simulation, simulate
from hetplace.sim.trace import trace_from_manifests

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
FACTORY_SCENARIO = REPO / "manifests" / "examples" / "factory-bandwidth-drop.yaml"
STEP_S, DOWN_S, UP_S, END_S = 60, 120, 300, 420
OUTAGE = [120, 180, 240]
PLANT_A_RPS, PLANT_B_RPS = 10, 90


def plant_pool(name: str, site: str, **links: tuple[float, float]):
    """A CPU pool at `site`, reached from the other plants over `links` (site=(kbps, rtt_ms))."""
    pool = a_pool(name).cpu().site(site).nodes(count=4, cpu="4", memory="8Gi").hourly(0.2)
    for other, (kbps, rtt_ms) in links.items():
        pool = pool.link(other.replace("_", "-"), kbps=kbps, rtt_ms=rtt_ms)
    return pool


def detector(slo_ms: float = 150, plant_c_rps: float = 0, name: str = "detector"):
    """MinLatency serves each plant from the pool at that plant: one group per plant, one replica each
    (onnx: 10 ms, concurrency 2, so 200 req/s per replica)."""
    workload = (a_workload(name, namespace="plant").encoding("features", 10_000)
                .variant("onnx", "cpu", latency_ms=10, tail_ms=15, concurrency=2, cpu="2", memory="2Gi")
                .slo(slo_ms).traffic("plant-a", PLANT_A_RPS).traffic("plant-b", PLANT_B_RPS)
                .policy(objective="MinLatency"))
    return workload.traffic("plant-c", plant_c_rps) if plant_c_rps else workload


def two_plants(plant_a_to_b_rtt_ms: float = 25):
    return [plant_pool("cpu-a", "plant-a", plant_b=(2000, 25)),
            plant_pool("cpu-b", "plant-b", plant_a=(2000, plant_a_to_b_rtt_ms))]


def three_plants():
    """plant-a's fallbacks, as ranked when deployed: cpu-c (farther, but idle) before cpu-b (busy)."""
    return [plant_pool("cpu-a", "plant-a", plant_b=(2000, 25)),
            plant_pool("cpu-b", "plant-b", plant_a=(2000, 25)),
            plant_pool("cpu-c", "plant-c", plant_a=(2000, 40))]


def outage():
    return a_scenario(duration_s=END_S, step_s=STEP_S).pool_down_at(DOWN_S, "cpu-a").pool_up_at(UP_S, "cpu-a")


def run(tmp_path: Path, *objects, policies=("static",), gateway: bool = True) -> Simulation:
    path = write_manifests(tmp_path / "scenario.yaml", *objects)
    return simulate(trace_from_manifests(load_manifests([path]), str(path)), policies, gateway=gateway)


def plant_a(sim: Simulation, policy: str) -> list[tuple[float, str, bool, bool]]:
    """plant-a's route at each step: (t, served by, by a fallback, within the SLO)."""
    return [(s.t_s, r.served_by if math.isfinite(r.latency_ms) else "unserved", r.fallback, r.within_slo)
            for s in sim.runs[policy].steps for r in s.routes if r.site == "plant-a"]


def at(sim: Simulation, policy: str, t_s: float, site: str):
    step = next(s for s in sim.runs[policy].steps if s.t_s == t_s)
    return next(r for r in step.routes if r.site == site)


HOME = ("cpu-a/onnx", False, True)
FALLBACK = ("cpu-b/onnx", True, True)
UNSERVED = ("unserved", False, False)
MOVED = ("cpu-b/onnx", False, True)      # the repair landed: cpu-b is the decided route


@pytest.mark.parametrize("policy, gateway, expected", [
    pytest.param("static", True, [HOME, HOME, FALLBACK, FALLBACK, FALLBACK, HOME, HOME],
                 id="static with the gateway serves plant-a from cpu-b from the step its pool goes down"),
    pytest.param("static", False, [HOME, HOME, UNSERVED, UNSERVED, UNSERVED, HOME, HOME],
                 id="static without the gateway leaves plant-a unserved for the whole outage"),
    pytest.param("hetplace", True, [HOME, HOME, FALLBACK, MOVED, MOVED, MOVED, MOVED],
                 id="hetplace with the gateway serves plant-a by the fallback until its repair lands"),
    pytest.param("hetplace", False, [HOME, HOME, UNSERVED, MOVED, MOVED, MOVED, MOVED],
                 id="hetplace without the gateway leaves plant-a unserved until its repair lands a step later"),
])
def test_a_site_whose_pool_goes_down_is_served_by_its_fallback_in_the_same_step(tmp_path, policy, gateway, expected):
    sim = run(tmp_path, *two_plants(), detector(), outage(), policies=(policy,), gateway=gateway)
    assert plant_a(sim, policy) == [(t, *route) for t, route in zip(range(0, END_S, STEP_S), expected)]


def test_the_moved_traffic_loads_the_fallback_group_and_slows_its_own_route(tmp_path):
    with_gateway = run(tmp_path, *two_plants(), detector(), outage())
    without = run(tmp_path, *two_plants(), detector(), outage(), gateway=False)
    assert at(with_gateway, "static", DOWN_S, "plant-b").latency_ms > at(without, "static", DOWN_S, "plant-b").latency_ms
    assert at(with_gateway, "static", 0, "plant-b").latency_ms == at(without, "static", 0, "plant-b").latency_ms


@pytest.mark.parametrize("event, served_by", [
    pytest.param(lambda s: s.link_at(DOWN_S, "plant-a", "cpu-c", kbps=50), "cpu-b/onnx",
                 id="a fallback whose link the site's traffic would saturate is skipped for the next one"),
    pytest.param(lambda s: s.traffic_at(DOWN_S, "plant/detector", "plant-c", 195), "cpu-b/onnx",
                 id="a fallback group the site's traffic would overload is skipped for the next one"),
    pytest.param(lambda s: s.link_at(DOWN_S, "plant-a", "cpu-c", kbps=2000, rtt_ms=200), "cpu-c/onnx",
                 id="the first fallback held is taken though its link has slowed since: the gateway does not re-rank"),
])
def test_the_first_live_fallback_of_the_list_held_since_the_deployment_serves(tmp_path, event, served_by):
    sim = run(tmp_path, *three_plants(), detector(plant_c_rps=10), event(outage()))
    route = at(sim, "static", DOWN_S, "plant-a")
    assert (route.served_by, route.fallback, math.isfinite(route.latency_ms)) == (served_by, True, True)


@pytest.mark.parametrize("event", [
    pytest.param(lambda s: s.link_at(DOWN_S, "plant-a", "cpu-b", kbps=50),
                 id="its link would be saturated by plant-a's 110 KB/s"),
    pytest.param(lambda s: s.traffic_at(DOWN_S, "plant/detector", "plant-a", 120),
                 id="its group of one replica (200 req/s) cannot take 90 + 120 req/s"),
])
def test_a_fallback_without_room_is_not_used(tmp_path, event):
    sim = run(tmp_path, *two_plants(), detector(), event(outage()))
    route = at(sim, "static", DOWN_S, "plant-a")
    assert (route.served_by, route.fallback, route.latency_ms) == ("cpu-a/onnx", False, math.inf)
    assert route.why_missed == "pool cpu-a is down"
    assert sim.runs["static"].fallback_route_steps == 0


def test_a_site_whose_shared_link_the_first_failover_relieved_stays_on_its_route(tmp_path):
    # two workloads send plant-a's 2 x 110 KB/s over a link that now carries 210 KB/s: both time out;
    # once the first has failed over to cpu-b, the link carries the second alone (52%) and serves it within the SLO
    scenario = a_scenario(duration_s=END_S, step_s=STEP_S).link_at(DOWN_S, "plant-a", "cpu-a", kbps=210, rtt_ms=1)
    sim = run(tmp_path, *two_plants(), detector(name="first"), detector(name="second"), scenario)
    step = next(s for s in sim.runs["static"].steps if s.t_s == DOWN_S)
    plant_a_routes = {r.workload: (r.served_by, r.fallback, r.within_slo) for r in step.routes if r.site == "plant-a"}
    assert plant_a_routes == {"plant/first": ("cpu-b/onnx", True, True), "plant/second": ("cpu-a/onnx", False, True)}
    assert step.saved_route_steps == 2


def test_a_route_merely_over_its_slo_is_not_moved(tmp_path):
    scenario = a_scenario(duration_s=END_S, step_s=STEP_S).link_at(DOWN_S, "plant-a", "cpu-a", kbps=2000, rtt_ms=200)
    sim = run(tmp_path, *two_plants(), detector(), scenario)
    route = at(sim, "static", DOWN_S, "plant-a")
    assert (route.served_by, route.fallback, route.within_slo) == ("cpu-a/onnx", False, False)
    assert "over the 150 ms SLO" in route.why_missed
    assert (sim.runs["static"].fallback_route_steps, sim.runs["static"].saved_route_steps) == (0, 0)


# plant-a's 10 req/s are out of 100 each step, over 7 steps: 700 request-steps
@pytest.mark.parametrize("pools, slo_ms, fallback_steps, saved_steps, with_gateway, without_gateway", [
    pytest.param(two_plants(), 150, 3, 3, 1.0, 1 - 3 * PLANT_A_RPS / 700,
                 id="three outage steps served within the SLO by the fallback are three saved"),
    pytest.param(two_plants(plant_a_to_b_rtt_ms=140), 150, 3, 0, 1 - 3 * PLANT_A_RPS / 700,
                 1 - 3 * PLANT_A_RPS / 700,
                 id="a fallback 140 ms away serves over the SLO: served by a fallback, none saved"),
    pytest.param(two_plants(), 48, 3, 0, 1 - 3 * (PLANT_A_RPS + PLANT_B_RPS) / 700, 1 - 3 * PLANT_A_RPS / 700,
                 id="with a 48 ms SLO the moved traffic pushes plant-b over it too: the gateway costs attainment"),
])
def test_saved_route_steps_and_attainment_by_hand(tmp_path, pools, slo_ms, fallback_steps, saved_steps,
                                                   with_gateway, without_gateway):
    on = run(tmp_path, *pools, detector(slo_ms), outage()).runs["static"]
    off = run(tmp_path, *pools, detector(slo_ms), outage(), gateway=False).runs["static"]
    assert (on.fallback_route_steps, on.saved_route_steps) == (fallback_steps, saved_steps)
    assert (off.fallback_route_steps, off.saved_route_steps) == (0, 0)
    assert on.slo_attainment == pytest.approx(with_gateway)
    assert off.slo_attainment == pytest.approx(without_gateway)


def test_the_json_says_which_route_served_and_what_the_gateway_saved(tmp_path):
    doc = simulation_json(run(tmp_path, *two_plants(), detector(), outage()))
    static = doc["policies"]["static"]
    assert doc["gateway"] is True
    assert (static["fallbackRouteSteps"], static["savedRouteSteps"]) == (3, 3)
    at_outage = {r["site"]: r for r in static["timeline"][DOWN_S // STEP_S]["routes"]}
    assert (at_outage["plant-a"]["servedBy"], at_outage["plant-a"]["fallback"]) == ("cpu-b/onnx", True)
    assert (at_outage["plant-b"]["servedBy"], at_outage["plant-b"]["fallback"]) == ("cpu-b/onnx", False)


def test_the_table_has_a_column_of_route_steps_the_gateway_saved(tmp_path):
    on = summary_table(run(tmp_path, *two_plants(), detector(), outage()))
    off = summary_table(run(tmp_path, *two_plants(), detector(), outage(), gateway=False))
    assert on.columns[-1].header == off.columns[-1].header == "saved by gateway"
    assert list(on.columns[-1].cells) == ["3"]
    assert [str(cell) for cell in off.columns[-1].cells] == ["off"]


@pytest.fixture(scope="module")
def factory_both_ways() -> dict[bool, Simulation]:
    trace = trace_from_manifests(load_manifests([FACTORY_SCENARIO]), str(FACTORY_SCENARIO))
    return {gateway: simulate(trace, POLICIES, gateway=gateway) for gateway in (True, False)}


@pytest.mark.parametrize("policy", POLICIES)
def test_the_factory_demo_is_the_same_with_and_without_the_gateway(factory_both_ways, policy):
    # the one placement running when the uplink drops has a single group: there is nothing to fail over to
    on, off = factory_both_ways[True].runs[policy], factory_both_ways[False].runs[policy]
    assert (on.slo_attainment, on.mean_cost_per_hour, on.migrations) == \
        (off.slo_attainment, off.mean_cost_per_hour, off.migrations)
    assert (on.fallback_route_steps, on.saved_route_steps) == (0, 0)


def test_the_bundled_pool_down_example_shows_what_the_gateway_saves():
    path = REPO / "manifests" / "examples" / "two-plants-pool-down.yaml"
    trace = trace_from_manifests(load_manifests([path]), str(path))
    with_gateway = simulation_json(simulate(trace, ("hetplace", "static")))
    without = simulation_json(simulate(trace, ("hetplace", "static"), gateway=False))
    saved = {p: with_gateway["policies"][p]["savedRouteSteps"] for p in ("hetplace", "static")}
    assert saved == {"hetplace": 1, "static": 15}, "plant-a's 15 outage steps; hetplace's repair lands one step later"
    for policy in ("hetplace", "static"):
        assert with_gateway["policies"][policy]["sloAttainment"] == 1.0
        assert without["policies"][policy]["sloAttainment"] < 1.0
