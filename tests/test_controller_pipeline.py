"""The reconcile pipeline without an API server: choose -> converge on the factory example, with the
cluster's answers (children applied, Deployments available, status stored) played back by hand.

Covers what the integration tier checks end to end, at the level of the pure functions: a first
placement, nothing written when nothing changed, an invalid or infeasible update keeping what
serves, a make-before-break move, its timeout, live pool capacity from Nodes, and the leader rule.
"""

from __future__ import annotations

import copy
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hetplace.controller.inventory import (
    APPLIED_HASH,
    Child,
    Picture,
    ValidatedSpecs,
    child_view,
    live_pool,
    node_view,
    workload_view,
)
from hetplace.controller.leader import is_leader
from hetplace.engine.snapshot import Resources
from hetplace.controller.reconcile import Choice, Outcome, Telemetry, choose, converge, deployments_ready
from hetplace.site.routes import from_configmap
from hetplace.engine.observed import LinkObservation, correction_factor
from hetplace.api.load import load_manifests

REPO = Path(__file__).resolve().parents[1]
FACTORY = REPO / "manifests" / "examples" / "factory"
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
UID = "7f1c7a52-0000-4000-8000-000000000001"
pytestmark = pytest.mark.unit


def workload_body(generation: int = 1, **spec_changes) -> dict:
    body = yaml.safe_load((FACTORY / "workload.yaml").read_text())
    body["metadata"].update(uid=UID, generation=generation)
    body["spec"].update(spec_changes)
    return body


class Cluster:
    """What the API server would hold after the operator's writes: children and the workload's status."""

    def __init__(self, body: dict) -> None:
        self.body = body
        self.pools = {p.name: p for p in load_manifests([FACTORY / "pools"]).pools}
        self.children: dict[tuple[str, str], dict] = {}
        self.unavailable: set[str] = set()

    def picture(self) -> Picture:
        views = [child_view(self._as_stored(o)) for o in self.children.values()]
        by_workload: dict[str, list[Child]] = {}
        for c in views:
            by_workload.setdefault(c.workload, []).append(c)
        view = workload_view(self.body)
        return Picture(pools=self.pools, workloads={view.key: view},
                       children={k: tuple(v) for k, v in by_workload.items()})

    def _as_stored(self, obj: dict) -> dict:
        stored = copy.deepcopy(obj)
        stored["metadata"]["generation"] = 1
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] not in self.unavailable:
            n = obj["spec"]["replicas"]
            stored["status"] = {"observedGeneration": 1, "replicas": n, "availableReplicas": n, "updatedReplicas": n}
        return stored

    def write(self, outcome: Outcome) -> None:
        for obj in outcome.apply:
            self.children[(obj["kind"], obj["metadata"]["name"])] = obj
        for child in outcome.delete:
            del self.children[(child.kind, child.name)]
        if outcome.status is not None:
            merged = {**self.body.get("status", {}), **outcome.status}
            self.body["status"] = json.loads(json.dumps({k: v for k, v in merged.items() if v is not None}))

    def cycle(self, now: datetime, telemetry: Telemetry = Telemetry(), choice: Choice | None = None,
              drain_s: float = 0.0) -> Outcome:
        picture = self.picture()
        view = next(iter(picture.workloads.values()))
        choice = choice or choose(view, picture, telemetry, now)
        ready, why = deployments_ready(view, choice, picture)
        outcome = converge(view, choice, picture, telemetry, ready, now, move_timeout_s=600,
                           image="triton:test", drain_s=drain_s, waiting=why)
        self.write(outcome)
        return outcome


def deployments(cluster: Cluster) -> list[str]:
    return sorted(name for kind, name in cluster.children if kind == "Deployment")


def condition(cluster: Cluster, kind: str) -> dict:
    return next(c for c in cluster.body["status"]["conditions"] if c["type"] == kind)


def placed_cluster() -> Cluster:
    cluster = Cluster(workload_body())
    cluster.cycle(T0)                         # first placement: children created
    cluster.cycle(T0 + timedelta(seconds=5))  # Deployments available: Ready
    return cluster


def test_a_first_placement_creates_the_children_and_reports_placed():
    cluster = Cluster(workload_body())
    first = cluster.cycle(T0)
    kinds = sorted(o["kind"] for o in first.apply)
    assert kinds == ["ConfigMap", "Deployment", "Service"]
    assert deployments(cluster) == ["defect-detector-cpu-cloud-eu-openvino-int8"]
    assert cluster.body["status"]["phase"] == "Placed"
    assert condition(cluster, "Ready")["status"] == "False"
    assert [(n.type, n.reason) for n in first.events] == [("Normal", "Placing")]
    assert all(APPLIED_HASH in o["metadata"]["annotations"] for o in first.apply)

    second = cluster.cycle(T0 + timedelta(seconds=5))
    assert second.apply == () and second.delete == ()
    assert condition(cluster, "Ready")["status"] == "True"


def test_a_first_placement_writes_status_twice_placed_then_ready():
    """The decision's status, then Ready: a Deployment created but not yet available, or a look at
    the placement that reads it back from status, writes nothing (the reasons the other options
    lost stay as the engine gave them)."""
    cluster = Cluster(workload_body())
    cluster.unavailable.add("defect-detector-cpu-cloud-eu-openvino-int8")
    assert cluster.cycle(T0).status is not None
    rejected = cluster.body["status"]["rejected"]
    assert rejected, "the first decision says why the other pools lost"
    assert cluster.cycle(T0 + timedelta(seconds=1)).status is None, "created, not available: nothing new to say"
    cluster.unavailable.clear()
    assert cluster.cycle(T0 + timedelta(seconds=2)).status is not None
    assert condition(cluster, "Ready")["status"] == "True" and cluster.body["status"]["rejected"] == rejected


def test_nothing_is_written_when_nothing_changed():
    cluster = placed_cluster()
    again = cluster.cycle(T0 + timedelta(minutes=10))
    assert (again.apply, again.delete, again.status, again.events) == ((), (), None, ())
    assert again.outcome == "unchanged"


def test_an_invalid_update_keeps_what_serves_and_names_the_field():
    cluster = placed_cluster()
    serving = copy.deepcopy(cluster.body["status"]["placements"])
    cluster.body["spec"]["slo"]["percentile"] = 101
    cluster.body["metadata"]["generation"] = 2
    outcome = cluster.cycle(T0 + timedelta(minutes=1))
    assert outcome.apply == () and outcome.delete == ()
    assert deployments(cluster) == ["defect-detector-cpu-cloud-eu-openvino-int8"]
    assert cluster.body["status"]["phase"] == "Invalid"
    assert cluster.body["status"]["placements"] == serving
    valid = condition(cluster, "Valid")
    assert valid["status"] == "False" and "spec.slo.percentile" in valid["message"] and "101" in valid["message"]
    assert [(n.type, n.reason) for n in outcome.events] == [("Warning", "InvalidSpec")]
    assert cluster.cycle(T0 + timedelta(minutes=2)).events == ()      # said once, not every cycle


def test_an_infeasible_update_keeps_what_serves_and_says_why():
    cluster = placed_cluster()
    cluster.body["spec"]["slo"]["latencyMs"] = 1
    cluster.body["metadata"]["generation"] = 2
    outcome = cluster.cycle(T0 + timedelta(minutes=1))
    assert outcome.apply == () and outcome.delete == ()
    assert cluster.body["status"]["phase"] == "Infeasible"
    assert deployments(cluster) == ["defect-detector-cpu-cloud-eu-openvino-int8"]
    placed = condition(cluster, "Placed")
    assert placed["status"] == "False" and "keeps serving" in placed["message"]
    assert cluster.body["status"]["rejected"], "the closest alternatives are listed"


DROP = Telemetry(links=(LinkObservation("factory-eu-1", "gpu-cloud-eu", 250, 25),
                        LinkObservation("factory-eu-1", "cpu-cloud-eu", 250, 25)))


def test_the_routes_document_carries_the_generation_and_the_time_of_the_decision_it_follows():
    cluster = placed_cluster()
    document = from_configmap(cluster.children[("ConfigMap", "defect-detector-routes")])
    decided_at = datetime.fromisoformat(cluster.body["status"]["decision"]["at"].replace("Z", "+00:00"))
    assert (document.workload, document.generation, document.decided_at) == ("factory/defect-detector", 1, decided_at)
    assert document.decided_at == T0, "the decision was made at the first cycle, not at the one that saw it Ready"
    again = cluster.cycle(T0 + timedelta(minutes=5))
    assert not any(o["kind"] == "ConfigMap" for o in again.apply), "an unchanged decision rewrites no routes"


def test_a_move_is_make_before_break():
    cluster = placed_cluster()
    cluster.body["metadata"]["generation"] = 2       # a spec change re-plans, here under the dropped uplink
    new_group = "defect-detector-arm-factory-eu-1-trt-int8-orin"
    cluster.unavailable.add(new_group)
    moving = cluster.cycle(T0 + timedelta(minutes=1), DROP)
    assert deployments(cluster) == [new_group, "defect-detector-cpu-cloud-eu-openvino-int8"]
    assert moving.delete == ()
    assert cluster.body["status"]["phase"] == "Migrating"
    routes = from_configmap(cluster.children[("ConfigMap", "defect-detector-routes")]).sites["factory-eu-1"]
    assert routes[0].pool == "cpu-cloud-eu", "routes stay on the old group until the new one is ready"
    assert [r.pool for r in routes] == ["cpu-cloud-eu"], "a group not ready yet is no fallback"
    assert [p["pool"] for p in cluster.body["status"]["migration"]["target"]] == ["arm-factory-eu-1", "cpu-cloud-eu"]

    still = cluster.cycle(T0 + timedelta(minutes=2), DROP)   # not ready yet: nothing changes
    assert still.apply == () and still.delete == ()

    cluster.unavailable.clear()
    done = cluster.cycle(T0 + timedelta(minutes=3), DROP)
    assert cluster.body["status"]["phase"] == "Placed" and "migration" not in cluster.body["status"]
    routes = from_configmap(cluster.children[("ConfigMap", "defect-detector-routes")]).sites["factory-eu-1"]
    assert routes[0].pool == "arm-factory-eu-1" and routes[0].decided
    assert [(n.reason) for n in done.events] == ["Moved"]


def test_a_stuck_move_goes_back_after_its_timeout():
    cluster = placed_cluster()
    cluster.body["metadata"]["generation"] = 2
    new_group = "defect-detector-arm-factory-eu-1-trt-int8-orin"
    cluster.unavailable.add(new_group)
    cluster.cycle(T0 + timedelta(minutes=1), DROP)
    late = cluster.cycle(T0 + timedelta(minutes=12), DROP)
    assert sorted((c.kind, c.name) for c in late.delete) == [("Deployment", new_group), ("Service", new_group)]
    assert deployments(cluster) == ["defect-detector-cpu-cloud-eu-openvino-int8"]
    assert [(n.type, n.reason) for n in late.events] == [("Warning", "MoveTimedOut")]
    assert "not ready after" in condition(cluster, "Placed")["message"]


@pytest.mark.parametrize("observed_ms, factor", [
    pytest.param(60.0, 2.0, id="twice as slow as profiled: factor 2"),
    pytest.param(600.0, 4.0, id="a wild reading is held at 4"),
    pytest.param(1.0, 0.5, id="a suspiciously fast reading is held at 0.5"),
    pytest.param(0.0, 1.0, id="no requests: no correction"),
])
def test_the_correction_factor_is_bounded(observed_ms, factor):
    assert correction_factor(observed_ms, 30.0) == factor


def test_a_slower_observed_service_time_changes_the_placement():
    cluster = Cluster(workload_body())
    picture = cluster.picture()
    view = picture.workloads["factory/defect-detector"]
    plain = choose(view, picture, Telemetry(), T0).target
    slow = Telemetry(corrections={"factory/defect-detector": {("cpu-cloud-eu", "openvino-int8"): 4.0}})
    corrected = choose(view, picture, slow, T0).target
    assert [g.pool for g in plain.groups] == ["cpu-cloud-eu"]
    assert "cpu-cloud-eu" not in [g.pool for g in corrected.groups] or \
        corrected.groups[0].replicas > plain.groups[0].replicas


def node(name: str, labels: dict, cpu: str = "8", memory: str = "32Gi", ready: bool = True, **extra) -> dict:
    return {"metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, **extra},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


@pytest.mark.parametrize("nodes, count, cpu, down", [
    pytest.param([], 8, 4.0, False, id="no matching nodes: the declared shape"),
    pytest.param([node("a", {"hetplace.io/pool": "cpu-cloud-eu"}, cpu="3500m"),
                  node("b", {"hetplace.io/pool": "cpu-cloud-eu"}, cpu="8"),
                  node("c", {"hetplace.io/pool": "other"})], 2, 3.5, False,
                 id="ready matching nodes: their count at the smallest allocatable"),
    pytest.param([node("a", {"hetplace.io/pool": "cpu-cloud-eu"}, ready=False)], 8, 4.0, True,
                 id="matching nodes none ready: the pool is down"),
])
def test_a_pool_is_sized_by_its_live_ready_nodes(nodes, count, cpu, down):
    pool = next(p for p in load_manifests([FACTORY / "pools"]).pools if p.name == "cpu-cloud-eu")
    live = live_pool(pool, [node_view(n) for n in nodes])
    assert (live.node_count, live.node.cpu_cores, live.down) == (count, cpu, down)


def peer(priority: int, seen: datetime, lifetime: int = 60) -> dict:
    return {"priority": priority, "lastseen": seen.isoformat(), "lifetime": lifetime}


@pytest.mark.parametrize("peers, leads", [
    pytest.param({}, True, id="alone: leads"),
    pytest.param({"me": peer(10, T0), "other": peer(5, T0)}, True, id="higher priority than the other: leads"),
    pytest.param({"me": peer(5, T0), "other": peer(10, T0)}, False, id="a live higher priority peer: waits"),
    pytest.param({"me": peer(10, T0), "other": peer(10, T0)}, False, id="a tie pauses both, as kopf does"),
    pytest.param({"me": peer(5, T0), "other": peer(10, T0 - timedelta(minutes=5))}, True,
                 id="the higher peer's lifetime ran out: leads"),
])
def test_the_leader_is_the_instance_kopf_leaves_running(peers, leads):
    assert is_leader(peers, "me", peers.get("me", {}).get("priority", 10), T0) is leads


def test_a_removed_pool_is_left_only_once_its_replacement_is_ready():
    cluster = placed_cluster()
    old = "defect-detector-cpu-cloud-eu-openvino-int8"
    del cluster.pools["cpu-cloud-eu"]
    cluster.unavailable.update({"defect-detector-gpu-cloud-eu-trt-fp16", "defect-detector-arm-factory-eu-1-trt-int8-orin"})
    moving = cluster.cycle(T0 + timedelta(minutes=1))
    assert old in deployments(cluster) and moving.delete == ()
    assert cluster.body["status"]["phase"] == "Migrating"
    assert all(o["metadata"]["name"] != old for o in moving.apply), "a group on a removed pool is left as it runs"
    cluster.unavailable.clear()
    cluster.cycle(T0 + timedelta(minutes=2))
    assert old not in deployments(cluster) and cluster.body["status"]["phase"] == "Placed"
    assert "cpu-cloud-eu" not in [p["pool"] for p in cluster.body["status"]["placements"]]


def test_the_fleet_ledger_decides_as_a_full_rebuild_does():
    """Kept current one workload at a time (as the index sees them), the operator's fleet ledger
    gives the same decision as charging every other workload afresh."""
    from hetplace.controller.fleet_ledger import FleetLedger
    from hetplace.controller.reconcile import engine_workload

    cluster = placed_cluster()
    fleet = FleetLedger(lambda v: engine_workload(v, Telemetry()))
    views = {}
    for i in range(6):        # six placed copies fill most of the CPU pool
        body = copy.deepcopy(cluster.body)
        body["metadata"]["name"] = f"copy-{i}"
        views[f"factory/copy-{i}"] = view = workload_view(body)
        fleet.update(view)
    fleet.forget("factory/copy-5")
    del views["factory/copy-5"]
    fresh = copy.deepcopy(cluster.body)
    fresh["metadata"]["name"] = "newcomer"
    fresh.pop("status")
    newcomer = workload_view(fresh)
    picture = cluster.picture()
    picture.workloads = {**views, newcomer.key: newcomer}
    rebuilt = choose(newcomer, picture, Telemetry(), T0)
    kept = choose(newcomer, picture, Telemetry(), T0, fleet)
    assert kept.target.fingerprint() == rebuilt.target.fingerprint()
    assert [g.pool for g in kept.target.groups] != ["cpu-cloud-eu"], "the copies leave no room on the CPU pool"


def _newcomer(cluster: Cluster, name: str):
    fresh = copy.deepcopy(cluster.body)
    fresh["metadata"].update(name=name, uid=f"uid-{name}")
    fresh.pop("status", None)
    return workload_view(fresh)


def test_decisions_made_before_their_writes_are_seen_do_not_share_capacity():
    """Workloads created together are decided one after another before any status write comes
    back through the watch: each decision is charged at once, so the later ones see the earlier
    ones — as if every write had been seen — and a write that never happens gives its charge back."""
    from hetplace.controller.fleet_ledger import FleetLedger
    from hetplace.controller.reconcile import engine_workload

    cluster = Cluster(workload_body())
    to_engine = lambda v: engine_workload(v, Telemetry())     # noqa: E731
    picture = cluster.picture()
    at_once, written = FleetLedger(to_engine), FleetLedger(to_engine)
    places = set()
    for i in range(8):
        view = _newcomer(cluster, f"copy-{i}")
        unseen = choose(view, picture, Telemetry(), T0, at_once)          # no write seen yet
        seen = choose(view, picture, Telemetry(), T0, written)
        body = copy.deepcopy(view.body)
        cluster_view = Cluster(body)
        cluster_view.cycle(T0, choice=seen)                                # its status written...
        written.update(workload_view(cluster_view.body))        # ...and seen by the index
        written.settle(view.key)
        assert unseen.target.fingerprint() == seen.target.fingerprint(), f"copy-{i}"
        places.add(tuple(g.pool for g in seen.target.groups))
    assert len(places) > 1, "the copies contend: the first ones fill what the later ones would have taken"
    for i in range(8):              # none of those writes happened: each decision gives its charge back
        at_once.settle(f"factory/copy-{i}")
    alone = choose(_newcomer(cluster, "alone"), picture, Telemetry(), T0, FleetLedger(to_engine))
    after = choose(_newcomer(cluster, "after"), picture, Telemetry(), T0, at_once)
    assert after.target.fingerprint() == alone.target.fingerprint()


def test_an_event_from_before_the_operators_own_write_does_not_take_its_charge_back():
    from hetplace.controller.fleet_ledger import FleetLedger
    from hetplace.controller.reconcile import engine_workload

    cluster = placed_cluster()
    to_engine = lambda v: engine_workload(v, Telemetry())     # noqa: E731
    fleet = FleetLedger(to_engine)
    picture = cluster.picture()
    alone = choose(_newcomer(cluster, "probe"), picture, Telemetry(), T0, FleetLedger(to_engine))
    fleet.update(workload_view(cluster.body))              # the write, seen first
    before_write = copy.deepcopy(cluster.body)
    before_write.pop("status")
    fleet.update(workload_view(before_write))              # the creation event, delivered late
    beside = choose(_newcomer(cluster, "probe"), picture, Telemetry(), T0, fleet)
    assert beside.target.fingerprint() != alone.target.fingerprint(), "the placed workload is still charged"
    fleet.forget("factory/defect-detector", UID)
    assert choose(_newcomer(cluster, "probe"), picture, Telemetry(), T0, fleet).target.fingerprint() == \
        alone.target.fingerprint()


def test_observed_latency_is_reported_per_route_and_decides_slo_met():
    cluster = placed_cluster()
    slow = Telemetry(route_latency_ms={"factory/defect-detector": {"factory-eu-1": 181.3}})
    cluster.cycle(T0 + timedelta(minutes=1), slow)
    routes = {r["site"]: r for p in cluster.body["status"]["placements"] for r in p["routes"]}
    assert routes["factory-eu-1"]["observedLatencyMs"] == 180.0 and "observedLatencyMs" not in routes["cloud-eu"]
    slo = condition(cluster, "SLOMet")
    assert (slo["status"], slo["reason"]) == ("False", "ObservedOverSLO") and "factory-eu-1" in slo["message"]

    steady = Telemetry(route_latency_ms={"factory/defect-detector": {"factory-eu-1": 180.9}})
    assert cluster.cycle(T0 + timedelta(minutes=2), steady).status is None, "a steady reading writes nothing"


def test_placements_a_dry_run_reported_are_not_taken_as_running():
    cluster = Cluster(workload_body())
    picture = cluster.picture()
    view = picture.workloads["factory/defect-detector"]
    outcome = converge(view, choose(view, picture, Telemetry(), T0), picture, Telemetry(), {}, T0,
                       move_timeout_s=600, image="triton:test", dry_run=True)
    cluster.write(outcome)
    assert cluster.body["status"]["placements"] and workload_view(cluster.body).running is None


def test_a_refused_generation_is_decided_again_not_kept():
    cluster = placed_cluster()
    cluster.body["spec"]["slo"]["latencyMs"] = 1
    cluster.body["metadata"]["generation"] = 2
    cluster.cycle(T0 + timedelta(minutes=1))
    again = cluster.cycle(T0 + timedelta(minutes=2))
    assert cluster.body["status"]["phase"] == "Infeasible" and again.status is None


def test_an_object_with_copied_labels_but_no_owner_reference_is_never_pruned():
    cluster = placed_cluster()
    canary = copy.deepcopy(cluster.children[("Deployment", "defect-detector-cpu-cloud-eu-openvino-int8")])
    canary["metadata"]["name"] = "defect-detector-canary"
    canary["metadata"].pop("ownerReferences")
    cluster.children[("Deployment", "defect-detector-canary")] = canary
    cluster.body["metadata"]["generation"] = 2
    outcome = cluster.cycle(T0 + timedelta(minutes=1), DROP)
    cluster.cycle(T0 + timedelta(minutes=2), DROP)
    assert "defect-detector-canary" in deployments(cluster)
    assert all(c.name != "defect-detector-canary" for c in outcome.delete)


def test_a_running_variant_renamed_in_the_spec_is_left_as_it_runs_until_its_replacement_is_ready():
    cluster = placed_cluster()
    old = cluster.children[("Deployment", "defect-detector-cpu-cloud-eu-openvino-int8")]
    cluster.body["spec"]["variants"][1]["name"] = "openvino-int8-v2"
    cluster.body["metadata"]["generation"] = 2
    cluster.unavailable.add("defect-detector-cpu-cloud-eu-openvino-int8-v2")
    moving = cluster.cycle(T0 + timedelta(minutes=1))
    assert all(o["metadata"]["name"] != old["metadata"]["name"] for o in moving.apply), "the old group is not re-rendered"
    assert moving.delete == () and cluster.body["status"]["phase"] == "Migrating"
    cluster.unavailable.clear()
    cluster.cycle(T0 + timedelta(minutes=2))
    assert deployments(cluster) == ["defect-detector-cpu-cloud-eu-openvino-int8-v2"]


def test_a_group_being_resized_is_not_ready_until_its_deployment_says_so():
    cluster = placed_cluster()
    cluster.body["spec"]["replicas"]["min"] = 5         # more replicas of the same group
    cluster.body["metadata"]["generation"] = 2
    resized = cluster.cycle(T0 + timedelta(minutes=1))     # readiness was read of the 3-replica Deployment
    assert [o["spec"]["replicas"] for o in resized.apply if o["kind"] == "Deployment"] == [5]
    assert condition(cluster, "Ready")["status"] == "False"
    cluster.cycle(T0 + timedelta(minutes=2))               # the 5 replicas are available now
    assert condition(cluster, "Ready")["status"] == "True"


def test_a_placement_read_back_from_status_protects_its_routes_as_the_decision_did():
    from hetplace.engine.usage import tolerances_of

    cluster = Cluster(workload_body())
    picture = cluster.picture()
    view = picture.workloads["factory/defect-detector"]
    decided = choose(view, picture, Telemetry(), T0).target
    cluster.cycle(T0)
    read_back = workload_view(cluster.body)
    pools = {p.name: p for p in cluster.picture().engine_pools()}
    by_status = tolerances_of(read_back.engine, read_back.running, pools)
    by_engine = tolerances_of(read_back.engine, decided, pools)
    assert by_status.keys() == by_engine.keys()
    assert all(by_status[k] == pytest.approx(by_engine[k], rel=1e-4) for k in by_engine)


def test_the_group_a_move_leaves_behind_outlives_the_routes_switch_by_the_drain_time():
    cluster = placed_cluster()
    cluster.body["spec"]["constraints"]["pools"] = ["gpu-cloud-eu"]
    cluster.body["metadata"]["generation"] = 2
    cluster.cycle(T0 + timedelta(seconds=60), drain_s=30)            # the GPU group is created
    switched = cluster.cycle(T0 + timedelta(seconds=61), drain_s=30)  # ready: routes switch, CPU drains
    assert switched.delete == () and cluster.body["status"]["phase"] == "Migrating"
    document = from_configmap(cluster.children[("ConfigMap", "defect-detector-routes")])
    assert {options[0].pool for options in document.sites.values()} == {"gpu-cloud-eu"}
    # while it drains, the group left behind is every site's fallback, marked so
    assert {(o.pool, o.draining) for options in document.sites.values() for o in options[1:]} \
        == {("cpu-cloud-eu", True)}
    assert condition(cluster, "Placed")["reason"] == "Draining"
    assert cluster.cycle(T0 + timedelta(seconds=80), drain_s=30).delete == ()
    done = cluster.cycle(T0 + timedelta(seconds=92), drain_s=30)
    assert deployments(cluster) == ["defect-detector-gpu-cloud-eu-trt-fp16"] and done.delete
    assert cluster.body["status"]["phase"] == "Placed" and "migration" not in cluster.body["status"]


def test_the_index_keeps_no_parsed_object_and_of_the_status_only_what_the_loop_reads():
    cluster = placed_cluster()
    full = workload_view(cluster.body)
    kept = workload_view(cluster.body, ValidatedSpecs(), keep=True)
    assert full.valid is not None and kept.valid is None and kept.accepted
    assert kept.engine == full.engine and kept.running.fingerprint() == full.running.fingerprint()
    assert kept.status is None and kept.kept_status.ready == "True" and not kept.kept_status.bringing_up
    assert kept.kept_status.decided_at == full.status.decision.at is not None
    assert set(kept.body) == {"metadata"} and kept.body["metadata"]["uid"] == UID
    refused = workload_view(workload_body(generation=2, slo={"latencyMs": 120, "percentile": 101}),
                            ValidatedSpecs(), keep=True)
    assert not refused.accepted and "percentile" in refused.problem


def test_validated_specs_never_hand_back_an_earlier_generation_and_keep_few_parsed_objects():
    specs = ValidatedSpecs(recent=2)
    key = "factory/defect-detector"
    accepted, _, engine = specs.of(key, workload_body(generation=1))
    assert accepted is not None and specs.of(key, workload_body(generation=1))[0] is accepted, "reused"
    bad = workload_body(generation=2, slo={"latencyMs": 120, "percentile": 101})
    assert specs.of(key, bad, parsed=False)[0] is None       # the index reads it first
    valid, problem, engine = specs.of(key, bad)               # then a reconcile
    assert valid is None and engine is None and "spec.slo.percentile" in problem, \
        "the refused generation, not the parsed object of the accepted one before it"
    for n in range(3):                                         # three others push the parsed object out
        other = workload_body(generation=1)
        other["metadata"].update(name=f"w{n}", uid=f"u{n}")
        specs.of(f"factory/w{n}", other)
    assert len(specs._parsed) == 2
    again = workload_body(generation=3)
    first = specs.of(key, again)
    assert specs.of(key, again, parsed=False) == (None, "", first[2]), "the engine's reading is kept for all"


def test_kept_views_and_owned_objects_hold_the_names_they_share_once():
    """Each body comes from its own JSON (as from the API): equal strings are distinct objects until kept."""
    cluster = placed_cluster()
    first, second = (json.loads(json.dumps(cluster.body)) for _ in range(2))
    second["metadata"].update(name="other")
    a, b = (workload_view(body, keep=True) for body in (first, second))
    (group_a, *_), (group_b, *_) = a.running.groups, b.running.groups
    route_a, route_b = group_a.routes[0], group_b.routes[0]
    assert group_a.pool == group_b.pool and group_a.pool is group_b.pool
    assert group_a.variant is group_b.variant and route_a.site is route_b.site
    assert route_a.encoding is route_b.encoding
    assert a.kept_status.ready_reason is b.kept_status.ready_reason
    assert a.body["metadata"]["namespace"] is b.body["metadata"]["namespace"]
    children = [child_view(json.loads(json.dumps(cluster._as_stored(o)))) for o in cluster.children.values()]
    assert {c.owner_uid for c in children} == {UID}
    assert all(c.owner_uid is a.body["metadata"]["uid"] for c in children)
    routes = [c.routes for c in children if c.kind == "ConfigMap"][0]
    assert routes and all(part is sys.intern(part) for route in routes for part in route)


def test_workloads_of_one_model_share_its_catalogues_until_the_last_lets_go():
    specs = ValidatedSpecs()
    first, second = workload_body(), workload_body()
    second["metadata"].update(name="other", uid="u-other")
    _, _, a = specs.of("factory/defect-detector", first)
    _, _, b = specs.of("factory/other", second)
    assert a.variants is b.variants and a.encodings is b.encodings and a.variants == b.variants
    assert len(specs._catalogues) == 2                        # one variant list, one encoding list
    edited = workload_body(generation=2)
    edited["spec"]["variants"][0]["profile"]["concurrency"] = 8
    _, _, c = specs.of("factory/defect-detector", edited)     # its own variants now; encodings still shared
    assert c.variants != b.variants and c.encodings is b.encodings and len(specs._catalogues) == 3
    specs.forget("factory/other")
    assert len(specs._catalogues) == 2 and specs.of("factory/defect-detector", edited)[2] is c
    specs.forget("factory/defect-detector")
    assert len(specs._catalogues) == 0


# ---- convergence and healing (what runs is charged, status honest, drift re-applied) -----------------

def _refused_edit(cluster: Cluster) -> dict:
    """The placed workload after an edit no placement can meet (999,999 req/s at a 0.01 ms SLO)."""
    body = copy.deepcopy(cluster.body)
    body["metadata"]["generation"] = 2
    body["spec"]["slo"]["latencyMs"] = 0.01
    body["spec"]["traffic"] = [{"site": "factory-eu-1", "requestsPerSecond": 999_999},
                               {"site": "cloud-eu", "requestsPerSecond": 999_999}]
    refused = Cluster(body)
    refused.cycle(T0 + timedelta(minutes=1))
    assert refused.body["status"]["phase"] == "Infeasible", "the edit is refused; what ran keeps running"
    return refused.body


@pytest.mark.parametrize("seen_placed_first", [True, False],
                         ids=["the index saw the placed spec before the refused edit",
                              "the refused edit is the first the operator sees of it (after a restart)"])
def test_a_refused_edit_is_charged_what_runs_not_what_it_asks(seen_placed_first):
    from hetplace.controller.fleet_ledger import FleetLedger
    from hetplace.controller.reconcile import engine_workload

    cluster = placed_cluster()
    to_engine = lambda v: engine_workload(v, Telemetry())     # noqa: E731
    picture = cluster.picture()
    placed = FleetLedger(to_engine)
    placed.update(workload_view(cluster.body))
    expected = choose(_newcomer(cluster, "probe"), picture, Telemetry(), T0, placed)
    assert expected.verdict == "move", "a newcomer fits beside what runs"

    fleet = FleetLedger(to_engine)
    if seen_placed_first:
        fleet.update(workload_view(cluster.body))
    fleet.update(workload_view(_refused_edit(cluster)))
    beside = choose(_newcomer(cluster, "probe"), picture, Telemetry(), T0, fleet)
    assert beside.verdict == "move", beside.reason
    assert beside.target.fingerprint() == expected.target.fingerprint()


def test_a_placement_on_a_deleted_pool_is_reported_as_such():
    cluster = placed_cluster()
    cluster.pools = {}                          # every ComputePool deleted
    outcome = cluster.cycle(T0 + timedelta(minutes=1))
    status = cluster.body["status"]
    assert status["phase"] == "Degraded"
    assert [(p["pool"], p.get("poolDeleted")) for p in status["placements"]] == [("cpu-cloud-eu", True)]
    placed = condition(cluster, "Placed")
    assert (placed["status"], placed["reason"]) == ("False", "PoolDeleted")
    assert "ComputePool cpu-cloud-eu deleted" in placed["message"]
    assert [(n.type, n.reason) for n in outcome.events] == [("Warning", "PoolDeleted")]
    assert outcome.apply == () and outcome.delete == (), "what runs there is left running"


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["spec"].update(replicas=0), "spec.replicas was 0 (hetplace applies 3)"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="evil/triton:1"),
     "spec.template.spec.containers[triton].image was \"evil/triton:1\""),
    (lambda d: d["metadata"]["labels"].pop("hetplace.io/pool"), "metadata.labels.hetplace.io/pool was absent"),
], ids=["a Deployment scaled to 0", "a Deployment whose image was changed", "a label hetplace set removed"])
def test_an_owned_object_someone_changed_is_applied_again_with_an_event(edit, field):
    cluster = placed_cluster()
    name = "defect-detector-cpu-cloud-eu-openvino-int8"
    live = copy.deepcopy(cluster.children[("Deployment", name)])
    edit(live)
    picture = cluster.picture()
    view = picture.workloads["factory/defect-detector"]
    choice = choose(view, picture, Telemetry(), T0)
    ready, why = deployments_ready(view, choice, picture)
    outcome = converge(view, choice, picture, Telemetry(), ready, T0, move_timeout_s=600, image="triton:test",
                       waiting=why, live={("Deployment", name): live})
    assert [o["metadata"]["name"] for o in outcome.apply] == [name]
    ((kind, reason, message),) = [(n.type, n.reason, n.message) for n in outcome.events]
    assert (kind, reason) == ("Warning", "DriftCorrected") and f"Deployment {name}: " in message and field in message
    untouched = converge(view, choice, picture, Telemetry(), ready, T0, move_timeout_s=600, image="triton:test",
                         waiting=why, live={("Deployment", name): cluster.children[("Deployment", name)]})
    assert untouched.apply == () and untouched.events == (), "an object as applied is not applied again"


def test_an_owned_object_someone_deleted_is_created_again_with_an_event():
    cluster = placed_cluster()
    picture = cluster.picture()
    view = picture.workloads["factory/defect-detector"]
    choice = choose(view, picture, Telemetry(), T0)
    ready, why = deployments_ready(view, choice, picture)
    picture.children = {k: tuple(c for c in v if c.kind != "ConfigMap") for k, v in picture.children.items()}
    outcome = converge(view, choice, picture, Telemetry(), ready, T0, move_timeout_s=600, image="triton:test",
                       waiting=why, live={("ConfigMap", "defect-detector-routes"): None})
    assert [o["kind"] for o in outcome.apply] == ["ConfigMap"]
    assert [(n.reason, n.message) for n in outcome.events] == [
        ("DriftCorrected", "ConfigMap defect-detector-routes was deleted: re-created")]


def test_a_deployment_scaled_to_zero_is_not_available():
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "d", "namespace": "factory", "generation": 2,
                               "labels": {"hetplace.io/workload": "defect-detector"}},
                  "spec": {"replicas": 0},
                  "status": {"observedGeneration": 2, "replicas": 0}}
    assert child_view(deployment).available is False


REFUSED_EDITS = {
    "traffic no link carries": lambda spec: spec.update(traffic=[{"site": "factory-eu-1", "requestsPerSecond": 999_999},
                                                                 {"site": "cloud-eu", "requestsPerSecond": 999_999}]),
    "an SLO nothing meets": lambda spec: spec["slo"].update(latencyMs=0.01),
    "an accuracy floor no variant meets": lambda spec: spec["slo"].update(minAccuracy=0.99),
    "an invalid percentile": lambda spec: spec["slo"].update(percentile=101),
    "encodings renamed and enlarged": lambda spec: spec.update(encodings=[{"name": "huge", "requestBytes": 10**9}]),
}


SPEC_OF_WHAT_RUNS = ("an invalid percentile", "encodings renamed and enlarged")


@given(edits=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(sorted(REFUSED_EDITS))), min_size=1, max_size=6),
       restarted=st.booleans())
@settings(max_examples=40, deadline=None, derandomize=True)
def test_refused_edits_never_change_what_others_can_place(edits, restarted):
    """Property: whatever edits are refused (invalid, or infeasible) on placed workloads, the fleet
    is charged exactly what runs — the same load on every link and the same resources in every pool
    as if they had not been made — whether the operator saw the placed specs first or only the
    refused ones (after a restart); and having seen the placed specs, a newcomer is decided exactly
    as without the edits. (After a restart the SLO a placement was made for is not known: its
    routes are protected at the latency predicted for them, no looser. And what a placement takes —
    its replicas' resources, its requests' sizes — is read from the spec: an edit that is invalid,
    or renames or resizes variants and encodings, seen first after a restart, cannot say it. Those
    are left out of the restarted case: README, limits.)"""
    from hetplace.controller.fleet_ledger import FleetLedger
    from hetplace.controller.reconcile import engine_workload

    to_engine = lambda v: engine_workload(v, Telemetry())     # noqa: E731
    placed = []
    for i in range(3):
        cluster = Cluster(workload_body())
        cluster.body["metadata"].update(name=f"placed-{i}", uid=f"uid-placed-{i}")
        cluster.cycle(T0)
        placed.append(cluster)
    picture = placed[0].picture()
    fleet, baseline = FleetLedger(to_engine), FleetLedger(to_engine)
    for cluster in placed:
        baseline.update(workload_view(cluster.body))
        if not restarted:
            fleet.update(workload_view(cluster.body))
    bodies = [copy.deepcopy(c.body) for c in placed]
    for index, edit in edits:
        body = copy.deepcopy(bodies[index])
        body["metadata"]["generation"] += 1
        REFUSED_EDITS[edit](body["spec"])
        refused = Cluster(body)
        refused.cycle(T0 + timedelta(minutes=1))
        assert refused.body["status"]["phase"] in ("Infeasible", "Invalid"), edit
        if restarted and edit in SPEC_OF_WHAT_RUNS:
            continue                 # see the docstring
        bodies[index] = refused.body
        if not restarted:
            fleet.update(workload_view(refused.body))
    if restarted:                    # a new process lists every workload as it is now
        for body in bodies:
            fleet.update(workload_view(body))
    pools = picture.engine_pools()
    charged, expected_charge = fleet.ledger_for(pools), baseline.ledger_for(pools)
    assert {k: round(v, 6) for k, v in charged.link_load.items() if v} == \
        {k: round(v, 6) for k, v in expected_charge.link_load.items() if v}
    assert {k: v for k, v in charged.pool_used.items() if v != Resources()} == \
        {k: v for k, v in expected_charge.pool_used.items() if v != Resources()}
    if not restarted:
        expected = choose(_newcomer(placed[0], "probe"), picture, Telemetry(), T0, baseline)
        beside = choose(_newcomer(placed[0], "probe"), picture, Telemetry(), T0, fleet)
        assert (beside.verdict, beside.target.fingerprint()) == (expected.verdict, expected.target.fingerprint())


def _converged_with(cluster: Cluster, live: dict, image: str = "triton:test", **options) -> Outcome:
    picture = cluster.picture()
    view = picture.workloads["factory/defect-detector"]
    choice = choose(view, picture, Telemetry(), T0)
    ready, why = deployments_ready(view, choice, picture)
    return converge(view, choice, picture, Telemetry(), ready, T0, move_timeout_s=600, image=image, waiting=why,
                    live=live, **options)


def test_an_update_hetplace_makes_itself_is_not_reported_as_drift():
    """A new Triton image for every group (an operator upgrade): the Deployments are applied again,
    and what they held before is hetplace's own, not someone's drift."""
    cluster = placed_cluster()
    name = "defect-detector-cpu-cloud-eu-openvino-int8"
    outcome = _converged_with(cluster, {("Deployment", name): cluster.children[("Deployment", name)]},
                              image="triton:newer")
    assert [o["metadata"]["name"] for o in outcome.apply] == [name]
    assert outcome.events == ()


def test_an_object_of_what_serves_missing_at_the_first_look_was_deleted():
    cluster = placed_cluster()
    del cluster.children[("Service", "defect-detector-cpu-cloud-eu-openvino-int8")]     # while no operator ran
    first_look = _converged_with(cluster, {}, missing_is_drift=True)
    assert [(o["kind"]) for o in first_look.apply] == ["Service"]
    assert [n.message for n in first_look.events] == [
        "Service defect-detector-cpu-cloud-eu-openvino-int8 was deleted: re-created"]


def test_a_refused_workload_is_not_ready_while_what_runs_is_unavailable():
    """A refused spec renders nothing, but Ready still follows what is live."""
    cluster = placed_cluster()
    body = copy.deepcopy(cluster.body)
    body["metadata"]["generation"] = 2
    body["spec"]["slo"]["latencyMs"] = 0.01
    refused = Cluster(body)
    refused.children = cluster.children
    refused.unavailable.add("defect-detector-cpu-cloud-eu-openvino-int8")      # scaled to 0, say
    refused.cycle(T0 + timedelta(minutes=1))
    ready = condition(refused, "Ready")
    assert refused.body["status"]["phase"] == "Infeasible"
    assert (ready["status"], ready["reason"]) == ("False", "Waiting")
    assert "defect-detector-cpu-cloud-eu-openvino-int8 not available" in ready["message"]
    refused.unavailable.clear()
    refused.cycle(T0 + timedelta(minutes=2))
    assert condition(refused, "Ready")["status"] == "True", "available again"


def test_a_refused_workload_whose_closest_miss_moves_is_not_warned_about_again():
    """Decided again every cycle, a refused workload's message moves with telemetry (a latency, a
    link's load): the Warning is recorded once per reason and wording, not once per figure."""
    cluster = placed_cluster()
    body = copy.deepcopy(cluster.body)
    body["metadata"]["generation"] = 2
    body["spec"]["slo"]["latencyMs"] = 1
    refused = Cluster(body)
    first = refused.cycle(T0 + timedelta(minutes=1))
    assert [n.reason for n in first.events] == ["Infeasible"]
    said = condition(refused, "Placed")["message"]
    slower = Telemetry(corrections={"factory/defect-detector": {("gpu-cloud-eu", "trt-fp16"): 1.5,
                                                                ("arm-factory-eu-1", "trt-int8-orin"): 1.5}})
    again = refused.cycle(T0 + timedelta(minutes=2), slower)
    assert condition(refused, "Placed")["message"] != said, "status says the figures as they are now"
    assert again.events == ()
