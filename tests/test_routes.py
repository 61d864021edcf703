"""Routes v2 (docs/routes.md): each site's fallbacks ranked by the placement model, the routes
document the operator writes, its schema, and the reader the site side uses."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_model import compute_seconds, transfer

from hetplace.api.errors import InvalidObject
from hetplace.api.load import load_manifests, validate_manifest
from hetplace.api.models import ComputePool
from hetplace.engine.decision import Decision, GroupPlan, RoutePlan
from hetplace.engine.fallbacks import route_options
from hetplace.engine.snapshot import Encoding, LinkState, Pool, Resources, Snapshot, Traffic, Variant, Workload
from hetplace.render.triton import routes_configmap
from hetplace.site.routes import RoutesDocument, RoutesError, from_configmap, json_schema, read_file

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "docs" / "routes.schema.json"
GOLDEN = Path(__file__).resolve().parent / "golden"
FACTORY = REPO / "manifests" / "examples" / "factory"

pytestmark = pytest.mark.unit


def test_the_published_schema_is_the_one_the_reader_validates_with():
    assert json.loads(SCHEMA.read_text()) == json.loads(json.dumps(json_schema())), \
        "docs/routes.schema.json is stale: regenerate it from hetplace.site.routes.json_schema()"


@pytest.mark.parametrize("golden", ["factory-nominal.yaml", "factory-250kbps.yaml"])
def test_the_rendered_routes_document_passes_its_schema_and_reader(golden):
    configmap = next(d for d in yaml.safe_load_all((GOLDEN / golden).read_text()) if d["kind"] == "ConfigMap")
    document = json.loads(configmap["data"]["routes.json"])
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    read = from_configmap(configmap)
    assert read.workload == "factory/defect-detector" and read.model == "defect-detector"
    assert all(routes[0].decided for routes in read.sites.values())


# --- fallbacks, against the reference model -------------------------------------------------

ENCODINGS = (Encoding("raw", 224_000), Encoding("compressed", 32_830, -0.005))


def variant(name: str, hardware: str, latency_ms: float, concurrency: int = 2, accuracy: float = 0.85) -> Variant:
    return Variant(name, hardware, accuracy, latency_ms, latency_ms * 1.5, concurrency, Resources(1, 1e9, 0))


def pool(name: str, site: str, links: dict[str, tuple[float, float]], down: bool = False) -> Pool:
    return Pool(name, "cpu", "eu", site, Resources(16, 64e9, 0), 8, 1.0,
                {s: LinkState(kbps, rtt) for s, (kbps, rtt) in links.items()}, down=down)


def workload(traffic: dict[str, float], variants: tuple[Variant, ...], slo_ms: float = 150.0) -> Workload:
    return Workload("factory", "detector", 1000, ENCODINGS, variants, slo_ms, 99.0, 0.83,
                    tuple(Traffic(s, r) for s, r in traffic.items()))


def decision(groups: list[tuple[str, str, int, dict[str, tuple[str, float]]]]) -> Decision:
    """groups: (pool, variant, replicas, {site: (encoding, predicted ms)})."""
    return Decision("factory/detector", True, "MinCost", 1.0, tuple(
        GroupPlan(p, v, r, 1.0, tuple(RoutePlan(s, e, 0.0, ms, 0.0, 0.0, 0.0) for s, (e, ms) in routes.items()))
        for p, v, r, routes in groups), (), "test")


def with_rates(d: Decision, traffic: dict[str, float]) -> Decision:
    return dataclasses.replace(d, groups=tuple(
        dataclasses.replace(g, routes=tuple(dataclasses.replace(r, requests_per_second=traffic[r.site])
                                            for r in g.routes)) for g in d.groups))


def reference_latency_ms(w: Workload, pools: dict[str, Pool], d: Decision, site: str, pool_name: str,
                         variant_name: str, encoding: str) -> float | None:
    """The reference model's latency for `site` moved onto (pool, variant): its group's arrivals plus
    the site's; on the (site, pool) link the site's traffic alone, as the site's only route leaves
    its home for it (caps lifted: a fallback is taken as it is)."""
    rates = {t.site: t.requests_per_second for t in w.traffic}
    lifted = dataclasses.replace(w, max_utilization=1.0 - 1e-12, max_link_utilization=1.0 - 1e-12)
    group = next(g for g in d.groups if (g.pool, g.variant) == (pool_name, variant_name))
    arrivals = sum(rates[r.site] for r in group.routes) + rates[site]
    v = next(x for x in w.variants if x.name == variant_name)
    compute = compute_seconds(lifted, v, arrivals, group.replicas)
    encodings = {e.name: e for e in w.encodings}
    leg = transfer(lifted, Snapshot(()), pools[pool_name],
                   Traffic(site, rates[site]), encodings[encoding])
    return None if compute is None or leg is None else (compute + leg.network_s) * 1000.0


def test_a_fallback_is_predicted_with_the_sites_traffic_added_as_the_reference_model_does():
    w = workload({"factory": 10, "cloud": 40, "edge": 5},
                 (variant("gpu-v", "cpu", 4.0, 4), variant("cpu-v", "cpu", 20.0, 2)))
    pools = {"gpu": pool("gpu", "cloud", {"factory": (2000, 25), "edge": (500, 40)}),
             "cpu": pool("cpu", "cloud", {"factory": (2000, 25), "edge": (1000, 30)})}
    d = decision([("gpu", "gpu-v", 2, {"factory": ("compressed", 60.0), "cloud": ("raw", 9.0)}),
                  ("cpu", "cpu-v", 3, {"edge": ("compressed", 120.0)})])
    d = with_rates(d, {"factory": 10, "cloud": 40, "edge": 5})
    options = route_options(w, pools.values(), d)
    assert [o.pool for o in options["factory"]] == ["gpu", "cpu"]
    assert [o.pool for o in options["edge"]] == ["cpu", "gpu"]
    for site, routes in options.items():
        assert routes[0].decided and not any(o.decided for o in routes[1:])
        for o in routes[1:]:
            expected = reference_latency_ms(w, pools, d, site, o.pool, o.variant, o.encoding)
            assert o.predicted_latency_ms == pytest.approx(expected, rel=1e-6), (site, o)
            assert o.within_slo == (expected <= w.slo_latency_ms)


@settings(max_examples=60, deadline=None)
@given(rates=st.lists(st.floats(0.5, 60), min_size=3, max_size=3),
       bandwidths=st.lists(st.floats(100, 5000), min_size=4, max_size=4),
       replicas=st.lists(st.integers(1, 4), min_size=2, max_size=2),
       slo=st.floats(40, 400))
def test_fallbacks_are_ranked_by_the_reference_models_latency(rates, bandwidths, replicas, slo):
    traffic = dict(zip(("factory", "cloud", "edge"), rates))
    w = workload(traffic, (variant("a", "cpu", 5.0, 4), variant("b", "cpu", 15.0, 2)), slo)
    pools = {"p1": pool("p1", "cloud", {"factory": (bandwidths[0], 20), "edge": (bandwidths[1], 35)}),
             "p2": pool("p2", "edge", {"factory": (bandwidths[2], 10), "cloud": (bandwidths[3], 30)})}
    d = with_rates(decision([("p1", "a", replicas[0], {"factory": ("compressed", 50.0), "cloud": ("raw", 8.0)}),
                             ("p2", "b", replicas[1], {"edge": ("compressed", 40.0)})]), traffic)
    for site, routes in route_options(w, pools.values(), d).items():
        fallbacks = routes[1:]
        assert len(fallbacks) == 1
        (o,) = fallbacks
        by_encoding = {e.name: reference_latency_ms(w, pools, d, site, o.pool, o.variant, e.name) for e in ENCODINGS}
        finite = {e: ms for e, ms in by_encoding.items() if ms is not None}
        if not finite:
            assert o.predicted_latency_ms is None and not o.within_slo
            continue
        within = [e.name for e in ENCODINGS if e.name in finite and finite[e.name] <= slo + 1e-6]
        expected = within[0] if within else min(finite, key=finite.get)
        assert o.encoding == expected
        assert o.predicted_latency_ms == pytest.approx(finite[expected], rel=1e-6)
        assert o.within_slo == bool(within)


def test_a_down_pool_or_one_without_a_link_is_no_fallback_and_overloaded_ones_come_last():
    w = workload({"factory": 50}, (variant("a", "cpu", 5.0, 4), variant("b", "cpu", 200.0, 1)))
    pools = [pool("home", "cloud", {"factory": (5000, 20)}),
             pool("dead", "cloud", {"factory": (5000, 5)}, down=True),
             pool("far", "cloud", {}),
             pool("tiny", "cloud", {"factory": (5000, 5)}),
             pool("ok", "cloud", {"factory": (5000, 30)})]
    d = with_rates(decision([("home", "a", 4, {"factory": ("compressed", 60.0)}),
                             ("dead", "a", 4, {}), ("far", "a", 4, {}), ("tiny", "b", 1, {}), ("ok", "a", 4, {})]),
                   {"factory": 50})
    routes = route_options(w, pools, d)["factory"]
    assert [(o.pool, o.predicted_latency_ms is not None) for o in routes] == \
        [("home", True), ("ok", True), ("tiny", False)]


def test_groups_draining_after_a_move_are_fallbacks_marked_so():
    w = workload({"factory": 10}, (variant("a", "cpu", 5.0, 4),))
    pools = [pool("new", "cloud", {"factory": (5000, 20)}), pool("old", "cloud", {"factory": (5000, 10)})]
    serving = with_rates(decision([("new", "a", 2, {"factory": ("raw", 90.0)})]), {"factory": 10})
    leaving = with_rates(decision([("old", "a", 2, {"factory": ("compressed", 30.0)})]), {"factory": 10})
    routes = route_options(w, pools, serving, draining=leaving)["factory"]
    assert [(o.pool, o.decided, o.draining) for o in routes] == [("new", True, False), ("old", False, True)]


# --- the document -------------------------------------------------------------------------------

def factory():
    manifests = load_manifests([FACTORY / "pools", FACTORY / "workload.yaml"])
    return manifests.workloads[0], {p.metadata.name: p for p in manifests.pools}


def test_a_pool_with_client_endpoints_gives_its_routes_those_addresses():
    w_obj, pools = factory()
    cpu = pools["cpu-cloud-eu"]
    outside = cpu.model_copy(update={"spec": cpu.spec.model_copy(update={"client_endpoints": validate_manifest(ComputePool, {
        **cpu_manifest(), "spec": {**cpu_manifest()["spec"], "clientEndpoints": {
            "http": "https://{service}.{namespace}.cpu.example.com",
            "grpc": "grpcs://{pool}-{variant}.grpc.example.com:443"}}}).spec.client_endpoints})})
    options = {"factory-eu-1": [route_option("cpu-cloud-eu", "openvino-int8", decided=True)],
               "cloud-eu": [route_option("gpu-cloud-eu", "trt-fp16", decided=True)]}
    cm = routes_configmap(w_obj, options, {**pools, "cpu-cloud-eu": outside}, generation=4,
                          decided_at="2026-12-07T22:00:00Z")
    document = from_configmap(cm)
    factory_route = document.sites["factory-eu-1"][0]
    assert factory_route.http == "https://defect-detector-cpu-cloud-eu-openvino-int8.factory.cpu.example.com"
    assert factory_route.grpc == "grpcs://cpu-cloud-eu-openvino-int8.grpc.example.com:443"
    assert document.sites["cloud-eu"][0].http == "http://defect-detector-gpu-cloud-eu-trt-fp16.factory.svc:8000"
    assert (document.generation, document.decided_at.isoformat()) == (4, "2026-12-07T22:00:00+00:00")


def cpu_manifest() -> dict:
    return yaml.safe_load((FACTORY / "pools" / "cpu-cloud-eu.yaml").read_text())


def route_option(pool_name: str, variant_name: str, decided: bool = False):
    from hetplace.engine.fallbacks import RouteOption
    return RouteOption(pool_name, variant_name, "raw", 42.0, True, decided=decided)


@pytest.mark.parametrize("template, says", [
    ({"http": "https://{svc}.example.com", "grpc": "grpc://a:1"}, "placeholders {service}"),
    ({"http": "ftp://x", "grpc": "grpc://a:1"}, "http:// or https://"),
    ({"http": "http://x", "grpc": "a:1"}, "grpc://HOST:PORT"),
])
def test_a_bad_client_endpoint_template_is_refused_naming_the_field_and_rule(template, says):
    manifest = cpu_manifest()
    manifest["spec"]["clientEndpoints"] = template
    with pytest.raises(InvalidObject) as refused:
        validate_manifest(ComputePool, manifest)
    assert "clientEndpoints" in str(refused.value) and says in str(refused.value)


def a_document(**changes) -> dict:
    route = {"pool": "p", "variant": "v", "encoding": "raw", "model": "m", "http": "http://h:8000",
             "grpc": "grpc://h:8001", "predictedLatencyMs": 12.0, "withinSlo": True, "decided": True}
    return {"version": 2, "workload": "ns/w", "generation": 1, "decidedAt": "2026-12-07T22:00:00Z",
            "model": "m", "sloLatencyMs": 100, "sites": {"s": [route]}, **changes}


def configmap(document, name: str = "w-routes") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"},
            "data": {"routes.json": document if isinstance(document, str) else json.dumps(document)}}


@pytest.mark.parametrize("document, says", [
    ("{not json", "is not JSON"),
    (a_document(version=1), "version"),
    (a_document(sites={"s": []}), "sites.s"),
    (a_document(sites={"s": [{"pool": "p"}]}), "sites.s.0"),
    (a_document(workload="no-namespace"), "workload"),
])
def test_a_bad_routes_document_is_refused_naming_the_configmap_and_field(document, says):
    with pytest.raises(RoutesError) as refused:
        from_configmap(configmap(document))
    assert "ConfigMap ns/w-routes" in str(refused.value) and says in str(refused.value)


def test_a_routes_file_holds_one_configmap_a_list_or_several(tmp_path):
    one, two = configmap(a_document()), configmap(a_document(workload="ns/x"), "x-routes")
    single = tmp_path / "one.yaml"
    single.write_text(yaml.safe_dump(one))
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [one, two]}))
    multi = tmp_path / "multi.yaml"
    multi.write_text(yaml.safe_dump_all([one, two]))
    assert [d.workload for d in read_file(str(single))] == ["ns/w"]
    assert [d.workload for d in read_file(str(listed))] == ["ns/w", "ns/x"]
    assert [d.workload for d in read_file(str(multi))] == ["ns/w", "ns/x"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(RoutesError, match="no routes ConfigMap"):
        read_file(str(empty))


def test_only_the_first_route_may_be_the_decided_one():
    doc = a_document()
    second = {**doc["sites"]["s"][0], "pool": "q"}
    with pytest.raises(RoutesError, match="only the first route"):
        from_configmap(configmap({**doc, "sites": {"s": [doc["sites"]["s"][0], second]}}))
    assert RoutesDocument.model_validate(a_document()).encoding_for("s") == "raw"
    assert math.isclose(RoutesDocument.model_validate(a_document()).slo_latency_ms, 100)


def test_other_workloads_on_a_fallbacks_link_slow_it_as_the_engine_counts_them():
    w = workload({"factory": 10}, (variant("a", "cpu", 5.0, 4),))
    pools = [pool("home", "cloud", {"factory": (5000, 20)}), pool("far", "cloud", {"factory": (500, 10)})]
    d = with_rates(decision([("home", "a", 2, {"factory": ("compressed", 40.0)}), ("far", "a", 2, {})]),
                   {"factory": 10})
    alone = route_options(w, pools, d)["factory"][1]
    shared = route_options(w, pools, d, background_bytes_per_s={("factory", "far"): 100_000})["factory"][1]
    assert shared.predicted_latency_ms > alone.predicted_latency_ms
    crowded = route_options(w, pools, d, background_bytes_per_s={("factory", "far"): 499_000})["factory"][1]
    assert crowded.predicted_latency_ms is None and not crowded.within_slo, "others saturate it: no prediction"
