"""The real operator (`hetplace run`, a subprocess) against the Kubernetes API: the emulator of
tests/kube/ by default, or the test cluster named by HETPLACE_TEST_KUBECONFIG (whose current context
must be the test one; tests that need the emulator's faults, holds or request log are skipped there).

Each test applies the factory example (docs/design.md §3) as a user would and waits, by polling with a
deadline, for what a user would see: status, Events and the objects hetplace owns. Model readiness
goes through tritonclient to MLServer (a real KServe-V2 server, a subprocess); link bandwidth comes
from Debian's Prometheus scraping an exporter the test sets.
"""

from __future__ import annotations

import signal
import time

import pytest
import yaml
from kube.fixtures import kube  # noqa: F401  (fixture)
from mlserver_fixture import mlserver  # noqa: F401  (fixture)
from operator_process import (  # noqa: F401  (start_operator: fixture)
    ARM_GROUP, CPU_GROUP, FACTORY, GPU_GROUP, IW, NAME, NS, POOL, apply_factory, condition, event_reasons,
    factory_pools, group_names, pools_placed, ready_on, routes, start_operator, wait, workload, writes)
from servers import free_ports, link_exporter, prometheus  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


# --- tests ------------------------------------------------------------------------------------------

def test_a_workload_is_placed_deployed_and_ready_through_tritonclient(kube, start_operator, mlserver):  # noqa: F811
    operator = start_operator(probe_models="true", triton_endpoint=mlserver.http)
    created = apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator, what="placed on the CPU pool and Ready")

    (deployment,) = kube.list("apps/v1", "Deployment", NS)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["metadata"]["name"] == CPU_GROUP and deployment["spec"]["replicas"] == 3
    assert pod["nodeSelector"] == {"hetplace.io/pool": "cpu-cloud-eu"}
    assert container["resources"]["requests"] == {"cpu": "4", "memory": "4Gi"}
    assert "--model-control-mode=explicit" in container["args"] and "--load-model=defect-detector" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "hetplace"
    assert group_names(kube, "Service") == [CPU_GROUP]
    assert {site: r["pool"] for site, r in routes(kube).items()} == {"cloud-eu": "cpu-cloud-eu",
                                                                     "factory-eu-1": "cpu-cloud-eu"}
    status = workload(kube)["status"]
    assert status["costPerHour"] == pytest.approx(0.534)
    assert status["placements"][0]["deployment"] == CPU_GROUP
    assert condition(workload(kube), "Valid")["status"] == "True"
    assert "Placing" in event_reasons(kube)
    assert operator.metric("hetplace_decisions_total", outcome="placed") >= 1


def test_a_model_the_server_does_not_have_is_never_ready(kube, start_operator, mlserver):  # noqa: F811
    operator = start_operator(probe_models="true", triton_endpoint=mlserver.http)
    apply_factory(kube, model={"name": "no-such-model", "repository": "s3://models/none"})
    w = wait(kube, lambda c: "ModelNotReady" in condition(workload(c), "Ready").get("message", "") and workload(c),
             operator, what="Ready=False with the probe's reason")
    assert condition(w, "Ready")["status"] == "False" and "no-such-model" in condition(w, "Ready")["message"]


def test_a_spec_update_replans_make_before_break(kube, start_operator):  # noqa: F811
    operator = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    kube.patch(*IW, NAME, {"spec": {"constraints": {"pools": ["gpu-cloud-eu"]}}}, NS)
    wait(kube, ready_on(["gpu-cloud-eu"]), operator, what="moved to the GPU pool")
    assert group_names(kube) == [GPU_GROUP] and group_names(kube, "Service") == [GPU_GROUP]
    assert {r["pool"] for r in routes(kube).values()} == {"gpu-cloud-eu"}
    assert {"Moving", "Moved"} <= set(event_reasons(kube))


def test_an_invalid_update_keeps_the_old_placement_serving(kube, start_operator):  # noqa: F811
    operator = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    try:
        kube.patch(*IW, NAME, {"spec": {"slo": {"percentile": 101}}}, NS)
    except Exception as refused:        # a real API server refuses it by the CRD's schema: also fine
        assert "percentile" in str(refused)
        assert group_names(kube) == [CPU_GROUP]
        return
    w = wait(kube, lambda c: workload(c)["status"].get("phase") == "Invalid" and workload(c), operator)
    valid = condition(w, "Valid")
    assert valid["status"] == "False" and "spec.slo.percentile" in valid["message"] and "101" in valid["message"]
    assert pools_placed(kube) == ["cpu-cloud-eu"] and group_names(kube) == [CPU_GROUP]
    assert "InvalidSpec" in event_reasons(kube)


def test_an_infeasible_update_deletes_nothing(kube, start_operator):  # noqa: F811
    operator = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    kube.patch(*IW, NAME, {"spec": {"slo": {"latencyMs": 1}}}, NS)
    w = wait(kube, lambda c: workload(c)["status"].get("phase") == "Infeasible" and workload(c), operator)
    assert condition(w, "Placed")["status"] == "False" and "keeps serving" in condition(w, "Placed")["message"]
    assert group_names(kube) == [CPU_GROUP] and pools_placed(kube) == ["cpu-cloud-eu"]
    assert "Infeasible" in event_reasons(kube)


def test_a_pool_added_places_a_waiting_workload_and_a_pool_removed_moves_it(kube, start_operator):  # noqa: F811
    operator = start_operator()
    apply_factory(kube, pools=("gpu-cloud-us",))           # residency rules out the only pool
    wait(kube, lambda c: (workload(c).get("status") or {}).get("phase") == "Infeasible", operator)
    for pool in factory_pools(("cpu-cloud-eu", "gpu-cloud-eu")):
        kube.create(pool)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator, what="placed once a pool in its regions appears")
    kube.delete(*POOL, "cpu-cloud-eu")
    wait(kube, ready_on(["gpu-cloud-eu"]), operator, what="moved off the removed pool")
    assert group_names(kube) == [GPU_GROUP]


def test_a_link_drop_seen_in_prometheus_moves_the_factory_to_the_arm_pool(
        kube, start_operator, prometheus, link_exporter):  # noqa: F811
    bandwidth, rtt = link_exporter.bandwidth, link_exporter.rtt
    for pool in ("cpu-cloud-eu", "gpu-cloud-eu"):
        bandwidth.labels("factory-eu-1", pool).set(2_000_000)
        rtt.labels("factory-eu-1", pool).set(0.025)
    operator = start_operator(prometheus_url=prometheus)
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    wait(kube, lambda c: condition(workload(c), "TelemetryFresh").get("status") in ("True", "False"), operator)
    hold = kube.hold_deployments(ARM_GROUP)
    for pool in ("cpu-cloud-eu", "gpu-cloud-eu"):
        bandwidth.labels("factory-eu-1", pool).set(250_000)
    wait(kube, lambda c: workload(c)["status"].get("phase") == "Migrating", operator, 60, "the move to start")
    assert group_names(kube) == [ARM_GROUP, CPU_GROUP], "both run while the new group is not ready"
    assert routes(kube)["factory-eu-1"]["pool"] == "cpu-cloud-eu", "routes wait for the new group"
    hold.release()
    wait(kube, ready_on(["arm-factory-eu-1", "cpu-cloud-eu"]), operator, 30, "the move to finish")
    assert routes(kube)["factory-eu-1"]["pool"] == "arm-factory-eu-1"
    assert routes(kube)["cloud-eu"]["pool"] == "cpu-cloud-eu"
    assert "Moved" in event_reasons(kube)


def test_of_two_operators_one_works_and_the_other_takes_over_afresh_when_it_stops(kube, start_operator):  # noqa: F811
    high = start_operator(priority=20)
    wait(kube, lambda c: high.metric("hetplace_leader") == 1, high, what="the first instance to lead")
    low = start_operator(priority=10)       # it finds the higher priority peer already there: kopf keeps it paused
    wait(kube, lambda c: low.metric("hetplace_leader") == 0, low, what="the second instance to wait")
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), high)
    assert high.metric("hetplace_decisions_total", outcome="placed") >= 1
    assert low.metric("hetplace_decisions_total", outcome="placed") == 0, "the waiting instance decided nothing"
    assert "Resuming operations" not in low.log()
    high.stop()
    # kopf kept the waiting instance's watches paused from its start, so its indexes are empty: they
    # are read afresh as it takes over, and it goes on without a restart
    wait(kube, lambda c: low.metric("hetplace_leader") == 1, low, what="the waiting instance to lead")
    kube.patch(*IW, NAME, {"spec": {"constraints": {"pools": ["gpu-cloud-eu"]}}}, NS)
    wait(kube, ready_on(["gpu-cloud-eu"]), low, what="the new leader to handle a change")
    assert low.process.poll() is None and "restarting" not in low.log()
    # an instance paused after it had read the cluster misses what changes meanwhile (kopf does not
    # refresh its indexes while paused): when it is resumed it restarts to read the cluster afresh
    top = start_operator(priority=30)
    wait(kube, lambda c: low.metric("hetplace_leader") == 0, low, what="the reading instance to be paused")
    top.stop()
    wait(kube, lambda c: low.process.poll() is not None and "restarting to read the cluster afresh" in low.log(),
         low, what="the paused instance to restart on taking over")
    replacement = start_operator(priority=10)
    wait(kube, lambda c: replacement.metric("hetplace_leader") == 1, replacement, what="the restarted one to lead")
    kube.patch(*IW, NAME, {"spec": {"constraints": {"pools": ["cpu-cloud-eu"]}}}, NS)
    wait(kube, ready_on(["cpu-cloud-eu"]), replacement, what="the restarted leader to handle a change")


def test_an_operator_killed_mid_move_converges_with_no_orphans(kube, start_operator):  # noqa: F811
    first = start_operator(priority=10)
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), first)
    hold = kube.hold_deployments(GPU_GROUP)
    kube.patch(*IW, NAME, {"spec": {"constraints": {"pools": ["gpu-cloud-eu"]}}}, NS)
    wait(kube, lambda c: workload(c)["status"].get("phase") == "Migrating", first)
    first.stop(signal.SIGKILL)
    second = start_operator(priority=11)
    hold.release()
    wait(kube, ready_on(["gpu-cloud-eu"]), second, 40, "the new operator to finish the move")
    assert group_names(kube) == [GPU_GROUP] and group_names(kube, "Service") == [GPU_GROUP]
    assert group_names(kube, "ConfigMap") == [f"{NAME}-routes"]


def test_an_operator_restarted_while_a_move_drains_keeps_the_old_group_until_the_drain_ends(
        kube, start_operator):  # noqa: F811
    first = start_operator(priority=10, drain_seconds="12")
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), first)
    kube.patch(*IW, NAME, {"spec": {"constraints": {"pools": ["gpu-cloud-eu"]}}}, NS)
    wait(kube, lambda c: (workload(c)["status"].get("migration") or {}).get("routesSwitchedAt"), first,
         what="routes switched, the old group draining")
    switched = time.monotonic()
    first.stop(signal.SIGKILL)
    second = start_operator(priority=11, drain_seconds="12")
    wait(kube, lambda c: second.metric("hetplace_leader") == 1, second, what="the new operator to lead")
    while time.monotonic() - switched < 9:      # the drain's start is in status: the new operator keeps to it
        assert CPU_GROUP in group_names(kube), "the old group was removed before its drain ended"
        time.sleep(0.5)
    wait(kube, ready_on(["gpu-cloud-eu"]), second, 40, "the drain to end and the move to finish")
    assert group_names(kube) == [GPU_GROUP]


def test_api_errors_conflicts_and_dropped_watches_are_recovered_from(kube, start_operator):  # noqa: F811
    operator = start_operator()
    kube.fail("PATCH", r"/deployments/", status=500, times=3)
    kube.fail("PATCH", r"/inferenceworkloads/.*/status", status=409, times=2)
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator, 40, "placed despite the errors")
    assert kube.drop_watches() > 0
    kube.patch(*IW, NAME, {"spec": {"constraints": {"pools": ["gpu-cloud-eu"]}}}, NS)
    wait(kube, ready_on(["gpu-cloud-eu"]), operator, 40, "a change after the watches dropped")


def test_nothing_is_written_when_nothing_changes(kube, start_operator):  # noqa: F811
    operator = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    wait(kube, lambda c: ((c.get(*POOL, "cpu-cloud-eu").get("status") or {}).get("allocated") or {}).get("cpu")
         == "12000m", operator, what="the leader to publish what the pool holds")
    before = len(writes(kube))
    cycles = operator.metric("hetplace_rebalance_cycles_total") or 0
    wait(kube, lambda c: (operator.metric("hetplace_rebalance_cycles_total") or 0) >= cycles + 3, operator,
         what="three more rebalance cycles")
    assert writes(kube)[before:] == [], [e.get("reason") + ": " + e.get("message", "") for e in kube.list("v1", "Event", NS)]


def test_dry_run_decides_and_reports_but_creates_nothing(kube, start_operator):  # noqa: F811
    operator = start_operator(dry_run="true")
    apply_factory(kube)
    w = wait(kube, lambda c: condition(workload(c), "Placed").get("reason") == "DryRun" and workload(c), operator)
    assert pools_placed(kube) == ["cpu-cloud-eu"] and w["status"]["costPerHour"] == pytest.approx(0.534)
    assert condition(w, "Ready")["status"] == "False"
    assert group_names(kube) == [] and group_names(kube, "Service") == [] and group_names(kube, "ConfigMap") == []


def test_a_refused_pool_says_why_and_takes_no_part(kube, start_operator):  # noqa: F811
    operator = start_operator()
    kube.create_namespace(NS)
    (gpu,) = factory_pools(("gpu-cloud-eu",))
    gpu["spec"]["cost"] = {"hourly": 0.81, "tco": {"capex": 600, "amortizationYears": 3, "powerWatts": 25,
                                                   "pue": 1.0, "electricityPerKWh": 0.25}}
    try:
        kube.create(gpu)
    except Exception as refused:        # a real API server refuses it by the CRD's CEL rule: also fine
        assert "hourly" in str(refused)
        return
    for pool in factory_pools(("cpu-cloud-eu",)):
        kube.create(pool)
    refused = wait(kube, lambda c: condition(c.get(*POOL, "gpu-cloud-eu"), "Valid").get("status") == "False"
                   and c.get(*POOL, "gpu-cloud-eu"), operator, what="the pool's Valid condition")
    assert "exactly one of hourly or tco" in condition(refused, "Valid")["message"]
    workload_spec = yaml.safe_load((FACTORY / "workload.yaml").read_text())
    kube.create(workload_spec)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator, what="placed without the refused pool")


def test_a_refused_pool_edit_moves_nothing(kube, start_operator):  # noqa: F811
    operator = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    try:
        kube.patch(*POOL, "cpu-cloud-eu", {"spec": {"nodes": {"cpu": "0"}}})
    except Exception as refused:        # a real API server may refuse it by the schema: also fine
        assert "cpu" in str(refused)
        return
    wait(kube, lambda c: condition(c.get(*POOL, "cpu-cloud-eu"), "Valid").get("status") == "False", operator,
         what="the pool's edit refused")
    cycles = operator.metric("hetplace_rebalance_cycles_total") or 0
    wait(kube, lambda c: (operator.metric("hetplace_rebalance_cycles_total") or 0) >= cycles + 2, operator,
         what="two rebalance cycles after the refused edit")
    assert pools_placed(kube) == ["cpu-cloud-eu"] and group_names(kube) == [CPU_GROUP]


def test_watching_several_namespaces_places_in_each(kube, start_operator):  # noqa: F811
    kube.create_namespace("other")
    operator = start_operator(watch_namespaces='["factory", "other"]')
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator, what="placed with two namespaces watched")
    assert kube.get("kopf.dev/v1", "KopfPeering", "hetplace", "other") is not None


def test_telemetry_that_cannot_be_read_is_reported_without_any_other_change(kube, start_operator):  # noqa: F811
    nowhere = f"http://127.0.0.1:{free_ports(1)[0]}"
    operator = start_operator(prometheus_url=nowhere, telemetry_interval_seconds="1")
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    w = wait(kube, lambda c: condition(workload(c), "TelemetryFresh").get("reason") == "PrometheusError"
             and workload(c), operator, what="TelemetryFresh=False once Prometheus cannot be read")
    assert nowhere.split("//")[1] in condition(w, "TelemetryFresh")["message"]
    assert pools_placed(kube) == ["cpu-cloud-eu"], "the declared links still decide"


def test_a_group_name_another_workload_owns_is_never_taken_over(kube, start_operator):  # noqa: F811
    # "defect-detector" on pool "cpu-cloud-eu" and "defect-detector-cpu" on pool "cloud-eu" both ask
    # for the Deployment "defect-detector-cpu-cloud-eu-openvino-int8"
    operator = start_operator()
    created = apply_factory(kube, constraints={"regions": ["eu-west-1"], "pools": ["cpu-cloud-eu"]})
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    (twin,) = factory_pools(("cpu-cloud-eu",))
    twin["metadata"]["name"] = "cloud-eu"
    kube.create(twin)
    rival = yaml.safe_load((FACTORY / "workload.yaml").read_text())
    rival["metadata"]["name"] = "defect-detector-cpu"
    rival["spec"]["constraints"] = {"regions": ["eu-west-1"], "pools": ["cloud-eu"]}
    kube.create(rival)
    wait(kube, lambda c: "NameConflict" in [e["reason"] for e in c.list("v1", "Event", NS)], operator,
         what="the conflict reported")
    (deployment,) = [d for d in kube.list("apps/v1", "Deployment", NS) if d["metadata"]["name"] == CPU_GROUP]
    assert [r["uid"] for r in deployment["metadata"]["ownerReferences"]] == [created["metadata"]["uid"]]
    assert condition(workload(kube), "Ready")["status"] == "True"


def test_when_status_is_lost_the_objects_say_what_serves(kube, start_operator):  # noqa: F811
    operator = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    operator.stop()
    kube.patch(*IW, NAME, {"status": None}, NS, subresource="status")      # restored from a backup, say
    hold = kube.hold_deployments(GPU_GROUP)
    kube.patch(*IW, NAME, {"spec": {"constraints": {"pools": ["gpu-cloud-eu"]}}}, NS)
    restarted = start_operator(priority=11)
    wait(kube, lambda c: (workload(c).get("status") or {}).get("phase") == "Migrating", restarted)
    assert group_names(kube) == [CPU_GROUP, GPU_GROUP]
    assert {r["pool"] for r in routes(kube).values()} == {"cpu-cloud-eu"}, "routes stay on what serves"
    hold.release()
    wait(kube, ready_on(["gpu-cloud-eu"]), restarted)
    assert group_names(kube) == [GPU_GROUP]


def test_objects_the_api_refuses_are_reported_once_and_not_resent(kube, start_operator):  # noqa: F811
    operator = start_operator()
    kube.fail("PATCH", r"/deployments/", status=422, times=None)
    apply_factory(kube)
    w = wait(kube, lambda c: condition(workload(c), "Ready").get("reason") == "ApplyRefused" and workload(c),
             operator, what="Ready=False ApplyRefused")
    assert "422" in condition(w, "Ready")["message"]
    cycles = operator.metric("hetplace_rebalance_cycles_total") or 0
    wait(kube, lambda c: (operator.metric("hetplace_rebalance_cycles_total") or 0) >= cycles + 3, operator)
    assert len(kube.requests("PATCH", r"/deployments/")) == 1
    kube.clear_faults()
    kube.patch(*IW, NAME, {"spec": {"replicas": {"min": 1, "max": 40}}}, NS)      # a new generation tries again
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
