"""Rendering a decision into Kubernetes objects: names, labels, the pod spec, and the real schemas.

Golden files in tests/golden/ are refreshed with HETPLACE_UPDATE_GOLDENS=1 and reviewed in the diff.
Every rendered object is validated against the Kubernetes 1.34 JSON schema (strict: unknown
fields refused) shipped by kubernetes-validate.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from builders import a_pool, a_workload

from hetplace.api.load import load_manifests
from hetplace.engine import Snapshot, solve
from hetplace.engine.fallbacks import route_options
from hetplace.engine.from_api import pool_from_spec, workload_from_spec
from hetplace.engine.observed import LinkObservation, with_links
from hetplace.render import render_decision
from hetplace.render.names import dns_label, group_name, label_value, routes_name

REPO = Path(__file__).resolve().parents[1]
FACTORY = REPO / "manifests" / "examples" / "factory"
GOLDEN = Path(__file__).resolve().parent / "golden"
KUBERNETES_VERSION = "1.34.0"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def factory_rendered(uplink_kbps: float | None = None, uid: str | None = "7f1c7a52-0000-4000-8000-000000000001"):
    manifests = load_manifests([FACTORY / "pools", FACTORY / "workload.yaml"])
    workload = manifests.workloads[0]
    if uid:
        workload = workload.model_copy(update={"metadata": workload.metadata.model_copy(update={"uid": uid})})
    pools = tuple(pool_from_spec(p.metadata.name, p.spec) for p in manifests.pools)
    if uplink_kbps is not None:
        pools = with_links(pools, [LinkObservation("factory-eu-1", name, uplink_kbps, 25)
                                   for name in ("gpu-cloud-eu", "cpu-cloud-eu")])
    engine_workload = workload_from_spec(workload.metadata.namespace, workload.metadata.name, workload.spec)
    decision = solve(engine_workload, Snapshot(pools))
    return render_decision(workload, {p.metadata.name: p for p in manifests.pools}, decision,
                           routes=route_options(engine_workload, pools, decision))


def check_golden(name: str, objects: list[dict]) -> None:
    path = GOLDEN / name
    text = yaml.safe_dump_all(objects, sort_keys=False)
    if os.environ.get("HETPLACE_UPDATE_GOLDENS") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with HETPLACE_UPDATE_GOLDENS=1 and review the diff"
    assert text == path.read_text(), f"{path} differs: review, then refresh with HETPLACE_UPDATE_GOLDENS=1"


@pytest.mark.parametrize("uplink, golden", [(None, "factory-nominal.yaml"), (250, "factory-250kbps.yaml")],
                         ids=["the worked example renders one cpu group", "at 250 KB/s it renders the arm and cpu groups"])
def test_rendered_objects_match_their_golden_files(uplink, golden):
    check_golden(golden, factory_rendered(uplink).objects)


@pytest.mark.parametrize("uplink", [None, 250], ids=["nominal", "uplink at 250 KB/s"])
def test_every_rendered_object_passes_the_kubernetes_schema_strictly(uplink):
    for obj in factory_rendered(uplink).objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_is_real():
    broken = factory_rendered().deployments[0]
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_arm_group_lands_on_its_pool_with_its_accelerator_and_tolerations():
    rendered = factory_rendered(250)
    arm = next(d for d in rendered.deployments if d["metadata"]["labels"]["hetplace.io/pool"] == "arm-factory-eu-1")
    pod = arm["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"hetplace.io/pool": "arm-factory-eu-1"}
    triton = pod["containers"][0]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert triton["resources"]["requests"] == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": 1}
    assert triton["args"][:3] == ["--model-repository=s3://models/defect", "--model-control-mode=explicit",
                                  "--load-model=defect-detector"]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert [p["containerPort"] for p in triton["ports"]] == [8000, 8001, 8002]
    assert arm["spec"]["replicas"] == 1


def test_pods_run_restricted():
    pod = factory_rendered().deployments[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                         "capabilities": {"drop": ["ALL"]}}
    assert pod["automountServiceAccountToken"] is False


def test_routes_say_where_each_site_sends_and_how():
    routes = factory_rendered(250).routes
    assert routes["metadata"]["name"] == "defect-detector-routes"
    factory = json.loads(routes["data"]["routes.json"])["sites"]["factory-eu-1"]
    assert factory[0] == {"pool": "arm-factory-eu-1", "variant": "trt-int8-orin", "encoding": "raw",
                          "model": "defect-detector",
                          "http": "http://defect-detector-arm-factory-eu-1-trt-int8-orin.factory.svc:8000",
                          "grpc": "grpc://defect-detector-arm-factory-eu-1-trt-int8-orin.factory.svc:8001",
                          "withinSlo": True, "decided": True, "draining": False, "predictedLatencyMs": 25.0}
    # the cpu group is the fallback; the factory's traffic would saturate its 250 KB/s link there
    assert [(r["pool"], r["withinSlo"], "predictedLatencyMs" in r) for r in factory[1:]] == [("cpu-cloud-eu", False, False)]


def test_owned_objects_point_at_the_workload_and_carry_the_design_labels():
    for obj in factory_rendered().objects:
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "7f1c7a52-0000-4000-8000-000000000001"
        assert obj["metadata"]["ownerReferences"][0]["controller"] is True
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "hetplace" and labels["hetplace.io/workload"] == "defect-detector"


def test_without_a_uid_nothing_claims_an_owner():
    # `hetplace render` for GitOps review has no live object to point at
    for obj in factory_rendered(uid=None).objects:
        assert "ownerReferences" not in obj["metadata"]


def test_an_infeasible_decision_renders_nothing_and_says_why():
    manifests = load_manifests([FACTORY / "pools", FACTORY / "workload.yaml"])
    workload = manifests.workloads[0]
    decision = solve(workload_from_spec(workload.metadata.namespace, workload.metadata.name, workload.spec),
                     Snapshot(()))
    with pytest.raises(ValueError, match="infeasible"):
        render_decision(workload, {}, decision)


LONG = "x" * 200


@pytest.mark.parametrize("parts", [
    ("defect-detector", "cpu-cloud-eu", "openvino-int8"),
    (LONG, "cpu-cloud-eu", "openvino-int8"),
    ("9lives", "pool", "v"),
    ("Model.V2_final", "gpu", "trt"),
    ("a" * 40, "b" * 40, "c" * 40),
], ids=["a short name is kept as it is", "a 200-character name is cut and hashed",
        "a leading digit gets a letter first (Service names need one)", "dots, capitals and underscores are cleaned",
        "three long parts together are cut"])
def test_group_names_are_valid_service_names_of_at_most_63_characters(parts):
    name = group_name(*parts)
    assert len(name) <= 63 and DNS_1035.match(name)
    assert name == group_name(*parts)


def test_different_inputs_that_clean_to_the_same_text_keep_different_names():
    assert group_name("model.v2", "p", "v") != group_name("model-v2", "p", "v")
    assert group_name(LONG, "p", "v") != group_name(LONG + "y", "p", "v")
    assert routes_name(LONG) != routes_name(LONG + "y") and len(routes_name(LONG)) <= 63


@pytest.mark.parametrize("value", ["defect-detector", LONG, "-starts-with-dash", "with space", "a" * 63, ""])
def test_label_values_are_valid(value):
    rendered = label_value(value)
    assert len(rendered) <= 63 and LABEL_VALUE.match(rendered)
    assert rendered == value or len(value) > 63 or not LABEL_VALUE.match(value)


def test_a_workload_with_the_longest_name_the_api_allows_renders_objects_the_schema_accepts():
    long_name = "an-inference-workload-whose-name-is-sixty-three-characters-long"[:63]
    workload = (a_workload(long_name, "factory").encoding("raw", 1000)
                .variant("onnx", "cpu", latency_ms=10, tail_ms=15, concurrency=2, cpu="1", memory="1Gi")
                .slo(200).traffic("cloud-eu", 5)).build()
    pool = a_pool("cpu-cloud-eu").cpu().build()
    decision = solve(workload_from_spec("factory", long_name, workload.spec),
                     Snapshot((pool_from_spec(pool.metadata.name, pool.spec),)))
    rendered = render_decision(workload, {pool.metadata.name: pool}, decision)
    for obj in rendered.objects:
        assert len(obj["metadata"]["name"]) <= 63
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert len(long_name) == 63
    assert dns_label(long_name, "cpu-cloud-eu", "onnx") != f"{long_name}-cpu-cloud-eu-onnx"


# --- `hetplace render` -----------------------------------------------------------------------------

def run_cli(*args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "hetplace", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_hetplace_render_prints_objects_a_cluster_would_accept():
    run = run_cli("render", "-f", FACTORY / "workload.yaml", "--pools", FACTORY / "pools",
                  "--telemetry", FACTORY / "telemetry-250kbps.yaml")
    assert run.returncode == 0, run.stderr
    objects = list(yaml.safe_load_all(run.stdout))
    assert [o["kind"] for o in objects] == ["Deployment", "Deployment", "Service", "Service", "ConfigMap"]
    for obj in objects:
        assert "ownerReferences" not in obj["metadata"]
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_hetplace_render_of_an_infeasible_workload_renders_nothing_and_exits_3(tmp_path):
    text = (FACTORY / "workload.yaml").read_text().replace("latencyMs: 150", "latencyMs: 2.5")
    assert text != (FACTORY / "workload.yaml").read_text()
    (tmp_path / "tight.yaml").write_text(text)
    run = run_cli("render", "-f", tmp_path / "tight.yaml", "--pools", FACTORY / "pools")
    assert run.returncode == 3
    assert run.stdout.strip() == "" and "infeasible: factory/defect-detector" in run.stderr


def test_hetplace_render_refuses_invalid_input_naming_the_field(tmp_path):
    text = (FACTORY / "workload.yaml").read_text().replace("percentile: 99", "percentile: 120")
    (tmp_path / "bad.yaml").write_text(text)
    run = run_cli("render", "-f", tmp_path / "bad.yaml", "--pools", FACTORY / "pools")
    assert run.returncode == 2 and "spec.slo.percentile = 120" in run.stderr
