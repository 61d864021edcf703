"""Drift of owned objects, pure: which applied fields a live object no longer holds as applied, and
which changes the index sees are someone else's (controller/drift.py)."""

from __future__ import annotations

import json

import copy

import pytest

from hetplace.controller.drift import GONE, DriftWatch, content_digest, differences

pytestmark = pytest.mark.unit

APPLIED = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "g", "namespace": "ns", "labels": {"hetplace.io/pool": "cpu"},
                 "annotations": {"hetplace.io/applied-hash": "abc"}},
    "spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": "triton", "image": "triton:1", "args": ["--a", "--b"],
         "ports": [{"name": "http", "containerPort": 8000}],
         "resources": {"requests": {"cpu": "1", "memory": "4Gi"}}}]}}},
}


def edited(change) -> dict:
    live = copy.deepcopy(APPLIED)
    change(live)
    return live


def container(live: dict) -> dict:
    return live["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("change, paths", [
    (lambda d: None, []),
    (lambda d: d["spec"].update(replicas=0), ["spec.replicas"]),
    (lambda d: container(d).update(image="other:2"), ["spec.template.spec.containers[triton].image"]),
    (lambda d: container(d).update(args=["--a"]), ["spec.template.spec.containers[triton].args"]),
    (lambda d: container(d)["args"].reverse(), ["spec.template.spec.containers[triton].args[0]",
                                                 "spec.template.spec.containers[triton].args[1]"]),
    (lambda d: d["metadata"]["labels"].pop("hetplace.io/pool"), ["metadata.labels.hetplace.io/pool"]),
    (lambda d: d["spec"]["template"]["spec"]["containers"].clear(), ["spec.template.spec.containers[triton]"]),
    (lambda d: d["metadata"]["labels"].update(team="a"), []),
    (lambda d: d["metadata"]["annotations"].update({"deployment.kubernetes.io/revision": "2"}), []),
    (lambda d: d["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy"}), []),
    (lambda d: container(d)["ports"][0].update(protocol="TCP"), []),
    (lambda d: d["spec"].update(progressDeadlineSeconds=600, revisionHistoryLimit=10), []),
    (lambda d: container(d)["resources"]["requests"].update(cpu="1000m"), []),
    (lambda d: container(d)["resources"]["requests"].update(memory="4096Mi"), []),
    (lambda d: container(d)["resources"]["requests"].update(memory="8Gi"),
     ["spec.template.spec.containers[triton].resources.requests.memory"]),
], ids=[
    "an object as applied has no difference",
    "scaled to 0",
    "an image changed",
    "an argument removed",
    "arguments reordered (an atomic list)",
    "a label hetplace set removed",
    "hetplace's container removed",
    "a label someone added is theirs",
    "an annotation a controller added is theirs",
    "a sidecar someone added is theirs",
    "a default the API server filled in is not a difference",
    "defaulted Deployment fields are not differences",
    "a quantity in its canonical form is the same quantity",
    "memory in other units is the same memory",
    "more memory is a difference",
])
def test_differences_are_the_applied_fields_a_live_object_does_not_hold(change, paths):
    assert [d.path for d in differences(APPLIED, edited(change))] == paths


def test_a_difference_says_the_value_found_and_the_value_applied():
    (found,) = differences(APPLIED, edited(lambda d: d["spec"].update(replicas=0)))
    assert str(found) == "spec.replicas was 0 (hetplace applies 3)"


def test_the_content_digest_ignores_status_versions_and_others_annotations():
    digest = content_digest(APPLIED)
    assert content_digest(edited(lambda d: d.update(status={"availableReplicas": 3}))) == digest
    assert content_digest(edited(lambda d: d["metadata"].update(resourceVersion="9", managedFields=[{}]))) == digest
    assert content_digest(edited(lambda d: d["metadata"]["annotations"].update(x="y"))) == digest
    assert content_digest(edited(lambda d: d["spec"].update(replicas=0))) != digest
    assert content_digest(APPLIED) >= 0 and content_digest(APPLIED) != GONE


@pytest.mark.parametrize("steps, suspect", [
    ([("wrote", 2), ("seen", 2, 1)], False),
    ([("seen", 1, 1)], False),
    ([("seen", 1, None)], False),
    ([("seen", 2, 1)], True),
    ([("wrote", 2), ("seen", 3, 1)], True),
    ([("wrote", GONE), ("seen", GONE, None)], False),
    ([("seen", GONE, None)], True),
    ([("wrote", 2), ("seen", 2, 1), ("seen", 5, 2)], True),
], ids=[
    "hetplace's own write coming back through the watch is not drift",
    "an event that changed nothing hetplace applies (status, a relist) is not drift",
    "an object first listed is not judged by its event (the first look compares it)",
    "a change nobody at hetplace made is drift",
    "a change after hetplace's write, other than it, is drift",
    "an object hetplace pruned going away is not drift",
    "an object someone deleted is drift",
    "hetplace's write seen once does not excuse the next change",
])
def test_the_watch_tells_someone_elses_change_from_hetplaces_own(steps, suspect):
    watch = DriftWatch()
    verdicts = []
    for step in steps:
        if step[0] == "wrote":
            watch.wrote("Deployment", "ns", "g", step[1])
        else:
            verdicts.append(watch.seen("ns/w", "Deployment", "ns", "g", step[1], step[2]))
    assert verdicts[-1] is suspect
    assert (watch.take("ns/w", ()) == ({("Deployment", "g")}, False)) is suspect


def test_a_first_look_compares_every_object_and_an_unfinished_one_keeps_its_suspects():
    watch = DriftWatch()
    watch.check_everything("ns/w")
    owned = {("Deployment", "g"), ("Service", "g"), ("ConfigMap", "w-routes")}
    assert watch.take("ns/w", owned) == (owned, True)
    assert watch.take("ns/w", owned) == (set(), False), "once"
    watch.put_back("ns/w", {("Service", "g")})
    assert watch.take("ns/w", owned) == ({("Service", "g")}, False)
    watch.seen("ns/w", "Service", "ns", "g", GONE, None)
    watch.forget("ns/w")
    assert watch.take("ns/w", owned) == (set(), False)


def test_a_write_whose_event_came_back_before_its_answer_leaves_nothing_behind():
    """The watch may deliver hetplace's own write before the write's answer: that event raised a
    suspicion the answer then lifts, and nothing stays expected for an event already seen."""
    watch = DriftWatch()
    assert watch.seen("ns/w", "Deployment", "ns", "g", 2, 1) is True         # the event, first
    watch.wrote("Deployment", "ns", "g", 2, "ns/w", seen_already=True)       # then the answer
    assert watch.take("ns/w", ()) == (set(), False)
    assert watch.seen("ns/w", "Deployment", "ns", "g", 3, 2) is True, "the next change is judged afresh"


def test_an_empty_map_or_list_hetplace_applies_is_the_same_as_none_at_all():
    """The API server leaves `nodeSelector: {}` and `tolerations: []` out of what it returns."""
    applied = edited(lambda d: d["spec"]["template"]["spec"].update(nodeSelector={}, tolerations=[]))
    assert differences(applied, APPLIED) == []
    assert [d.path for d in differences(edited(lambda d: d["spec"]["template"]["spec"].update(
        tolerations=[{"key": "edge"}])), APPLIED)] == ["spec.template.spec.tolerations"]


def test_an_event_that_changed_nothing_leaves_hetplaces_expected_write_in_place():
    """A status-only event already in flight before hetplace's write must not use up what the write
    is expected to bring back, or the write itself would look like someone else's."""
    watch = DriftWatch()
    watch.wrote("Deployment", "ns", "g", 2)
    assert watch.seen("ns/w", "Deployment", "ns", "g", 1, 1) is False       # status only, from before
    assert watch.seen("ns/w", "Deployment", "ns", "g", 2, 1) is False       # hetplace's write
    watch.wrote("Deployment", "ns", "g", GONE)
    assert watch.seen("ns/w", "Deployment", "ns", "g", 2, 2) is False       # another status update
    assert watch.seen("ns/w", "Deployment", "ns", "g", GONE, None) is False  # hetplace's prune
    assert watch.take("ns/w", ()) == (set(), False)


def test_a_json_document_in_a_configmap_is_compared_field_by_field():
    applied = {"data": {"routes.json": json.dumps({"version": 2, "sites": {"f": [{"http": "http://a:8000"}]}})}}
    edited_route = {"data": {"routes.json": json.dumps({"version": 2, "sites": {"f": [{"http": "http://x:8000"}]}})}}
    reformatted = {"data": {"routes.json": json.dumps(json.loads(applied["data"]["routes.json"]), indent=2)}}
    (found,) = differences(applied, edited_route)
    assert str(found) == 'data.routes.json:sites.f[0].http was "http://x:8000" (hetplace applies "http://a:8000")'
    assert differences(applied, reformatted) == [], "the same document written another way is not drift"
    (broken,) = differences(applied, {"data": {"routes.json": "{not json"}})
    assert broken.path == "data.routes.json"


def test_a_field_added_inside_a_json_document_is_drift_as_its_readers_refuse_it():
    applied = {"data": {"routes.json": json.dumps({"version": 2, "sites": {"f": [{"http": "http://a:8000"}]}})}}
    added = {"data": {"routes.json": json.dumps({"version": 2, "extra": 1,
                                                 "sites": {"f": [{"http": "http://a:8000", "weight": 3}]}})}}
    (found,) = differences(applied, added)
    assert found.path == "data.routes.json: (fields hetplace does not write)"
    assert found.live == ["extra", "sites.f[0].weight"]


def test_a_routes_prediction_alone_is_neither_drift_nor_worth_a_write():
    from hetplace.controller.inventory import APPLIED_HASH, with_applied_hash

    def routes(ms: float, within: bool = True) -> dict:
        document = {"version": 2, "sites": {"f": [{"pool": "p", "predictedLatencyMs": ms, "withinSlo": within}]}}
        return {"kind": "ConfigMap", "metadata": {"name": "w-routes"}, "data": {"routes.json": json.dumps(document)}}

    def digest(obj: dict) -> str:
        return with_applied_hash(obj)["metadata"]["annotations"][APPLIED_HASH]

    assert digest(routes(41.0)) == digest(routes(43.0)), "the prediction moved: no write"
    assert digest(routes(41.0)) != digest(routes(41.0, within=False)), "the verdict changed: written"
    assert differences(routes(41.0), routes(43.0)) == []
