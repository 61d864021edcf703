"""`hetplace simulate` run as a user runs it: output shapes, policies, the plot, the progress bar, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builders import a_pool, a_scenario, a_workload, write_manifests

pytestmark = pytest.mark.cli

REPO = Path(__file__).resolve().parents[1]
FACTORY_SCENARIO = REPO / "manifests" / "examples" / "factory-bandwidth-drop.yaml"
ALL = ["hetplace", "static", "gpu-only", "edge-only", "oracle"]


def hetplace(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hetplace", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def simulate_factory(*extra: str) -> subprocess.CompletedProcess:
    return hetplace("simulate", FACTORY_SCENARIO, *extra)


def test_json_has_exactly_the_documented_keys():
    run = simulate_factory("--policy", "all", "-o", "json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert list(doc) == ["scenario", "steps", "stepSeconds", "gateway", "policies"]
    assert (doc["scenario"], doc["steps"], doc["stepSeconds"], doc["gateway"]) == ("factory-bandwidth-drop", 60, 60, True)
    assert list(doc["policies"]) == ALL
    for policy in doc["policies"].values():
        assert list(policy) == ["sloAttainment", "meanCostPerHour", "migrations", "resizes", "fallbackRouteSteps",
                                "savedRouteSteps", "timeline"]
        assert len(policy["timeline"]) == 60
        step = policy["timeline"][0]
        assert list(step) == ["t", "costPerHour", "routes", "moves", "unplaced"]
        assert all(list(r) == ["workload", "site", "servedBy", "fallback", "requestsPerSecond", "latencyMs",
                               "withinSlo", "whyMissed"] for r in step["routes"])
    repair = doc["policies"]["hetplace"]["timeline"][16]["moves"][0]
    assert list(repair) == ["workload", "reason", "kind", "decidedAt", "from", "to", "why"]
    assert repair["kind"] == "move"
    assert (repair["reason"], repair["decidedAt"]) == ("repair", 900)
    assert doc["policies"]["hetplace"]["sloAttainment"] == pytest.approx(1 - 20 / 7200, abs=1e-6)


@pytest.mark.parametrize("options, policies", [
    pytest.param([], ["hetplace"], id="hetplace alone by default"),
    pytest.param(["--policy", "all"], ALL, id="all runs every policy in the documented order"),
    pytest.param(["--policy", "oracle", "--policy", "static", "--policy", "oracle"], ["oracle", "static"],
                 id="repeated policies run once each in the order given"),
])
def test_which_policies_run(options, policies):
    run = simulate_factory(*options, "-o", "json")
    assert run.returncode == 0, run.stderr
    assert list(json.loads(run.stdout)["policies"]) == policies


def test_the_table_compares_the_policies_and_says_what_moved():
    run = simulate_factory("--policy", "all")
    assert run.returncode == 0, run.stderr
    for words in ("hetplace", "99.72%", "91.67%", "100.00%", "factory-eu-1", "unserved", "saved by gateway",
                  "repair (decided at t=900 s)", "edge-only: factory/defect-detector never placed"):
        assert words in run.stdout


def test_plot_writes_a_png(tmp_path):
    png = tmp_path / "out" / "factory.png"
    run = simulate_factory("--policy", "hetplace", "--policy", "static", "--plot", png)
    assert run.returncode == 0, run.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in run.stderr


def test_the_progress_bar_goes_to_stderr_and_leaves_json_on_stdout_intact():
    run = simulate_factory("--policy", "all", "-o", "json", "--progress")
    assert run.returncode == 0, run.stderr
    assert list(json.loads(run.stdout)["policies"]) == ALL
    assert "simulating factory-bandwidth-drop" in run.stderr


def test_the_cli_starts_without_matplotlib():
    probe = "import sys, hetplace.cli; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def two_scenarios():
    return [a_scenario("first"), a_scenario("second")]


@pytest.mark.parametrize("objects, words", [
    pytest.param(lambda: [], "holds no Scenario document (kind: Scenario", id="pools and a workload but no Scenario"),
    pytest.param(two_scenarios, "holds 2 Scenario documents (first, second); give exactly one",
                 id="two Scenarios"),
    pytest.param(lambda: [a_scenario().pool_down_at(60, "gpu-x")],
                 'events[0].poolDown = "gpu-x": no such ComputePool (known: cpu-a)', id="an event on an unknown pool"),
])
def test_invalid_scenarios_exit_2_with_a_clear_message(tmp_path, objects, words):
    pool = a_pool("cpu-a").cpu()
    workload = a_workload().traffic("cloud-eu", 10)
    path = write_manifests(tmp_path / "scenario.yaml", pool, workload, *objects())
    run = hetplace("simulate", path)
    assert run.returncode == 2
    assert words in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""


def test_what_the_solver_prints_cannot_reach_stdout_while_simulating(capfd):
    # HiGHS writes some diagnostics straight to file descriptor 1; -o json must stay parseable
    from hetplace.cli import solver_output_to_stderr
    with solver_output_to_stderr():
        os.write(1, b"solver noise\n")
    out, err = capfd.readouterr()
    assert "solver noise" not in out and "solver noise" in err


def test_no_gateway_turns_the_sites_failover_off(tmp_path):
    # plant-a's pool is down for three steps; its fallback, plant-b's pool, serves it only with the gateway
    pools = [a_pool(name).cpu().site(site).nodes(count=4, cpu="4", memory="8Gi").hourly(0.2).link(other, 2000, 25)
             for name, site, other in (("cpu-a", "plant-a", "plant-b"), ("cpu-b", "plant-b", "plant-a"))]
    workload = (a_workload("detector", namespace="plant").encoding("features", 10_000)
                .variant("onnx", "cpu", latency_ms=10, tail_ms=15, concurrency=2, cpu="2", memory="2Gi")
                .traffic("plant-a", 10).traffic("plant-b", 90).policy(objective="MinLatency"))
    scenario = a_scenario(duration_s=420).pool_down_at(120, "cpu-a").pool_up_at(300, "cpu-a")
    path = write_manifests(tmp_path / "scenario.yaml", *pools, workload, scenario)
    docs = {}
    for flag in ("--gateway", "--no-gateway"):
        run = hetplace("simulate", path, "--policy", "static", "-o", "json", flag)
        assert run.returncode == 0, run.stderr
        docs[flag] = json.loads(run.stdout)
    assert hetplace("simulate", path, "--policy", "static").stdout.count("route-step(s) from a fallback") == 1
    on, off = docs["--gateway"], docs["--no-gateway"]
    assert (on["gateway"], off["gateway"]) == (True, False)
    assert on["policies"]["static"]["savedRouteSteps"] == 3
    assert off["policies"]["static"]["savedRouteSteps"] == 0
    assert on["policies"]["static"]["sloAttainment"] > off["policies"]["static"]["sloAttainment"]
