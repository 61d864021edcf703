"""Status from a decision: metav1 conditions with honest transition times, and a schema the CRD accepts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import jsonschema
import yaml
from test_render import FACTORY, REPO

from hetplace.api.load import load_manifests
from hetplace.api.status import Phase
from hetplace.engine import Snapshot, solve
from hetplace.engine.from_api import pool_from_spec, workload_from_spec
from hetplace.k8s.status import Observed, workload_status

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def factory_decision(slo_ms: float | None = None):
    manifests = load_manifests([FACTORY / "pools", FACTORY / "workload.yaml"])
    w = manifests.workloads[0]
    engine_w = workload_from_spec(w.metadata.namespace, w.metadata.name, w.spec)
    if slo_ms is not None:
        import dataclasses
        engine_w = dataclasses.replace(engine_w, slo_latency_ms=slo_ms)
    return solve(engine_w, Snapshot(tuple(pool_from_spec(p.metadata.name, p.spec) for p in manifests.pools)))


PLACED = {"Valid": Observed(True, "Valid"), "Placed": Observed(True, "Placed", "1 group"),
          "SLOMet": Observed(True, "PredictedWithinSLO"), "TelemetryFresh": Observed(False, "NoPrometheus",
                                                                                      "deciding on declared links"),
          "Ready": Observed(None, "Waiting")}


def status_schema() -> dict:
    crd = yaml.safe_load((REPO / "crds" / "hetplace.io_inferenceworkloads.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


def test_a_placed_workload_reports_its_groups_cost_and_every_condition():
    status = workload_status("defect-detector", 3, factory_decision(), Phase.PLACED, T0, PLACED)
    doc = status.wire()
    assert [c["type"] for c in doc["conditions"]] == ["Valid", "Placed", "SLOMet", "TelemetryFresh", "Ready"]
    assert [c["status"] for c in doc["conditions"]] == ["True", "True", "True", "False", "Unknown"]
    assert all(c["observedGeneration"] == 3 for c in doc["conditions"])
    (group,) = doc["placements"]
    assert (group["pool"], group["replicas"], group["deployment"]) == \
        ("cpu-cloud-eu", 3, "defect-detector-cpu-cloud-eu-openvino-int8")
    assert doc["costPerHour"] == 0.534 and doc["summary"] == "cpu-cloud-eu/openvino-int8 x3"
    assert any(r["pool"] == "gpu-cloud-us" and "Region" in r["reason"] for r in doc["rejected"])
    jsonschema.validate(doc, status_schema())


def test_a_condition_keeps_its_transition_time_until_its_status_changes():
    first = workload_status("defect-detector", 3, factory_decision(), Phase.PLACED, T0, PLACED)
    later = T0 + timedelta(minutes=5)
    same = workload_status("defect-detector", 3, factory_decision(), Phase.PLACED, later, PLACED, previous=first)
    assert [c.last_transition_time for c in same.conditions] == [T0] * 5
    changed = dict(PLACED, Ready=Observed(True, "Ready", "every group available and its model ready"))
    now_ready = workload_status("defect-detector", 3, factory_decision(), Phase.PLACED, later, changed, previous=same)
    times = {c.type: c.last_transition_time for c in now_ready.conditions}
    assert times["Ready"] == later and times["Placed"] == T0


def test_an_infeasible_workload_reports_no_placement_and_why():
    infeasible = factory_decision(slo_ms=2.5)
    status = workload_status("defect-detector", 4, infeasible, Phase.INFEASIBLE, T0,
                             {"Valid": Observed(True, "Valid"), "Placed": Observed(False, "Infeasible",
                                                                                   infeasible.reason)})
    doc = status.wire()
    assert doc["phase"] == "Infeasible" and doc["placements"] == [] and "costPerHour" not in doc
    placed = next(c for c in doc["conditions"] if c["type"] == "Placed")
    assert placed["status"] == "False" and "2.5 ms SLO" in placed["message"]
    jsonschema.validate(doc, status_schema())


def test_the_status_schema_check_is_real():
    import pytest
    doc = workload_status("defect-detector", 3, factory_decision(), Phase.PLACED, T0, PLACED).wire()
    doc["conditions"][0]["status"] = "Maybe"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, status_schema())


def test_a_pool_status_reports_capacity_and_what_hetplace_placed():
    from hetplace.engine.snapshot import Resources
    from hetplace.k8s.status import pool_status

    pool = next(pool_from_spec(p.metadata.name, p.spec) for p in load_manifests([FACTORY / "pools"]).pools
                if p.metadata.name == "cpu-cloud-eu")
    status = pool_status(2, pool, 0, Resources(12, 12 * 2**30, 0), 0.178, "", T0, None).wire()
    assert status["nodesReady"] == 8 and status["capacity"] == {"cpu": "32000m", "memory": str(8 * 8 * 2**30),
                                                                 "accelerators": 0}
    assert status["allocated"]["cpu"] == "12000m"
    assert {c["type"]: c["reason"] for c in status["conditions"]} == {"Valid": "Valid", "Ready": "DeclaredShape"}
    jsonschema.validate(status, pool_status_schema())

    refused = pool_status(3, None, 0, Resources(), None, "spec.cost: exactly one of hourly or tco", T0, None).wire()
    valid = next(c for c in refused["conditions"] if c["type"] == "Valid")
    assert valid["status"] == "False" and "spec.cost" in valid["message"]
    jsonschema.validate(refused, pool_status_schema())


def pool_status_schema() -> dict:
    crd = yaml.safe_load((REPO / "crds" / "hetplace.io_computepools.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
