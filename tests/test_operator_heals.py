"""The real operator heals and converges (against the emulator of tests/kube/, or the test cluster
named by HETPLACE_TEST_KUBECONFIG): owned objects someone deleted or changed are restored within
seconds with an Event; a refused workload is decided again when what blocked it goes; status says
when a pool that serves was deleted; one malformed Prometheus answer costs no rebalance cycle.

Each test is a finding of an adversarial run against the operator (it failed before the fix)."""

from __future__ import annotations

import copy
import http.server
import json
import threading
import time
from typing import Iterator

import pytest
import yaml
from kube.fixtures import kube  # noqa: F401  (fixture)
from operator_process import (  # noqa: F401  (start_operator: fixture)
    CPU_GROUP, FACTORY, IW, NAME, NS, POOL, apply_factory, condition, factory_pools, group_names, pools_placed,
    ready_on, routes, start_operator, wait, workload)

pytestmark = pytest.mark.integration
DEPLOYMENT = ("apps/v1", "Deployment")
ROUTES = f"{NAME}-routes"
RESTORED_WITHIN_S = 5.0


def drift_events(cluster) -> list[str]:
    return [e["message"] for e in cluster.list("v1", "Event", NS)
            if e.get("reason") == "DriftCorrected" and e.get("involvedObject", {}).get("name") == NAME]


def restored(cluster, operator, check, what: str) -> float:
    """Seconds until `check(cluster)` holds again (at most RESTORED_WITHIN_S, with slack for a loaded machine)."""
    started = time.monotonic()
    wait(cluster, check, operator, RESTORED_WITHIN_S * 3, what)
    return time.monotonic() - started


def image_of(cluster) -> str | None:
    deployment = cluster.get(*DEPLOYMENT, CPU_GROUP, NS)
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"] if deployment else None


@pytest.mark.parametrize("kind, name, api_version", [
    ("ConfigMap", ROUTES, "v1"),
    ("Service", CPU_GROUP, "v1"),
    ("Deployment", CPU_GROUP, "apps/v1"),
], ids=["a deleted routes ConfigMap is re-created", "a deleted Service is re-created",
        "a deleted Deployment is re-created"])
def test_an_owned_object_someone_deletes_is_re_created_with_an_event(kube, start_operator, kind, name,  # noqa: F811
                                                                       api_version):
    operator = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    kube.delete(api_version, kind, name, NS)
    restored(kube, operator, lambda c: c.get(api_version, kind, name, NS) is not None, f"{kind} {name} re-created")
    wait(kube, lambda c: f"{kind} {name} was deleted: re-created" in drift_events(c), operator,
         what="a DriftCorrected Event naming it")
    wait(kube, ready_on(["cpu-cloud-eu"]), operator, what="Ready again")


def test_a_deployment_scaled_to_zero_is_restored_and_is_not_ready_meanwhile(kube, start_operator):  # noqa: F811
    operator = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    hold = kube.hold_deployments(CPU_GROUP)         # restored, it is not available until the hold goes
    kube.patch(*DEPLOYMENT, CPU_GROUP, {"spec": {"replicas": 0}}, NS, field_manager="kubectl-scale")
    restored(kube, operator, lambda c: c.get(*DEPLOYMENT, CPU_GROUP, NS)["spec"]["replicas"] == 3, "replicas 3 again")
    w = wait(kube, lambda c: condition(workload(c), "Ready").get("status") == "False" and workload(c), operator,
             what="Ready=False while the Deployment is not available")
    assert CPU_GROUP in condition(w, "Ready")["message"]
    assert any("spec.replicas was 0 (hetplace applies 3)" in m for m in drift_events(kube)), drift_events(kube)
    hold.release()
    wait(kube, ready_on(["cpu-cloud-eu"]), operator, what="Ready again once available")


def test_an_edited_route_and_a_changed_image_are_restored(kube, start_operator):  # noqa: F811
    operator = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    applied_route, applied_image = routes(kube)["factory-eu-1"], image_of(kube)
    document = json.loads(kube.get("v1", "ConfigMap", ROUTES, NS)["data"]["routes.json"])
    document["sites"]["factory-eu-1"][0].update(http="http://198.18.0.66:8000", grpc="grpc://198.18.0.66:8001")
    kube.patch("v1", "ConfigMap", ROUTES, {"data": {"routes.json": json.dumps(document)}}, NS,
               field_manager="kubectl-edit")
    restored(kube, operator, lambda c: routes(c)["factory-eu-1"] == applied_route, "the route restored")
    kube.patch(*DEPLOYMENT, CPU_GROUP, {"spec": {"template": {"spec": {"containers": [
        {"name": "triton", "image": "registry.example/other:1"}]}}}}, NS, patch_type="strategic",
        field_manager="kubectl-set")
    restored(kube, operator, lambda c: image_of(c) == applied_image, "the image restored")
    messages = drift_events(kube)
    assert any(f"ConfigMap {ROUTES}: data.routes.json:sites.factory-eu-1[0].http was "
               '"http://198.18.0.66:8000"' in m for m in messages), messages
    assert any(f"Deployment {CPU_GROUP}: spec.template.spec.containers[triton].image was "
               '"registry.example/other:1"' in m for m in messages), messages


def test_what_changed_while_no_operator_ran_is_restored_when_one_starts(kube, start_operator):  # noqa: F811
    first = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), first)
    applied_image = image_of(kube)
    first.stop()
    kube.patch(*DEPLOYMENT, CPU_GROUP, {"spec": {"template": {"spec": {"containers": [
        {"name": "triton", "image": "registry.example/other:1"}]}}}}, NS, patch_type="strategic",
        field_manager="kubectl-set")
    kube.delete("v1", "ConfigMap", ROUTES, NS)
    second = start_operator(priority=11)
    wait(kube, lambda c: image_of(c) == applied_image and c.get("v1", "ConfigMap", ROUTES, NS) is not None, second,
         what="the image and the routes restored at start")
    wait(kube, ready_on(["cpu-cloud-eu"]), second)


def test_a_workload_refused_for_want_of_room_is_placed_when_the_room_is_released(kube, start_operator):  # noqa: F811
    # no rebalance cycle in the test's time: the release itself must bring the decision back
    operator = start_operator(rebalance_interval_seconds="3600")
    apply_factory(kube, constraints={"regions": ["eu-west-1"], "pools": ["cpu-cloud-eu"]})
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    second = yaml.safe_load((FACTORY / "workload.yaml").read_text())
    second["metadata"]["name"] = "second"
    second["spec"]["constraints"] = {"regions": ["eu-west-1"], "pools": ["cpu-cloud-eu"]}
    kube.create(second)
    wait(kube, lambda c: (c.get(*IW, "second", NS).get("status") or {}).get("phase") == "Infeasible", operator,
         what="the second workload refused: the first holds 3 of the CPU pool's 4 nodes")
    kube.delete(*IW, NAME, NS)
    wait(kube, lambda c: (c.get(*IW, "second", NS).get("status") or {}).get("phase") == "Placed", operator, 20,
         what="the second one placed once the first's room is released")


def test_a_refused_edit_and_its_revert_leave_every_workload_placed(kube, start_operator):  # noqa: F811
    """A refused edit of one workload (999,999 req/s at a 0.01 ms SLO) must not fill the link the
    others share while it is refused: another workload decided meanwhile is placed, and after the
    revert both are Placed and Ready."""
    operator = start_operator()
    only_cpu = {"regions": ["eu-west-1"], "pools": ["cpu-cloud-eu"]}
    apply_factory(kube, traffic=[{"site": "factory-eu-1", "requestsPerSecond": 2},
                                 {"site": "cloud-eu", "requestsPerSecond": 10}], replicas={"min": 1, "max": 1},
                  constraints=only_cpu)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    placed_spec = copy.deepcopy(workload(kube)["spec"])
    kube.patch(*IW, NAME, {"spec": {"slo": {"latencyMs": 0.01}, "traffic": [
        {"site": "factory-eu-1", "requestsPerSecond": 999_999}, {"site": "cloud-eu", "requestsPerSecond": 999_999}]}},
        NS)
    wait(kube, lambda c: workload(c)["status"].get("phase") == "Infeasible", operator, what="the edit refused")
    other = yaml.safe_load((FACTORY / "workload.yaml").read_text())
    other["metadata"]["name"] = "other"
    other["spec"].update(constraints=only_cpu, replicas={"min": 1, "max": 1},
                         traffic=[{"site": "factory-eu-1", "requestsPerSecond": 2}])
    kube.create(other)
    wait(kube, lambda c: (c.get(*IW, "other", NS).get("status") or {}).get("phase") == "Placed", operator,
         what="the other workload placed over the link the refused edit does not use")
    kube.patch(*IW, NAME, {"spec": {"slo": placed_spec["slo"], "traffic": placed_spec["traffic"]}}, NS)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator, what="the reverted workload Placed and Ready")
    o = kube.get(*IW, "other", NS)
    assert o["status"]["phase"] == "Placed" and condition(o, "Ready")["status"] == "True"


def test_status_says_so_when_every_pool_that_serves_is_deleted(kube, start_operator):  # noqa: F811
    operator = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    # the pool that serves last: deleted first, the workload would start a move to one deleted next
    for pool in sorted(factory_pools(), key=lambda p: p["metadata"]["name"] == "cpu-cloud-eu"):
        kube.delete(*POOL, pool["metadata"]["name"])
    w = wait(kube, lambda c: workload(c)["status"].get("phase") == "Degraded" and workload(c), operator,
             what="phase Degraded once the pools are gone")
    assert [(p["pool"], p.get("poolDeleted")) for p in w["status"]["placements"]] == [("cpu-cloud-eu", True)]
    placed = condition(w, "Placed")
    assert (placed["status"], placed["reason"]) == ("False", "PoolDeleted")
    assert "ComputePool cpu-cloud-eu deleted" in placed["message"]
    assert "PoolDeleted" in [e["reason"] for e in kube.list("v1", "Event", NS)]
    assert group_names(kube) == [CPU_GROUP], "what runs is left running"
    for pool in factory_pools(("cpu-cloud-eu",)):
        kube.create(pool)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator, what="Placed again once the pool is back")
    assert not any(p.get("poolDeleted") for p in workload(kube)["status"]["placements"])


class MalformedPrometheus:
    """An HTTP server answering every query with a sample whose value is not a [time, "number"] pair."""

    def __init__(self) -> None:
        answer = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"site": "factory-eu-1"}, "value": [1]}]}}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def malformed_prometheus() -> Iterator[MalformedPrometheus]:
    server = MalformedPrometheus()
    try:
        yield server
    finally:
        server.close()


def test_a_malformed_prometheus_answer_costs_no_rebalance_cycle(kube, start_operator, malformed_prometheus):  # noqa: F811
    operator = start_operator(prometheus_url=malformed_prometheus.url, telemetry_interval_seconds="1")
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    w = wait(kube, lambda c: condition(workload(c), "TelemetryFresh").get("reason") == "PrometheusError"
             and workload(c), operator, what="TelemetryFresh=False naming the malformed answer")
    assert 'is not a [time, "number"] pair' in condition(w, "TelemetryFresh")["message"]
    cycles = operator.metric("hetplace_rebalance_cycles_total") or 0
    wait(kube, lambda c: (operator.metric("hetplace_rebalance_cycles_total") or 0) >= cycles + 3, operator,
         what="three more rebalance cycles completed")
    assert "rebalance cycle failed" not in operator.log_path.read_text()
    assert pools_placed(kube) == ["cpu-cloud-eu"]


def test_an_owned_object_whose_managed_by_label_is_removed_is_labelled_again(kube, start_operator):  # noqa: F811
    """Out of the label-selected watch, the object leaves it as a deletion (the API server's watch
    sends DELETED when an object stops matching): hetplace reads it and applies its labels again."""
    operator = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    kube.patch(*DEPLOYMENT, CPU_GROUP, {"metadata": {"labels": {"app.kubernetes.io/managed-by": None}}}, NS,
               field_manager="kubectl-label")
    restored(kube, operator, lambda c: (c.get(*DEPLOYMENT, CPU_GROUP, NS)["metadata"].get("labels") or {})
             .get("app.kubernetes.io/managed-by") == "hetplace", "the label applied again")
    assert any(f"Deployment {CPU_GROUP}: metadata.labels.app.kubernetes.io/managed-by was absent" in m
               for m in drift_events(kube)), drift_events(kube)


def test_only_the_objects_hetplace_owns_are_listed_and_watched(kube, start_operator):  # noqa: F811
    """A cluster's other ConfigMaps, Services and Deployments never reach the operator: the API
    server filters them (kopf's own label filters are applied after the whole object arrived)."""
    operator = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    reads = [c for c in kube.requests("GET", r"/(deployments|services|configmaps)$")]
    assert reads, "the operator lists and watches its objects"
    assert all(c.query.get("labelSelector") == "app.kubernetes.io/managed-by=hetplace" for c in reads), \
        sorted({f"{c.path}?{c.query}" for c in reads})
