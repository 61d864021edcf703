"""The benchmarks run at a smoke size and write what bench/README.md reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

REPO = Path(__file__).resolve().parents[1]


def test_bench_smoke_writes_results_and_agrees_with_brute_force(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    latency = json.loads((tmp_path / "decision-latency.json").read_text())
    assert {row["objective"] for row in latency["rows"]} == {"MinCost", "MinLatency"}
    for row in latency["rows"]:
        assert row["instances"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    exact = json.loads((tmp_path / "exactness-vs-brute-force.json").read_text())
    for row in exact["rows"]:
        assert row["agree_with_brute_force"] == row["instances"]
    assert latency["command"] and latency["machine"]["cpus"]


def test_fleet_benchmarks_at_smoke_size_write_what_the_readme_reports(tmp_path):
    only = ["fleet-optimality", "incremental-latency", "policy-quality", "stability"]
    run = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--out", str(tmp_path)]
                         + [arg for name in only for arg in ("--only", name)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    optimality = json.loads((tmp_path / "fleet-optimality.json").read_text())
    for row in optimality["rows"]:
        assert row["method"].startswith("milp") or row["method"] == "solo-optimal"
        assert row["lp_bound_per_hour"] <= row["cost_per_hour"] + 1e-6
        assert row["placed"] >= row["greedy_placed"]
        assert row["placed"] < row["greedy_placed"] or row["cost_per_hour"] <= row["greedy_cost_per_hour"] + 1e-6
    incremental = json.loads((tmp_path / "incremental-latency.json").read_text())["rows"][0]
    assert 0 < incremental["p50_ms"] <= incremental["p99_ms"]
    quality = json.loads((tmp_path / "policy-quality.json").read_text())["rows"]
    traces = {row["trace"] for row in quality}
    assert len(traces) == 2
    for trace in traces:
        by_policy = {row["policy"]: row for row in quality if row["trace"] == trace}
        assert set(by_policy) == {"hetplace", "static", "gpu-only", "edge-only", "oracle"}
        assert by_policy["oracle"]["slo_attainment_pct"] == 100.0
        assert by_policy["hetplace"]["slo_attainment_pct"] > by_policy["static"]["slo_attainment_pct"]
    factory = {row["policy"]: row for row in quality if row["trace"] == "factory-bandwidth-drop"}
    assert factory["hetplace"]["slo_attainment_pct"] >= 99 and factory["hetplace"]["cost_vs_oracle"] <= 1.05
    stability = {row["policy"]: row for row in json.loads((tmp_path / "stability.json").read_text())["rows"]}
    assert stability["hetplace"]["moves_per_workload_hour"] < stability["oracle"]["moves_per_workload_hour"]


def test_operator_benchmarks_at_smoke_size_write_what_the_readme_reports(tmp_path):
    """The operator process against the API emulator: 20 workloads placed, measured, restarted, drifted."""
    runs = [subprocess.Popen([sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--out", str(tmp_path)]
                             + [arg for name in only for arg in ("--only", name)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for only in (["operator-restart", "operator-drift"], ["operator-throughput", "operator-rss"])]  # side by side
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-3000:]
    ceiling, placed = json.loads((tmp_path / "operator-throughput.json").read_text())["rows"]
    assert ceiling["creates_per_s"] > 0 and ceiling["emulator_cpu_s"] >= 0
    assert placed["workloads"] == 20 and 0 < placed["all_ready_s"] and placed["workloads_per_s"] > 0
    assert placed["owned_objects"] >= 3 * 20 and placed["write_budget"] == placed["owned_objects"] + 20
    by_kind = placed["writes_per_workload_by_kind"]
    for kind in ("apply Deployment", "apply Service", "apply ConfigMap", "workload status"):
        assert by_kind[kind] >= 1, by_kind
    assert "create InferenceWorkload (the bench)" not in by_kind and "kopf peering keep-alive" not in by_kind
    assert placed["quiet_cycles"] >= 1 and placed["quiet_writes"] == sum(placed["quiet_writes_by_kind"].values())
    assert placed["operator_cpu_s"] > 0 and placed["emulator_cpu_s"] > 0
    (rss,) = json.loads((tmp_path / "operator-rss.json").read_text())["rows"]
    assert rss["workloads"] == 20 and 0 < rss["idle_rss_mb"] <= rss["peak_rss_mb"] and rss["rss_mb"] > 0
    assert rss["planner_processes"] >= 1 and rss["planner_peak_rss_mb"] > 0, "each rebalance plans in a child"
    (restart,) = json.loads((tmp_path / "operator-restart.json").read_text())["rows"]
    assert 0 < restart["first_decision_s"] <= restart["all_resumed_s"]
    assert restart["decisions_timed"] >= 20 and restart["reconcile_retries"] == 0
    assert restart["restart_writes"] == sum(restart["restart_writes_by_kind"].values())
    baseline, drifted = json.loads((tmp_path / "operator-drift.json").read_text())["rows"]
    assert (baseline["workloads"], drifted["workloads"]) == (5, 20) and drifted["samples"] == 8
    assert set(drifted["restore_p99_s_by_drift"]) == {"delete routes ConfigMap", "delete Deployment",
                                                      "scale Deployment to 0", "set Deployment image"}
    assert 0 < drifted["restore_p50_s"] <= drifted["restore_p99_s"] <= drifted["restore_max_s"]
    assert drifted["events_written"] >= drifted["samples"], "each correction is reported in an Event"
    assert drifted["p99_vs_baseline"] > 0


def test_gateway_benchmark_at_smoke_size_writes_what_the_readme_reports(tmp_path):
    """`hetplace gateway` in front of two MLServer processes: the same requests straight to MLServer and
    through the gateway, the primary killed under load, the gateway's RSS (shape and sanity, not timing)."""
    run = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--out", str(tmp_path),
                          "--only", "gateway"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "gateway.json").read_text())
    sizes = [row["requestBytes"] for row in result["overhead"]]
    assert len(sizes) == 3 and sizes == sorted(sizes) and 900 < sizes[0] < 1100 and 220_000 < sizes[-1] < 240_000
    for row in result["overhead"]:
        assert row["rps"] > 0 and row["directSamples"] > 0 and row["gatewaySamples"] > 0
        assert row["directErrors"] == row["gatewayErrors"] == 0
        assert 0 < row["directP50Ms"] <= row["directP99Ms"] and 0 < row["gatewayP50Ms"] <= row["gatewayP99Ms"]
    failover = result["failover"]
    assert failover["requests"] == failover["servedByPrimary"] + failover["servedByFallback"] + failover["clientErrors"]
    assert failover["servedByPrimary"] > 0 and failover["servedByFallback"] > 0, "the kill fell within the load"
    assert failover["failoverSeconds"] is not None and failover["failoverSeconds"] >= 0
    assert 0 < result["rssMb"] <= result["peakRssMb"]


def test_netlab_bandwidth_at_smoke_size_writes_one_row_per_run_in_the_shape_the_issue_names(tmp_path):
    """The gateway's link figures on the network lab (needs root: the lab says so when it is not)."""
    run = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--out", str(tmp_path),
                          "--only", "netlab-bandwidth"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "netlab-bandwidth.json").read_text())
    rows = result["rows"]
    assert {row["withTraffic"] for row in rows} == {True, False}
    for row in rows:
        assert {"shapedKBps", "measuredKBps", "probeShare", "withTraffic"} <= set(row)
        assert row["shapedKBps"] > 0 and row["probeShare"] >= 0
        assert row["measuredKBps"] is None and row["notes"] or row["measuredKBps"] > 0
    assert [row["requestErrors"] for row in rows if row["withTraffic"]] == [0]
