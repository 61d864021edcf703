"""The operator's metrics, checked by Prometheus's own linter (promtool, from Debian's prometheus)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import Gauge
from test_render import FACTORY

from hetplace.api.load import load_manifests
from hetplace.engine import Snapshot, solve
from hetplace.engine.from_api import pool_from_spec, workload_from_spec
from hetplace.metrics import OperatorMetrics


def factory_decision():
    manifests = load_manifests([FACTORY / "pools", FACTORY / "workload.yaml"])
    w = manifests.workloads[0]
    return solve(workload_from_spec(w.metadata.namespace, w.metadata.name, w.spec),
                 Snapshot(tuple(pool_from_spec(p.metadata.name, p.spec) for p in manifests.pools)))


def filled() -> OperatorMetrics:
    metrics = OperatorMetrics()
    metrics.record_outcome("factory", "defect-detector", "placed", factory_decision())
    with metrics.decision_duration.time():
        pass
    metrics.moves.labels("repair", "move").inc()
    metrics.pool_utilization.labels("cpu-cloud-eu", "cpu").set(12 / 32)
    metrics.telemetry_age.labels("prometheus").set(4.2)
    metrics.infeasible.set(0)
    metrics.record_observed_latency({"factory/defect-detector": {"factory-eu-1": 41.5, "cloud-eu": 120.0}})
    return metrics


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus (make tools)")
    return path


def test_promtool_finds_nothing_to_complain_about_in_the_exposition():
    check = subprocess.run([promtool(), "check", "metrics"], input=filled().exposition(), capture_output=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    assert check.stdout.decode().strip() == "" and check.stderr.decode().strip() == ""


def test_promtool_is_a_real_check():
    bad = b"# HELP latency_ms A latency in milliseconds\n# TYPE latency_ms counter\nlatency_ms 3\n"
    check = subprocess.run([promtool(), "check", "metrics"], input=bad, capture_output=True, timeout=60)
    complaints = (check.stdout + check.stderr).decode()
    assert check.returncode != 0
    assert '"_total" suffix' in complaints and "abbreviated units" in complaints


def test_a_decision_is_published_per_route_and_costed():
    text = filled().exposition().decode()
    assert ('hetplace_route_predicted_latency_seconds{namespace="factory",pool="cpu-cloud-eu",'
            'site="factory-eu-1",variant="openvino-int8",workload="defect-detector"} 0.1327') in text
    assert 'hetplace_workload_cost_dollars_per_hour{namespace="factory",workload="defect-detector"} 0.534' in text
    assert 'hetplace_decisions_total{outcome="placed"} 1.0' in text
    assert 'hetplace_decisions_total{outcome="infeasible"} 0.0' in text


def test_series_follow_what_serves_and_go_with_the_workload():
    metrics = filled()
    text = metrics.exposition().decode()
    assert text.count("hetplace_route_predicted_latency_seconds{") == 2
    metrics.record_outcome("factory", "defect-detector", "infeasible", None)     # nothing serves
    text = metrics.exposition().decode()
    assert "hetplace_route_predicted_latency_seconds{" not in text
    assert "hetplace_workload_cost_dollars_per_hour{" not in text
    assert "# TYPE hetplace_workload_cost_dollars_per_hour gauge" in text        # the family stays described
    metrics.record_outcome("other", "w1", "placed", factory_decision())
    metrics.forget("other", "w1")
    assert 'workload="w1"' not in metrics.exposition().decode()


def test_a_second_registration_of_the_same_names_is_refused():
    metrics = OperatorMetrics()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Gauge("hetplace_workload_cost_dollars_per_hour", "again", registry=metrics.registry)
