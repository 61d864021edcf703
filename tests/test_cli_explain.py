"""`hetplace explain` run as a user runs it: output shapes, exit codes, messages on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from builders import a_workload, with_path

pytestmark = pytest.mark.cli

REPO = Path(__file__).resolve().parents[1]
FACTORY = REPO / "manifests" / "examples" / "factory"
HETPLACE = [sys.executable, "-m", "hetplace"]


def hetplace(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*HETPLACE, *map(str, args)], capture_output=True, text=True, timeout=120)


def explain_factory(*extra: str) -> subprocess.CompletedProcess:
    return hetplace("explain", "-f", FACTORY / "workload.yaml", "--pools", FACTORY / "pools", *extra)


def test_json_has_exactly_the_documented_keys_and_the_worked_example():
    run = explain_factory("-o", "json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert list(doc) == ["workload", "feasible", "costPerHour", "placements", "rejected"]
    assert doc["workload"] == "factory/defect-detector" and doc["feasible"] is True
    assert doc["costPerHour"] == pytest.approx(0.534, abs=1e-6)
    (placement,) = doc["placements"]
    assert list(placement) == ["pool", "variant", "replicas", "costPerHour", "routes"]
    assert (placement["pool"], placement["variant"], placement["replicas"]) == ("cpu-cloud-eu", "openvino-int8", 3)
    by_site = {r["site"]: r for r in placement["routes"]}
    assert list(by_site["cloud-eu"]) == ["site", "encoding", "requestsPerSecond", "predictedLatencyMs"]
    assert by_site["cloud-eu"]["encoding"] == "raw"
    assert by_site["factory-eu-1"]["encoding"] == "compressed"
    assert by_site["factory-eu-1"]["predictedLatencyMs"] == pytest.approx(132.8, abs=0.05)
    assert all(list(r) == ["pool", "variant", "reason"] for r in doc["rejected"])
    assert any(r["pool"] == "gpu-cloud-us" and "region" in r["reason"] for r in doc["rejected"])


def test_telemetry_at_250_kbps_moves_the_factory_site_to_the_arm_pool():
    run = explain_factory("--telemetry", FACTORY / "telemetry-250kbps.yaml", "-o", "yaml")
    assert run.returncode == 0, run.stderr
    doc = yaml.safe_load(run.stdout)
    assert doc["costPerHour"] == pytest.approx(0.5831, abs=5e-5)
    site_pool = {r["site"]: (p["pool"], p["variant"], p["replicas"], r["encoding"])
                 for p in doc["placements"] for r in p["routes"]}
    assert site_pool == {
        "factory-eu-1": ("arm-factory-eu-1", "trt-int8-orin", 1, "raw"),
        "cloud-eu": ("cpu-cloud-eu", "openvino-int8", 3, "raw"),
    }


def test_table_with_compare_says_what_moved_and_why():
    run = explain_factory("--telemetry", FACTORY / "telemetry-250kbps.yaml", "--compare")
    assert run.returncode == 0, run.stderr
    out = " ".join(run.stdout.split())
    assert "factory-eu-1 moves from cpu-cloud-eu/openvino-int8" in out
    assert "to arm-factory-eu-1/trt-int8-orin" in out and "maxLinkUtilization" in out
    assert "$0.5340/h -> $0.5831/h" in out


def test_infeasible_exits_3_and_names_the_closest_option(tmp_path):
    doc = yaml.safe_load((FACTORY / "workload.yaml").read_text())
    doc["spec"]["slo"]["latencyMs"] = 2.5
    path = tmp_path / "tight.yaml"
    path.write_text(yaml.safe_dump(doc))
    run = hetplace("explain", "-f", path, "--pools", FACTORY / "pools", "-o", "json")
    assert run.returncode == 3
    assert json.loads(run.stdout)["feasible"] is False
    assert "closest: cloud-eu -> gpu-cloud-eu/trt-fp16" in run.stderr
    assert "over the 2.5 ms SLO" in run.stderr


@pytest.mark.parametrize("path, value, words", [
    pytest.param("spec.slo.percentile", 120, "spec.slo.percentile = 120", id="a percentile over 100 is refused"),
    pytest.param("spec.variants[0].profile.latencyMs", -1, "spec.variants[0].profile.latencyMs = -1",
                 id="a negative latency is refused with its path"),
    pytest.param("spec.encodings[0].requestByte", 5, "requestByte", id="a misspelt field is refused"),
])
def test_invalid_workload_exits_2_naming_file_object_and_field(tmp_path, path, value, words):
    doc = with_path(a_workload("bad", namespace="factory").raw(), path, value)
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(doc))
    run = hetplace("explain", "-f", file, "--pools", FACTORY / "pools")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert words in run.stderr and "bad.yaml" in run.stderr and "factory/bad" in run.stderr


def test_telemetry_naming_an_unknown_pool_exits_2(tmp_path):
    file = tmp_path / "t.yaml"
    file.write_text("links: [{site: factory-eu-1, pool: no-such-pool, bandwidthKBps: 10, rttMs: 1}]\n")
    run = explain_factory("--telemetry", file)
    assert run.returncode == 2
    assert 'links[0].pool = "no-such-pool"' in run.stderr and "no such ComputePool" in run.stderr


def test_broken_yaml_exits_2_without_a_traceback(tmp_path):
    file = tmp_path / "broken.yaml"
    file.write_text("kind: InferenceWorkload\nspec: [unclosed\n")
    run = hetplace("explain", "-f", file, "--pools", FACTORY / "pools")
    assert run.returncode == 2 and "broken.yaml" in run.stderr and "Traceback" not in run.stderr


def test_compare_without_telemetry_is_a_usage_error():
    run = explain_factory("--compare")
    assert run.returncode == 2 and "--compare needs --telemetry" in run.stderr


@pytest.mark.parametrize("example, telemetry", [
    pytest.param("vqa", "telemetry-backhaul-congested.yaml", id="the VQA example places both ways"),
    pytest.param("gpu-first", "telemetry-night.yaml", id="the GPU-first example places both ways"),
])
def test_bundled_examples_are_feasible(example, telemetry):
    folder = REPO / "manifests" / "examples" / example
    for extra in ([], ["--telemetry", folder / telemetry]):
        run = hetplace("explain", "-f", folder / "workload.yaml", "--pools", folder / "pools", "-o", "json", *extra)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["feasible"] is True


def test_telemetry_may_name_a_workload_without_its_namespace(tmp_path):
    file = tmp_path / "t.yaml"
    file.write_text("traffic: [{workload: defect-detector, site: factory-eu-1, requestsPerSecond: 0}]\n")
    run = explain_factory("--telemetry", file, "-o", "json")
    assert run.returncode == 0, run.stderr
    rates = {r["site"]: r["requestsPerSecond"] for p in json.loads(run.stdout)["placements"] for r in p["routes"]}
    assert rates["factory-eu-1"] == 0


@pytest.mark.parametrize("path, value, words", [
    pytest.param("spec.slo.latencyMs", float("inf"), "spec.slo.latencyMs", id="an infinite SLO is refused"),
    pytest.param("spec.traffic[0].requestsPerSecond", float("nan"), "spec.traffic[0].requestsPerSecond",
                 id="a request rate that is not a number is refused"),
    pytest.param("spec.traffic[0].requestsPerSecond", 1e12, "must be <= 1e+06",
                 id="an absurd request rate is refused with its limit"),
])
def test_non_finite_and_absurd_numbers_exit_2(tmp_path, path, value, words):
    doc = with_path(a_workload("bad", namespace="factory").raw(), path, value)
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(doc))
    run = hetplace("explain", "-f", file, "--pools", FACTORY / "pools")
    assert run.returncode == 2, run.stderr
    assert words in run.stderr and "Traceback" not in run.stderr


def test_a_node_price_over_the_limit_exits_2(tmp_path):
    pool = yaml.safe_load((FACTORY / "pools" / "gpu-cloud-eu.yaml").read_text())
    pool["spec"]["cost"] = {"hourly": 1e12}
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
    run = hetplace("explain", "-f", FACTORY / "workload.yaml", "--pools", tmp_path / "pool.yaml")
    assert run.returncode == 2 and "spec.cost.hourly" in run.stderr and "1000" in run.stderr


def test_compare_as_json_holds_both_decisions_and_the_moves():
    run = explain_factory("--telemetry", FACTORY / "telemetry-250kbps.yaml", "--compare", "-o", "json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert list(doc) == ["declared", "observed", "moves"]
    assert doc["declared"]["costPerHour"] == pytest.approx(0.534, abs=1e-6)
    assert doc["observed"]["costPerHour"] == pytest.approx(0.5831, abs=5e-5)
    assert doc["moves"][0].startswith("factory-eu-1 moves from cpu-cloud-eu/openvino-int8")


def test_several_workloads_in_one_file_share_the_pools(tmp_path):
    doc = yaml.safe_load((FACTORY / "workload.yaml").read_text())
    docs = [dict(doc, metadata={"name": f"detector-{i}", "namespace": "factory"}) for i in range(3)]
    (tmp_path / "w.yaml").write_text(yaml.safe_dump_all(docs))
    run = hetplace("explain", "-f", tmp_path / "w.yaml", "--pools", FACTORY / "pools", "-o", "json")
    assert run.returncode == 0, run.stderr
    pools_used = [{p["pool"] for p in d["placements"]} for d in json.loads(run.stdout)]
    assert pools_used == [{"cpu-cloud-eu"}, {"cpu-cloud-eu", "arm-factory-eu-1"}, {"gpu-cloud-eu"}]


def test_compare_gives_each_moved_site_its_own_reason():
    folder = REPO / "manifests" / "examples" / "vqa"
    run = hetplace("explain", "-f", folder / "workload.yaml", "--pools", folder / "pools",
                   "--telemetry", folder / "telemetry-backhaul-congested.yaml", "--compare", "-o", "json")
    assert run.returncode == 0, run.stderr
    moves = {line.split()[0]: line for line in json.loads(run.stdout)["moves"]}
    assert "city-north -> gpu-cloud-eu/trt-fp16 with raw would load the link to 135%" in moves["city-north"]
    assert "city-south -> gpu-cloud-eu/trt-fp16 with compressed would load the link to 84%" in moves["city-south"]
