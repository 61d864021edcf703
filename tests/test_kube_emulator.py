"""The Kubernetes API emulator the operator's integration tests run against: each fidelity item checked
with the `kubernetes` client as a user would, then real kopf operators (handlers, peering, faults)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest
import yaml

from kube.catalogue import all_test_crds
from kube.cluster import ApiError, Cluster, EmulatedCluster, EmulatorOnly, RealCluster, context_refusal, make_cluster, wait_for
from kube import patches
from kube.fixtures import kube, run_operator  # noqa: F401  (fixtures)
from kube.operators import fast_settings

pytestmark = pytest.mark.integration

IW = "hetplace.io/v1alpha1"


def configmap(name: str, namespace: str = "default", labels: dict[str, str] | None = None,
              **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, **({"labels": labels} if labels else {})},
            "data": data}


def workload(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": IW, "kind": "InferenceWorkload", "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": "resnet", **spec}}


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"]}


@pytest.fixture
def core(kube: Cluster) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(kube.client)


@pytest.fixture
def emulated(kube: Cluster) -> Cluster:
    if isinstance(kube, RealCluster):
        pytest.skip("needs the emulator: it checks the emulator's own controls")
    return kube


# --- connection and discovery ---

def test_kubeconfig_names_the_emulator_context_and_a_fresh_client_reaches_it(kube: Cluster) -> None:
    contexts, active = kubernetes.config.list_kube_config_contexts(config_file=str(kube.kubeconfig_path))
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kube.kubeconfig_path), client_configuration=configuration)
    with kubernetes.client.ApiClient(configuration) as api:
        names = {ns.metadata.name for ns in kubernetes.client.CoreV1Api(api).list_namespace().items}
    assert active["name"] == kube.context
    assert {"default", "kube-system"} <= names
    assert kube.url.startswith("http://127.0.0.1:") or isinstance(kube, RealCluster)


@pytest.mark.parametrize("api_version, kind, plural, namespaced, status", [
    ("v1", "Namespace", "namespaces", False, True),
    ("v1", "Node", "nodes", False, True),
    ("v1", "Event", "events", True, False),
    ("v1", "ConfigMap", "configmaps", True, False),
    ("v1", "Service", "services", True, True),
    ("apps/v1", "Deployment", "deployments", True, True),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False, True),
    ("hetplace.io/v1alpha1", "ComputePool", "computepools", False, True),
    ("hetplace.io/v1alpha1", "InferenceWorkload", "inferenceworkloads", True, True),
    ("kopf.dev/v1", "ClusterKopfPeering", "clusterkopfpeerings", False, False),
    ("kopf.dev/v1", "KopfPeering", "kopfpeerings", True, False),
], ids=lambda value: str(value))
def test_discovery_lists_each_kind_with_its_scope_and_status_subresource(
        kube: Cluster, api_version: str, kind: str, plural: str, namespaced: bool, status: bool) -> None:
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    resources = {r["name"]: r for r in kube.request("GET", root)["resources"]}
    groups = {g["name"] for g in kube.request("GET", "/apis")["groups"]}
    assert resources[plural]["kind"] == kind and resources[plural]["namespaced"] == namespaced
    assert (f"{plural}/status" in resources) == status
    assert api_version == "v1" or api_version.split("/")[0] in groups


def test_a_crd_created_through_the_api_is_served_and_its_deletion_takes_its_objects(emulated: Cluster) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.test"},
           "spec": {"group": "example.test", "scope": "Namespaced",
                    "names": {"kind": "Widget", "plural": "widgets"},
                    "versions": [{"name": "v1", "served": True, "storage": True}]}}
    emulated.create(crd)
    emulated.create({"apiVersion": "example.test/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "default"}})
    established = wait_for(lambda: emulated.get(crd["apiVersion"], crd["kind"], "widgets.example.test")["status"])
    emulated.delete(crd["apiVersion"], crd["kind"], "widgets.example.test")
    assert {c["type"] for c in established["conditions"]} == {"Established", "NamesAccepted"}
    with pytest.raises(ApiError) as gone:
        emulated.request("GET", "/apis/example.test/v1/namespaces/default/widgets/w")
    assert gone.value.status == 404


# --- writes: versions, conflicts, generation, status ---

def test_create_twice_is_409_already_exists_and_a_stale_put_is_409_conflict(core: kubernetes.client.CoreV1Api) -> None:
    body = configmap("settings", key="1")
    first = core.create_namespaced_config_map("default", body)
    with pytest.raises(kubernetes.client.ApiException) as duplicate:
        core.create_namespaced_config_map("default", body)
    first.data = {"key": "2"}
    second = core.replace_namespaced_config_map("settings", "default", first)
    first.data = {"key": "3"}
    with pytest.raises(kubernetes.client.ApiException) as stale:
        core.replace_namespaced_config_map("settings", "default", first)
    assert duplicate.value.status == 409 and "AlreadyExists" in duplicate.value.body
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    assert stale.value.status == 409 and "Conflict" in stale.value.body
    assert core.read_namespaced_config_map("settings", "default").data == {"key": "2"}


def test_resource_version_is_one_counter_across_kinds_and_uid_and_timestamp_are_set(kube: Cluster) -> None:
    created = [kube.create(configmap("a")), kube.create(workload("w")), kube.create(configmap("b"))]
    versions = [int(obj["metadata"]["resourceVersion"]) for obj in created]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert all(obj["metadata"]["uid"] and obj["metadata"]["creationTimestamp"].endswith("Z") for obj in created)
    assert kube.get("v1", "ConfigMap", "a", "default")["metadata"]["resourceVersion"] == str(versions[0])


@pytest.mark.parametrize("change, subresource, generation", [
    ({"spec": {"replicas": 3}}, None, 2),
    ({"metadata": {"labels": {"team": "ml"}}}, None, 1),
    ({"metadata": {"annotations": {"note": "x"}}}, None, 1),
    ({"status": {"phase": "Placed"}}, "status", 1),
], ids=["a spec change bumps generation", "a label change does not", "an annotation change does not",
        "a status change does not"])
def test_generation_counts_spec_changes_only(kube: Cluster, change: dict, subresource: str | None,
                                             generation: int) -> None:
    kube.create(workload("w"))
    patched = kube.patch(IW, "InferenceWorkload", "w", change, "default", subresource=subresource)
    assert patched["metadata"]["generation"] == generation


def test_status_is_written_only_through_the_status_subresource(kube: Cluster) -> None:
    kube.create({**workload("w"), "status": {"phase": "Forged"}})
    kube.patch(IW, "InferenceWorkload", "w", {"status": {"phase": "Placed"}}, "default", subresource="status")
    kube.patch(IW, "InferenceWorkload", "w", {"spec": {"model": "bert"}, "status": {"phase": "Ignored"}}, "default")
    via_status = kube.patch(IW, "InferenceWorkload", "w", {"spec": {"model": "ignored"}, "status": {"note": "n"}},
                            "default", subresource="status")
    current = kube.get(IW, "InferenceWorkload", "w", "default")
    kube.replace({**current, "status": {"phase": "ReplacedIgnored"}})
    assert via_status["spec"]["model"] == "bert"
    assert kube.get(IW, "InferenceWorkload", "w", "default")["status"] == {"phase": "Placed", "note": "n"}


def test_deployment_status_is_isolated_too(kube: Cluster) -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "default"},
                  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
                           "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [
                               {"name": "c", "image": "x"}]}}},
                  "status": {"readyReplicas": 99}}
    kube.create(deployment)
    kube.patch("apps/v1", "Deployment", "d", {"status": {"readyReplicas": 98}}, "default")
    assert kube.get("apps/v1", "Deployment", "d", "default").get("status", {}).get("readyReplicas") != 98


# --- patches ---

def test_json_patch_test_op_on_a_stale_version_is_422_and_merge_patch_null_deletes(kube: Cluster) -> None:
    kube.create(configmap("c", a="1", b="2"))
    with pytest.raises(ApiError) as stale:
        kube.patch("v1", "ConfigMap", "c", [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
                                            {"op": "remove", "path": "/data/a"}], "default", patch_type="json")
    merged = kube.patch("v1", "ConfigMap", "c", {"data": {"a": None, "c": "3"}}, "default")
    strategic = kube.patch("v1", "ConfigMap", "c", {"metadata": {"finalizers": ["x/y"]}}, "default",
                           patch_type="strategic")
    assert stale.value.status == 422
    assert merged["data"] == {"b": "2", "c": "3"}
    assert strategic["metadata"]["finalizers"] == ["x/y"]


def test_a_merge_patch_carrying_an_old_resource_version_is_409(kube: Cluster) -> None:
    old = kube.create(configmap("c", a="1"))
    kube.patch("v1", "ConfigMap", "c", {"data": {"a": "2"}}, "default")
    with pytest.raises(ApiError) as conflict:
        kube.patch("v1", "ConfigMap", "c", {"metadata": {"resourceVersion": old["metadata"]["resourceVersion"]},
                                            "data": {"a": "3"}}, "default")
    assert conflict.value.status == 409


def apply_request(kube: Cluster, obj: dict[str, Any], query: list[tuple[str, str]], subresource: str | None = None,
                  as_yaml: bool = True) -> Any:
    meta = obj["metadata"]
    return kube.request("PATCH", kube.path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"],
                                           subresource), query=query,
                        body=yaml.safe_dump(obj) if as_yaml else obj, content_type="application/apply-patch+yaml")


def test_server_side_apply_creates_updates_and_drops_fields_the_manager_stopped_applying(kube: Cluster) -> None:
    created = apply_request(kube, configmap("applied", labels={"a": "1", "b": "2"}, x="1", y="2"),
                            [("fieldManager", "hetplace")])
    updated = apply_request(kube, configmap("applied", labels={"a": "1"}, x="10"), [("fieldManager", "hetplace")],
                            as_yaml=False)
    again = apply_request(kube, configmap("applied", labels={"a": "1"}, x="10"), [("fieldManager", "hetplace")])
    assert created["data"] == {"x": "1", "y": "2"}
    assert updated["data"] == {"x": "10"} and updated["metadata"]["labels"] == {"a": "1"}
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert again["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]
    assert [(f["manager"], f["operation"]) for f in updated["metadata"]["managedFields"]] == [("hetplace", "Apply")]


def test_server_side_apply_needs_a_field_manager_and_force_to_take_fields_over(kube: Cluster) -> None:
    apply_request(kube, configmap("shared", x="1"), [("fieldManager", "hetplace")])
    with pytest.raises(ApiError) as no_manager:
        apply_request(kube, configmap("shared", x="2"), [])
    with pytest.raises(ApiError) as conflict:
        apply_request(kube, configmap("shared", x="2"), [("fieldManager", "someone-else")])
    forced = apply_request(kube, configmap("shared", x="2"), [("fieldManager", "someone-else"), ("force", "true")])
    assert no_manager.value.status == 422
    assert conflict.value.status == 409
    assert forced["data"] == {"x": "2"}


def test_server_side_apply_keeps_the_status_and_other_managers_fields(kube: Cluster) -> None:
    kube.create(workload("w", replicas=1))
    kube.patch(IW, "InferenceWorkload", "w", {"status": {"phase": "Placed"}}, "default", subresource="status")
    kube.patch(IW, "InferenceWorkload", "w", {"metadata": {"labels": {"owner": "ops"}}}, "default")
    applied = apply_request(kube, {**workload("w", replicas=2), "status": {"phase": "ignored"}},
                            [("fieldManager", "hetplace"), ("force", "true")])
    assert applied["spec"] == {"model": "resnet", "replicas": 2}
    assert applied["status"] == {"phase": "Placed"}
    assert applied["metadata"]["labels"] == {"owner": "ops"}
    assert applied["metadata"]["generation"] == 2


@pytest.mark.parametrize("live, owners, applied, live_after", [
    ({"data": {"x": "1", "y": "2"}}, {"a": {"data": {"x": "1", "y": "2"}}}, {"data": {"x": "1"}},
     {"data": {"x": "1"}}),
    ({"data": {"x": "1", "y": "2"}}, {"a": {"data": {"x": "1", "y": "2"}}, "b": {"data": {"y": "2"}}},
     {"data": {"x": "1"}}, {"data": {"x": "1", "y": "2"}}),
    ({"data": {"y": "2"}, "z": "kept"}, {"a": {"data": {"y": "2"}}}, {"spec": {"n": 1}},
     {"spec": {"n": 1}, "z": "kept"}),
], ids=["a field the manager stops applying is removed", "unless another manager applied it too",
        "an emptied map goes with its last field; unmanaged fields stay"])
def test_server_side_apply_removes_only_what_no_manager_still_applies(live: dict, owners: dict, applied: dict,
                                                                      live_after: dict) -> None:
    merged, new_owners = patches.server_side_apply(live, applied, "a", owners, force=False)
    assert merged == live_after
    assert new_owners["a"] == applied


# --- selectors ---

@pytest.mark.parametrize("selector, expected", [
    ("app=web", {"web-prod", "web-dev"}),
    ("app==web,tier=prod", {"web-prod"}),
    ("app!=web", {"db-prod", "bare"}),
    ("tier in (prod, dev)", {"web-prod", "web-dev", "db-prod"}),
    ("tier notin (prod)", {"web-dev", "bare"}),
    ("tier", {"web-prod", "web-dev", "db-prod"}),
    ("!tier", {"bare"}),
], ids=["equality", "two requirements", "inequality includes the unlabelled", "set membership",
        "set exclusion includes the unlabelled", "existence", "absence"])
def test_label_selectors_choose_the_right_objects(kube: Cluster, selector: str, expected: set[str]) -> None:
    namespace = kube.create_namespace()
    for name, labels in [("web-prod", {"app": "web", "tier": "prod"}), ("web-dev", {"app": "web", "tier": "dev"}),
                         ("db-prod", {"app": "db", "tier": "prod"}), ("bare", {})]:
        kube.create(configmap(name, namespace, labels=labels or None))
    chosen = {cm["metadata"]["name"] for cm in kube.list("v1", "ConfigMap", namespace, label_selector=selector)}
    assert chosen & {"web-prod", "web-dev", "db-prod", "bare"} == expected


def test_field_selectors_on_name_and_namespace(kube: Cluster) -> None:
    other = kube.create_namespace()
    kube.create(configmap("a"))
    kube.create(configmap("b"))
    kube.create(configmap("a", namespace=other))
    by_name = kube.list("v1", "ConfigMap", field_selector="metadata.name=a")
    by_namespace = kube.list("v1", "ConfigMap", field_selector=f"metadata.namespace={other}")
    neither = kube.list("v1", "ConfigMap", "default", field_selector="metadata.name!=a")
    assert {cm["metadata"]["namespace"] for cm in by_name} == {"default", other}
    assert [cm["metadata"]["name"] for cm in by_namespace if cm["metadata"]["name"] in "ab"] == ["a"]
    assert [cm["metadata"]["name"] for cm in neither if cm["metadata"]["name"] in "ab"] == ["b"]


def test_a_malformed_selector_is_400(kube: Cluster) -> None:
    with pytest.raises(ApiError) as bad:
        kube.list("v1", "ConfigMap", "default", label_selector="app in (web")
    assert bad.value.status == 400


# --- deletion: garbage collection, finalizers, namespaces ---

def test_deleting_an_owner_collects_dependents_whose_owners_are_all_gone(kube: Cluster) -> None:
    owner, second_owner = kube.create(workload("owner")), kube.create(configmap("second-owner"))
    kube.create({**configmap("only-child"), "metadata": {**configmap("only-child")["metadata"],
                                                         "ownerReferences": [owner_reference(owner)]}})
    kube.create({**configmap("two-parents"), "metadata": {**configmap("two-parents")["metadata"], "ownerReferences": [
        owner_reference(owner), owner_reference(second_owner)]}})
    kube.delete(IW, "InferenceWorkload", "owner", "default")
    wait_for(lambda: kube.get("v1", "ConfigMap", "only-child", "default") is None, message="only-child collected")
    assert kube.get("v1", "ConfigMap", "two-parents", "default") is not None
    kube.delete("v1", "ConfigMap", "second-owner", "default")
    wait_for(lambda: kube.get("v1", "ConfigMap", "two-parents", "default") is None, message="two-parents collected")


def test_orphan_deletion_keeps_dependents_and_drops_their_owner_reference(kube: Cluster) -> None:
    owner = kube.create(workload("owner"))
    kube.create({**configmap("child"), "metadata": {**configmap("child")["metadata"],
                                                    "ownerReferences": [owner_reference(owner)]}})
    kube.delete(IW, "InferenceWorkload", "owner", "default", propagation="Orphan")
    wait_for(lambda: kube.get(IW, "InferenceWorkload", "owner", "default") is None)
    assert "ownerReferences" not in kube.get("v1", "ConfigMap", "child", "default")["metadata"]


def test_finalizers_hold_a_deleted_object_until_they_are_removed(kube: Cluster) -> None:
    kube.create({**workload("w"), "metadata": {"name": "w", "namespace": "default", "finalizers": ["test/hold"]}})
    deleting = kube.delete(IW, "InferenceWorkload", "w", "default")
    with pytest.raises(ApiError) as no_new_finalizers:
        kube.patch(IW, "InferenceWorkload", "w", {"metadata": {"finalizers": ["test/hold", "test/more"]}}, "default")
    still_there = kube.get(IW, "InferenceWorkload", "w", "default")
    kube.patch(IW, "InferenceWorkload", "w", {"metadata": {"finalizers": None}}, "default")
    assert deleting["metadata"]["deletionTimestamp"] and still_there["metadata"]["deletionTimestamp"]
    assert no_new_finalizers.value.status == 422
    assert kube.get(IW, "InferenceWorkload", "w", "default") is None


def test_deleting_a_namespace_deletes_its_content_then_the_namespace(kube: Cluster) -> None:
    namespace = kube.create_namespace()
    kube.create(configmap("c", namespace=namespace))
    kube.delete("v1", "Namespace", namespace)
    wait_for(lambda: kube.get("v1", "Namespace", namespace) is None, timeout_s=60, message="namespace gone")
    with pytest.raises(ApiError) as missing:
        kube.create(configmap("late", namespace=namespace))
    assert kube.list("v1", "ConfigMap", namespace) == []
    assert missing.value.status == 404


# --- watches ---

def watch_events(core: kubernetes.client.CoreV1Api, namespace: str, **options: Any) -> list[tuple[str, str]]:
    """The events of a watch on `namespace`'s ConfigMaps, until its server-side timeout ends it."""
    stream = kubernetes.watch.Watch().stream(core.list_namespaced_config_map, namespace, **options)
    return [(event["type"], event["object"].metadata.name) for event in stream
            if event["object"].metadata.name != "kube-root-ca.crt"]


def test_a_watch_from_a_list_version_replays_every_change_since_then(kube: Cluster, core: kubernetes.client.CoreV1Api) -> None:
    ns = kube.create_namespace()
    kube.create(configmap("before", ns))
    listed = core.list_namespaced_config_map(ns)
    kube.create(configmap("after", ns))
    kube.patch("v1", "ConfigMap", "before", {"data": {"k": "v"}}, ns)
    kube.delete("v1", "ConfigMap", "after", ns)
    events = watch_events(core, ns, resource_version=listed.metadata.resource_version, timeout_seconds=1)
    assert events == [("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "after")]


def test_no_change_is_lost_or_doubled_between_a_list_and_its_watch(kube: Cluster, core: kubernetes.client.CoreV1Api) -> None:
    ns = kube.create_namespace()
    names = [f"burst-{i}" for i in range(40)]
    writer = threading.Thread(target=lambda: [kube.create(configmap(name, ns, labels={"burst": "1"})) for name in names])
    writer.start()
    listed = core.list_namespaced_config_map(ns, label_selector="burst=1")
    seen = [cm.metadata.name for cm in listed.items]
    stream = kubernetes.watch.Watch()
    for event in stream.stream(core.list_namespaced_config_map, ns, label_selector="burst=1",
                               resource_version=listed.metadata.resource_version, timeout_seconds=5):
        seen.append(event["object"].metadata.name)
        if len(seen) >= len(names):
            stream.stop()
    writer.join()
    assert sorted(seen) == sorted(names)


def test_a_watch_with_a_selector_sees_objects_enter_and_leave_it(kube: Cluster, core: kubernetes.client.CoreV1Api) -> None:
    ns = kube.create_namespace()
    listed = core.list_namespaced_config_map(ns)
    kube.create(configmap("c", ns, labels={"watched": "yes"}))
    kube.patch("v1", "ConfigMap", "c", {"metadata": {"labels": {"watched": "no"}}}, ns)
    kube.patch("v1", "ConfigMap", "c", {"metadata": {"labels": {"watched": "yes"}}}, ns)
    events = watch_events(core, ns, label_selector="watched=yes", resource_version=listed.metadata.resource_version,
                          timeout_seconds=1)
    assert events == [("ADDED", "c"), ("DELETED", "c"), ("ADDED", "c")]


def test_a_watch_without_a_version_starts_with_the_current_objects(kube: Cluster, core: kubernetes.client.CoreV1Api) -> None:
    ns = kube.create_namespace()
    kube.create(configmap("one", ns))
    kube.create(configmap("two", ns))
    assert watch_events(core, ns, timeout_seconds=1) == [("ADDED", "one"), ("ADDED", "two")]


def test_a_watch_from_a_compacted_version_is_410_gone(emulated: Cluster) -> None:
    first = emulated.create(configmap("c"))
    emulated.patch("v1", "ConfigMap", "c", {"data": {"k": "v"}}, "default")
    emulated.call(emulated.emulator.compact)
    stream = emulated.request("GET", "/api/v1/namespaces/default/configmaps",
                              query=[("watch", "true"), ("resourceVersion", first["metadata"]["resourceVersion"]),
                                     ("timeoutSeconds", "1")])
    assert stream["type"] == "ERROR" and stream["object"]["code"] == 410


def test_dropping_watches_ends_open_streams(emulated: Cluster, core: kubernetes.client.CoreV1Api) -> None:
    ended = threading.Event()

    def watch() -> None:
        watch_events(core, "default", timeout_seconds=30)
        ended.set()

    threading.Thread(target=watch, daemon=True).start()
    dropped = wait_for(lambda: emulated.drop_watches(), message="a watch to drop")
    assert dropped == 1 and ended.wait(5)


# --- events, faults, request log ---

def test_events_can_be_posted_and_listed(kube: Cluster, core: kubernetes.client.CoreV1Api) -> None:
    ns = kube.create_namespace()
    core.create_namespaced_event(ns, {
        "metadata": {"generateName": "hetplace-"}, "type": "Normal", "reason": "Placed", "message": "on gpu-eu",
        "involvedObject": {"apiVersion": IW, "kind": "InferenceWorkload", "name": "w", "namespace": ns}})
    events = [e for e in core.list_namespaced_event(ns).items if e.reason == "Placed"]
    assert [(e.reason, e.message) for e in events] == [("Placed", "on gpu-eu")]
    assert events[0].metadata.name.startswith("hetplace-")


def test_injected_faults_answer_a_number_of_requests_and_the_log_counts_writes(emulated: Cluster) -> None:
    emulated.create(configmap("c"))
    fault = emulated.fail("PATCH", r"/configmaps/c$", status=500, times=2)
    conflict = emulated.fail("PUT", r"/configmaps/c$", status=409, times=1)
    statuses = []
    for _ in range(3):
        try:
            emulated.patch("v1", "ConfigMap", "c", {"data": {"k": "v"}}, "default")
            statuses.append(200)
        except ApiError as failed:
            statuses.append(failed.status)
    with pytest.raises(ApiError) as injected_conflict:
        emulated.replace(emulated.get("v1", "ConfigMap", "c", "default"))
    writes = [(call.method, call.status) for call in emulated.requests() if call.is_write]
    assert statuses == [500, 500, 200] and fault.hits == 2
    assert injected_conflict.value.status == 409 and conflict.hits == 1
    assert writes == [("POST", 201), ("PATCH", 500), ("PATCH", 500), ("PATCH", 200), ("PUT", 409)]


def test_any_bearer_token_or_none_is_accepted_but_other_credentials_are_401(emulated: Cluster) -> None:
    def status(headers: dict[str, str]) -> int:
        request = urllib.request.Request(f"{emulated.url}/api/v1/namespaces", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as refused:
            return refused.code

    assert status({"Authorization": "Bearer anything"}) == 200
    assert status({}) == 200  # kubectl sends no credentials to an http:// server
    assert status({"Authorization": "Basic dXNlcjpwYXNz"}) == 401


def test_kubectl_applies_server_side_and_reads_back(kube: Cluster, tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    manifest = tmp_path / "workload.yaml"
    manifest.write_text(yaml.safe_dump(workload("from-kubectl")))

    def run(*args: str) -> str:
        done = subprocess.run([kubectl, "--kubeconfig", str(kube.kubeconfig_path), *args], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    applied = run("apply", "--server-side", "--field-manager=kubectl-test", "--validate=false", "-f", str(manifest))
    model = run("get", "inferenceworkloads", "from-kubectl", "-n", "default", "-o", "jsonpath={.spec.model}")
    managers = [f["manager"] for f in kube.get(IW, "InferenceWorkload", "from-kubectl", "default")["metadata"]
                ["managedFields"]]
    assert "serverside-applied" in applied and model == "resnet" and managers == ["kubectl-test"]


# --- the deployment controller ---

def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "triton", "image": "triton"}]}}}}


def available(kube: Cluster, name: str) -> bool:
    status = (kube.get("apps/v1", "Deployment", name, "default") or {}).get("status", {})
    return any(c["type"] == "Available" and c["status"] == "True" for c in status.get("conditions", []))


def test_deployments_become_available_and_report_their_generation(kube: Cluster) -> None:
    kube.create(deployment("web", replicas=3))
    wait_for(lambda: available(kube, "web"), message="web available")
    kube.patch("apps/v1", "Deployment", "web", {"spec": {"replicas": 1}}, "default")
    status = wait_for(lambda: (kube.get("apps/v1", "Deployment", "web", "default")["status"]
                               if kube.get("apps/v1", "Deployment", "web", "default")["status"]
                               .get("observedGeneration") == 2 else None), message="generation 2 observed")
    assert (status["replicas"], status["readyReplicas"], status["availableReplicas"]) == (1, 1, 1)


def test_a_held_deployment_stays_unavailable_until_released(emulated: Cluster) -> None:
    hold = emulated.hold_deployments(r"slow-.*")
    emulated.create(deployment("slow-gpu"))
    emulated.create(deployment("fast-cpu"))
    wait_for(lambda: available(emulated, "fast-cpu"), message="fast-cpu available")
    held = wait_for(lambda: emulated.get("apps/v1", "Deployment", "slow-gpu", "default").get("status"))
    hold.release()
    wait_for(lambda: available(emulated, "slow-gpu"), message="slow-gpu available after release")
    assert held["unavailableReplicas"] == 2 and "availableReplicas" not in held


# --- the real-cluster mode's guards ---

@pytest.mark.parametrize("context, allowed, refused", [
    ("kind-hetplace", None, False),
    ("minikube", None, False),
    ("k3d-dev", None, False),
    ("integration-test", None, False),
    ("prod-eu-1", None, True),
    ("prod-eu-1", "prod-eu-1", False),
    (None, None, True),
], ids=["kind", "minikube", "k3d", "a test context", "a production-looking context",
        "a context named by HETPLACE_TEST_CONTEXT", "no current context"])
def test_the_context_guard_refuses_contexts_that_do_not_look_like_test_clusters(
        context: str | None, allowed: str | None, refused: bool) -> None:
    assert bool(context_refusal(context, allowed)) == refused


def test_a_real_cluster_kubeconfig_with_a_production_context_fails_the_test(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "prod.yaml"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "prod-eu-1",
        "clusters": [{"name": "prod", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "prod", "user": {"token": "t"}}],
        "contexts": [{"name": "prod-eu-1", "context": {"cluster": "prod", "user": "prod"}}]}))
    monkeypatch.setenv("HETPLACE_TEST_KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("HETPLACE_TEST_CONTEXT", raising=False)
    with pytest.raises(pytest.fail.Exception, match="refusing to run the integration tests against context 'prod-eu-1'"):
        make_cluster(tmp_path, all_test_crds())


def test_emulator_only_controls_are_skips_on_a_real_cluster() -> None:
    with pytest.raises(EmulatorOnly, match="needs the emulator: fault injection"):
        Cluster().fail("PATCH", ".*")
    assert issubclass(EmulatorOnly, pytest.skip.Exception)


# --- real kopf operators ---

def apply_configmap(api: kubernetes.client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply as hetplace does it: PATCH application/apply-patch+yaml, fieldManager=hetplace."""
    meta = obj["metadata"]
    _, url, headers, body, _ = api.param_serialize(
        method="PATCH", resource_path=f"/api/v1/namespaces/{meta['namespace']}/configmaps/{meta['name']}",
        query_params=[("fieldManager", "hetplace"), ("force", "true")],
        header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
        body=yaml.safe_dump(obj), auth_settings=["BearerToken"])
    response = api.call_api("PATCH", url, header_params=headers, body=body, _request_timeout=10)
    answer = yaml.safe_load(response.read())
    if response.status >= 400:
        raise RuntimeError(f"apply of {meta['name']} failed: {response.status} {answer}")
    return answer


def rendering_registry(api: kubernetes.client.ApiClient, calls: list[str]) -> kopf.OperatorRegistry:
    """A small operator: each InferenceWorkload gets a ConfigMap rendered from its spec, applied server-side."""
    registry = kopf.OperatorRegistry()

    @kopf.on.create(IW.split("/")[0], "v1alpha1", "inferenceworkloads", registry=registry, id="render", backoff=0.1)
    @kopf.on.update(IW.split("/")[0], "v1alpha1", "inferenceworkloads", registry=registry, id="render", backoff=0.1)
    def render(name: str, namespace: str, spec: dict, uid: str, **_: Any) -> dict[str, Any]:
        calls.append(name)
        owner = {"apiVersion": IW, "kind": "InferenceWorkload", "name": name, "uid": uid, "controller": True}
        applied = apply_configmap(api, {**configmap(f"{name}-config", namespace, model=spec["model"]),
                                        "metadata": {"name": f"{name}-config", "namespace": namespace,
                                                     "ownerReferences": [owner]}})
        return {"configMap": applied["metadata"]["name"], "model": spec["model"]}

    return registry


def rendered(kube: Cluster, name: str, model: str) -> bool:
    obj = kube.get(IW, "InferenceWorkload", name, "default") or {}
    config = kube.get("v1", "ConfigMap", f"{name}-config", "default") or {}
    return obj.get("status", {}).get("render", {}).get("model") == model and config.get("data") == {"model": model}


def test_a_kopf_operator_applies_a_configmap_and_kopf_patches_the_status(kube: Cluster, run_operator) -> None:
    calls: list[str] = []
    run_operator(rendering_registry(kube.api_client(), calls), settings=fast_settings())
    kube.create(workload("w1"))
    wait_for(lambda: rendered(kube, "w1", "resnet"), message="w1 rendered")
    kube.patch(IW, "InferenceWorkload", "w1", {"spec": {"model": "bert"}}, "default")
    wait_for(lambda: rendered(kube, "w1", "bert"), message="w1 re-rendered after its spec changed")
    config = kube.get("v1", "ConfigMap", "w1-config", "default")
    assert [f["manager"] for f in config["metadata"]["managedFields"]] == ["hetplace"]
    assert config["metadata"]["ownerReferences"][0]["name"] == "w1"
    assert calls == ["w1", "w1"]
    kube.delete(IW, "InferenceWorkload", "w1", "default")
    wait_for(lambda: kube.get("v1", "ConfigMap", "w1-config", "default") is None, message="config collected")


def test_kopf_finalizers_are_added_and_removed_through_the_emulator(kube: Cluster, run_operator) -> None:
    registry, deleted = kopf.OperatorRegistry(), []

    @kopf.on.delete(IW.split("/")[0], "v1alpha1", "inferenceworkloads", registry=registry, id="cleanup")
    def cleanup(name: str, **_: Any) -> None:
        deleted.append(name)

    run_operator(registry, settings=fast_settings())
    kube.create(workload("w"))
    wait_for(lambda: kube.get(IW, "InferenceWorkload", "w", "default")["metadata"].get("finalizers"),
             message="kopf's finalizer added")
    kube.delete(IW, "InferenceWorkload", "w", "default")
    wait_for(lambda: kube.get(IW, "InferenceWorkload", "w", "default") is None, message="w deleted after cleanup")
    assert deleted == ["w"]


def test_two_peered_kopf_operators_only_the_higher_priority_one_works(kube: Cluster, run_operator) -> None:
    peering = f"hetplace-{uuid.uuid4().hex[:6]}"
    kube.create({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": peering}})
    high_calls: list[str] = []
    low_calls: list[str] = []
    high = run_operator(rendering_registry(kube.api_client(), high_calls), settings=fast_settings(),
                        peering_name=peering, priority=20, identity="op-high")
    # kopf's ready flag comes before its first keep-alive: a lower-priority operator started before the
    # higher one is seen would work until then (kopf behaves so on a real cluster too).
    wait_for(lambda: "op-high" in kube.get("kopf.dev/v1", "ClusterKopfPeering", peering).get("status", {}),
             message="the high-priority operator in the peering")
    run_operator(rendering_registry(kube.api_client(), low_calls), settings=fast_settings(),
                 peering_name=peering, priority=10, identity="op-low")
    wait_for(lambda: set(kube.get("kopf.dev/v1", "ClusterKopfPeering", peering).get("status", {}))
             == {"op-high", "op-low"}, message="both operators in the peering")

    kube.create(workload("while-high-runs"))
    wait_for(lambda: rendered(kube, "while-high-runs", "resnet"), message="handled by the high-priority operator")
    if isinstance(kube, EmulatedCluster):  # the paused operator does not even list them (kopf starts it paused)
        assert len([call for call in kube.requests("GET", r"/inferenceworkloads$") if not call.is_watch]) == 1
    high.stop()
    wait_for(lambda: set(kube.get("kopf.dev/v1", "ClusterKopfPeering", peering).get("status", {})) == {"op-low"},
             message="the stopped operator left the peering")
    kube.create(workload("after-high-left"))
    wait_for(lambda: rendered(kube, "after-high-left", "resnet"), message="handled by the low-priority operator")
    assert high_calls == ["while-high-runs"]
    assert low_calls == ["after-high-left"]


def test_a_kopf_operator_survives_server_errors_and_a_dropped_watch(emulated: Cluster, run_operator) -> None:
    calls: list[str] = []
    status_fault = emulated.fail("PATCH", r"/inferenceworkloads/faulty/status$", status=500, times=3)
    apply_fault = emulated.fail("PATCH", r"/configmaps/faulty-config$", status=500, times=3)
    run_operator(rendering_registry(emulated.api_client(), calls), settings=fast_settings())
    emulated.create(workload("faulty"))
    wait_for(lambda: rendered(emulated, "faulty", "resnet"), message="faulty rendered despite the errors")
    watches_before = len([call for call in emulated.requests() if call.is_watch])
    assert emulated.drop_watches() >= 1
    emulated.create(workload("after-drop"))
    wait_for(lambda: rendered(emulated, "after-drop", "resnet"), message="handled after the watch was dropped")
    assert (status_fault.hits, apply_fault.hits) == (3, 3)
    assert calls.count("faulty") == 4  # three failed applies, retried by kopf, then one that worked
    assert len([call for call in emulated.requests() if call.is_watch]) > watches_before
