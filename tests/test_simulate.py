"""The simulator: true states over time, the one-step lag of the control loops, request-weighted
scoring, outages, and the worked factory scenario under every policy."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from builders import a_pool, a_scenario, a_workload, write_manifests
from hetplace.api.errors import InvalidObject
from hetplace.api.load import load_manifests
from hetplace.engine.measure import RouteMeasure
from hetplace.sim import POLICIES
from hetplace.sim.plot import plot_simulation
from hetplace.sim.report import simulation_json
from hetplace.sim.runner import Simulation, attainment, simulate
from hetplace.sim.trace import Disruption, trace_from_manifests

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
FACTORY_SCENARIO = REPO / "manifests" / "examples" / "factory-bandwidth-drop.yaml"
DROP_S, RECOVERY_S, END_S, STEP_S = 900, 2700, 3600, 60
NOMINAL_PER_HOUR = 0.534          # cpu-cloud-eu/openvino-int8 x3 (docs/design.md §3)
DROPPED_PER_HOUR = 0.58308        # + arm-factory-eu-1/trt-int8-orin x1 for factory-eu-1 (docs/design.md §3: about 0.5831)
GPU_PER_HOUR = 0.81               # gpu-cloud-eu/trt-fp16 x1


def steps(start: int, stop: int) -> list[int]:
    return list(range(start, stop, STEP_S))


@pytest.fixture(scope="module")
def factory() -> Simulation:
    trace = trace_from_manifests(load_manifests([FACTORY_SCENARIO]), str(FACTORY_SCENARIO))
    return simulate(trace, POLICIES)


def missed(sim: Simulation, policy: str, site: str) -> list[float]:
    return [s.t_s for s in sim.runs[policy].steps for r in s.routes if r.site == site and not r.within_slo]


@pytest.mark.parametrize("policy, steps_missed", [
    pytest.param("hetplace", [DROP_S],
                 id="hetplace misses the factory site only at the drop step: its repair takes effect one step later"),
    pytest.param("static", steps(DROP_S, RECOVERY_S), id="static misses the factory site for the whole drop"),
    pytest.param("gpu-only", steps(DROP_S, RECOVERY_S),
                 id="gpu-only has no GPU the factory reaches at 250 KB/s and misses for the whole drop"),
    pytest.param("oracle", [], id="oracle decides on the state of the step itself and never misses"),
    pytest.param("edge-only", steps(0, END_S),
                 id="edge-only never places: cloud-eu's traffic does not fit the uplink to the factory's Arm box"),
])
def test_when_the_factory_site_misses_its_slo(factory, policy, steps_missed):
    assert missed(factory, policy, "factory-eu-1") == steps_missed


@pytest.mark.parametrize("policy, slo_attainment, mean_cost_per_hour, migrations", [
    pytest.param("hetplace", 1 - 20 / (120 * 60), (16 * NOMINAL_PER_HOUR + 44 * DROPPED_PER_HOUR) / 60, 1,
                 id="hetplace loses one step of the factory's 20 req/s and keeps the edge box after the recovery"),
    pytest.param("static", 1 - 30 * 20 / (120 * 60), NOMINAL_PER_HOUR, 0,
                 id="static loses thirty steps of the factory's 20 req/s at the nominal price"),
    pytest.param("gpu-only", 1 - 30 * 20 / (120 * 60), GPU_PER_HOUR, 0,
                 id="gpu-only loses as much as static and pays for a GPU"),
    pytest.param("edge-only", 0.0, 0.0, 0, id="edge-only serves nothing and costs nothing"),
    pytest.param("oracle", 1.0, (30 * NOMINAL_PER_HOUR + 30 * DROPPED_PER_HOUR) / 60, 2,
                 id="oracle meets every request and moves back when the link recovers"),
])
def test_the_factory_scenario_figures(factory, policy, slo_attainment, mean_cost_per_hour, migrations):
    run = factory.runs[policy]
    assert run.slo_attainment == pytest.approx(slo_attainment, abs=1e-9)
    assert run.mean_cost_per_hour == pytest.approx(mean_cost_per_hour, abs=5e-5)
    assert run.migrations == migrations


def test_a_control_loop_move_takes_effect_one_step_after_the_state_it_saw(factory):
    moves = {policy: [(s.t_s, m.decided_at_s, m.reason) for s in factory.runs[policy].steps for m in s.moves]
             for policy in ("hetplace", "oracle")}
    assert moves["hetplace"] == [(0, 0, "place"), (DROP_S + STEP_S, DROP_S, "repair")]
    assert moves["oracle"] == [(0, 0, "place"), (DROP_S, DROP_S, "repair"), (RECOVERY_S, RECOVERY_S, "saving")]


def test_hetplace_does_not_move_back_for_a_saving_under_min_improvement(factory):
    # back to cpu-cloud-eu alone would save 0.049/0.583 = 8.4% < minImprovementPercent 10%
    last = factory.runs["hetplace"].steps[-1]
    assert last.cost_per_hour == pytest.approx(DROPPED_PER_HOUR, abs=5e-5)
    assert {r.site: r.served_by for r in last.routes}["factory-eu-1"] == "arm-factory-eu-1/trt-int8-orin"


def test_the_drop_is_reported_as_link_disruptions(factory):
    assert factory.disruptions == (
        Disruption("link", "factory-eu-1 -> cpu-cloud-eu", DROP_S, RECOVERY_S),
        Disruption("link", "factory-eu-1 -> gpu-cloud-eu", DROP_S, RECOVERY_S),
    )


# --- small hand-made cases -------------------------------------------------------------------

def cloud_pool(name: str = "cpu-a", price: float = 0.2):
    return (a_pool(name).cpu().site("cloud-eu").nodes(count=4, cpu="4", memory="8Gi").hourly(price)
            .link("factory-eu-1", kbps=2000, rtt_ms=25))


def detector():
    return (a_workload("detector", namespace="plant").encoding("features", 10_000)
            .variant("onnx", "cpu", latency_ms=10, tail_ms=15, concurrency=2, cpu="2", memory="2Gi")
            .slo(150).traffic("cloud-eu", 90).traffic("factory-eu-1", 10))


def run(tmp_path, *objects, policies=("hetplace",)) -> Simulation:
    path = write_manifests(tmp_path / "scenario.yaml", *objects)
    return simulate(trace_from_manifests(load_manifests([path]), str(path)), policies)


def route(rps: float, latency_ms: float, slo_ms: float = 100) -> RouteMeasure:
    return RouteMeasure("ns/w", "site", rps, latency_ms, slo_ms, "pool/variant")


@pytest.mark.parametrize("routes, expected", [
    pytest.param([route(90, 50), route(10, math.inf)], 0.9, id="an unserved route counts by its requests"),
    pytest.param([route(1, 50), route(99, 150)], 0.01, id="one route within of two is not half"),
    pytest.param([route(30, 100), route(70, 100.0000001)], 1.0, id="at the SLO is within"),
    pytest.param([route(0, math.inf)], 1.0, id="no request asked, none missed"),
])
def test_attainment_is_request_weighted(routes, expected):
    assert attainment(routes) == pytest.approx(expected)


def test_a_scenario_scores_route_steps_by_their_requests(tmp_path):
    # step 0: 90 + 10 req/s within; step 60: the factory link (50 KB/s) cannot carry 10 x 11 KB/s,
    # so the factory's 10 req/s are unserved: (100 + 90) / 200, not 3 route-steps of 4
    scenario = a_scenario(duration_s=120, step_s=60).link_at(60, "factory-eu-1", "cpu-a", kbps=50)
    sim = run(tmp_path, cloud_pool(), detector(), scenario, policies=("static",))
    assert sim.runs["static"].slo_attainment == pytest.approx(190 / 200)
    (unserved,) = [r for s in sim.runs["static"].steps for r in s.routes if not r.within_slo]
    assert (unserved.site, unserved.latency_ms) == ("factory-eu-1", math.inf)
    assert "saturated" in unserved.why_missed


@pytest.mark.parametrize("policy, steps_missed", [
    pytest.param("static", [120, 180, 240], id="static stays on the pool that is down until it comes back"),
    pytest.param("hetplace", [120], id="hetplace repairs onto the other pool one step after the outage"),
    pytest.param("oracle", [], id="oracle is never on a pool that is down"),
])
def test_a_pool_down_serves_nothing_and_its_routes_count_as_misses(tmp_path, policy, steps_missed):
    scenario = a_scenario(duration_s=420, step_s=60).pool_down_at(120, "cpu-a").pool_up_at(300, "cpu-a")
    sim = run(tmp_path, cloud_pool("cpu-a", 0.2), cloud_pool("cpu-b", 0.3), detector(), scenario,
              policies=(policy,))
    misses = [(s.t_s, r.why_missed) for s in sim.runs[policy].steps for r in s.routes if not r.within_slo]
    assert sorted({t for t, _ in misses}) == steps_missed
    assert all(why == "pool cpu-a is down" for _, why in misses)
    assert len(misses) == 2 * len(steps_missed)      # both sites of the workload


def test_a_placement_on_a_pool_that_is_down_still_costs(tmp_path):
    scenario = a_scenario(duration_s=240, step_s=60).pool_down_at(60, "cpu-a")
    sim = run(tmp_path, cloud_pool("cpu-a"), detector(), scenario, policies=("static",))
    costs = [s.cost_per_hour for s in sim.runs["static"].steps]
    assert costs[0] > 0 and costs == [costs[0]] * 4
    assert sim.runs["static"].slo_attainment == pytest.approx(0.25)


def test_events_apply_cumulatively_from_the_first_step_at_or_after_them(tmp_path):
    scenario = (a_scenario(duration_s=300, step_s=60)
                .link_at(90, "factory-eu-1", "cpu-a", kbps=500)       # between steps: seen from 120
                .traffic_at(180, "plant/detector", "factory-eu-1", 20)
                .pool_down_at(180, "cpu-a").pool_up_at(240, "cpu-a"))
    path = write_manifests(tmp_path / "s.yaml", cloud_pool(), detector(), scenario)
    trace = trace_from_manifests(load_manifests([path]), str(path))
    seen = [(c.t_s, c.pools[0].links["factory-eu-1"].bandwidth_kbps, c.pools[0].down,
             {t.site: t.requests_per_second for t in c.workloads[0].traffic}["factory-eu-1"])
            for c in trace.conditions()]
    assert seen == [(0, 2000, False, 10), (60, 2000, False, 10), (120, 500, False, 10),
                    (180, 500, True, 20), (240, 500, False, 20)]


@pytest.mark.parametrize("duration_s, step_s, times", [
    pytest.param(3600, 60, steps(0, 3600), id="an hour in minutes is 60 steps, the last at 3540 s"),
    pytest.param(150, 60, [0, 60, 120], id="a duration that is no multiple of the step keeps the partial step"),
    pytest.param(0.3, 0.1, [0, 0.1, 0.2], id="fractional steps that divide the duration give no extra step"),
])
def test_the_steps_run_from_zero_to_before_the_duration(tmp_path, duration_s, step_s, times):
    scenario = a_scenario(duration_s=duration_s, step_s=step_s)
    path = write_manifests(tmp_path / "s.yaml", cloud_pool(), detector(), scenario)
    assert trace_from_manifests(load_manifests([path]), str(path)).step_times == pytest.approx(times)


@pytest.mark.parametrize("objects, field, words", [
    pytest.param(lambda: [cloud_pool(), detector(), a_scenario().pool_down_at(60, "gpu-x")],
                 "events[0].poolDown", "no such ComputePool (known: cpu-a)", id="an outage of an unknown pool"),
    pytest.param(lambda: [cloud_pool(), detector(), a_scenario().link_at(60, "factory-eu-1", "gpu-x", kbps=9)],
                 "events[0].links[0].pool", "no such ComputePool", id="a link to an unknown pool"),
    pytest.param(lambda: [cloud_pool(), detector(), a_scenario().traffic_at(60, "plant/other", "cloud-eu", 5)],
                 "events[0].traffic[0].workload", "no such InferenceWorkload (known: plant/detector)",
                 id="traffic of an unknown workload"),
    pytest.param(lambda: [cloud_pool(), detector()], None, "holds no Scenario document", id="no Scenario at all"),
    pytest.param(lambda: [detector(), a_scenario()], None, "holds no ComputePool", id="no pool to run on"),
])
def test_a_scenario_that_does_not_hold_together_is_refused(tmp_path, objects, field, words):
    path = write_manifests(tmp_path / "s.yaml", *objects())
    with pytest.raises(InvalidObject) as refused:
        trace_from_manifests(load_manifests([path]), str(path))
    assert refused.value.field == field
    assert words in str(refused.value)


def test_a_bare_workload_name_in_an_event_is_resolved(tmp_path):
    scenario = a_scenario(duration_s=120).traffic_at(60, "detector", "cloud-eu", 5)
    path = write_manifests(tmp_path / "s.yaml", cloud_pool(), detector(), scenario)
    (event,) = trace_from_manifests(load_manifests([path]), str(path)).events
    assert event.traffic[0].workload == "plant/detector"


def test_the_plot_has_a_panel_per_route_and_one_of_cost(factory, tmp_path):
    figure = plot_simulation(factory, tmp_path / "plot.png")
    assert len(figure.axes) == len(factory.routes) + 1 == 3
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert factory.trace.name in figure.get_suptitle()


def test_the_json_timeline_says_null_for_an_unserved_route(factory):
    doc = simulation_json(factory)
    at_drop = doc["policies"]["static"]["timeline"][DROP_S // STEP_S]
    factory_route = next(r for r in at_drop["routes"] if r["site"] == "factory-eu-1")
    assert at_drop["t"] == DROP_S
    assert factory_route["latencyMs"] is None and factory_route["withinSlo"] is False
