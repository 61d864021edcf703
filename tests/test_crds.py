"""The generated CRDs: in sync with crds/, structural, and admitting exactly what the models admit."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import celpy
import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft4Validator

from builders import DELETE, a_pool, a_workload, with_path
from crd_admission import admit, crd_schema, evaluate
from hetplace.api.crdgen import KINDS, crd, render_crds
from hetplace.api.errors import InvalidObject
from hetplace.api.load import validate_manifest
from hetplace.api.models import ComputePool, InferenceWorkload
from hetplace.cli import main

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO.parent / "shared" / "examples"
CRDS = {kind.kind: crd(kind) for kind in KINDS}
MODELS = {"ComputePool": ComputePool, "InferenceWorkload": InferenceWorkload}

# Keywords a structural schema must not carry (or that Kubernetes refuses in a CRD outright).
FORBIDDEN = {"$ref", "$defs", "definitions", "allOf", "oneOf", "not", "const", "title", "uniqueItems",
             "patternProperties", "dependencies", "additionalItems", "prefixItems", "$schema", "id", "nullable"}


def test_crds_directory_matches_the_models() -> None:
    rendered = render_crds()
    on_disk = {path.name: path.read_text() for path in (REPO / "crds").glob("*.yaml")}
    stale = sorted(name for name in rendered.keys() | on_disk.keys() if rendered.get(name) != on_disk.get(name))
    assert not stale, f"crds/ is out of date with the models ({', '.join(stale)}): run `make crds`"


def test_rendering_is_deterministic() -> None:
    assert render_crds() == render_crds()


@pytest.mark.cli
def test_hetplace_crds_prints_every_crd_as_one_multi_document_stream() -> None:
    result = CliRunner().invoke(main, ["crds"])
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.output))
    assert documents == [yaml.safe_load(text) for text in render_crds().values()]


@pytest.mark.cli
def test_hetplace_crds_out_writes_one_file_per_crd(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["crds", "--out", str(tmp_path / "crds")])
    assert result.exit_code == 0, result.output
    assert {path.name: path.read_text() for path in (tmp_path / "crds").iterdir()} == render_crds()


@pytest.mark.parametrize(
    ("kind", "scope", "short_name"),
    [
        pytest.param("ComputePool", "Cluster", "cpool", id="pools are cluster-scoped with short name cpool"),
        pytest.param("InferenceWorkload", "Namespaced", "iw", id="workloads are namespaced with short name iw"),
    ],
)
def test_names_scope_category_and_status_subresource(kind: str, scope: str, short_name: str) -> None:
    spec = CRDS[kind]["spec"]
    assert spec["group"] == "hetplace.io" and spec["scope"] == scope
    assert spec["names"]["shortNames"] == [short_name] and spec["names"]["categories"] == ["hetplace"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert CRDS[kind]["metadata"]["name"] == f"{spec['names']['plural']}.hetplace.io"


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path: properties, items and additionalProperties."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[*]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{*}}")


ALL_NODES = [(kind, path, node) for kind, definition in CRDS.items() for path, node in nodes(crd_schema(definition))]


def test_every_node_is_structural() -> None:
    problems = []
    for kind, path, node in ALL_NODES:
        where = f"{kind}{path}"
        if node.get("x-kubernetes-int-or-string"):
            if node.get("anyOf") != [{"type": "integer"}, {"type": "string"}] or "type" in node:
                problems.append(f"{where}: int-or-string must be exactly anyOf integer|string without type")
        elif "type" not in node:
            problems.append(f"{where}: has no type")
        elif "anyOf" in node:
            problems.append(f"{where}: anyOf outside an int-or-string")
        if FORBIDDEN & node.keys():
            problems.append(f"{where}: forbidden keywords {sorted(FORBIDDEN & node.keys())}")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{where}: properties and additionalProperties together")
        for flag in ("exclusiveMinimum", "exclusiveMaximum"):
            if flag in node and not isinstance(node[flag], bool):
                problems.append(f"{where}: {flag} must be a boolean flag (OpenAPI v3.0)")
        if node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{where}: preserves unknown fields, so typos would pass silently")
    assert not problems, "\n".join(problems)


def test_metadata_is_left_to_the_server_except_for_name() -> None:
    for definition in CRDS.values():
        metadata = crd_schema(definition)["properties"]["metadata"]
        assert metadata["type"] == "object" and set(metadata.get("properties", {})) <= {"name", "generateName"}


def test_list_map_keys_are_required_scalars_of_object_items() -> None:
    for kind, path, node in ALL_NODES:
        if node.get("x-kubernetes-list-type") == "map":
            items = node["items"]
            assert items["type"] == "object", f"{kind}{path}"
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in items.get("required", []) or "default" in items["properties"][key], f"{kind}{path}.{key}"
                assert items["properties"][key]["type"] in ("string", "integer", "boolean"), f"{kind}{path}.{key}"
        if node.get("x-kubernetes-list-type") == "set":
            assert node["items"]["type"] in ("string", "integer", "number", "boolean"), f"{kind}{path}"


def test_every_default_is_valid_for_its_own_field() -> None:
    for kind, path, node in ALL_NODES:
        if "default" in node:
            errors = list(Draft4Validator({k: v for k, v in node.items() if k != "default"}).iter_errors(node["default"]))
            assert not errors, f"{kind}{path}: default {node['default']!r}: {errors[0].message}"


def test_fields_are_described_for_kubectl_explain() -> None:
    undocumented = [f"{kind}{path}" for kind, path, node in ALL_NODES
                    if path.startswith(".spec") and not path.endswith(("[*]", "{*}")) and "description" not in node]
    assert not undocumented


VALIDATIONS = [(kind, path, node, rule) for kind, path, node in ALL_NODES
               for rule in node.get("x-kubernetes-validations", [])]


@pytest.mark.parametrize(
    ("path", "node", "rule"), [pytest.param(path, node, rule, id=f"{kind}{path}: {rule['rule']}")
                               for kind, path, node, rule in VALIDATIONS],
)
def test_each_cel_rule_compiles_and_its_field_path_exists(path: str, node: dict[str, Any], rule: dict[str, Any]) -> None:
    celpy.Environment().compile(rule["rule"])
    assert rule["message"]
    if "fieldPath" in rule:
        target = node
        for part in rule["fieldPath"].lstrip(".").split("."):
            target = target["properties"][part]


def test_printer_columns_point_at_fields_that_exist() -> None:
    for kind, definition in CRDS.items():
        known = {path for path, _ in nodes(crd_schema(definition))}
        (version,) = definition["spec"]["versions"]
        names = [column["name"] for column in version["additionalPrinterColumns"]]
        assert names[-1] == "Age" and len(set(names)) == len(names)
        for column in version["additionalPrinterColumns"]:
            path = column["jsonPath"]
            assert path == ".metadata.creationTimestamp" or path in known, f"{kind}: {column}"


def factory_documents() -> list[dict[str, Any]]:
    if not EXAMPLES.is_dir():
        pytest.skip("the shared examples are not beside this checkout")
    return [d for d in yaml.safe_load_all((EXAMPLES / "factory.yaml").read_text()) if d["kind"] in CRDS]


def test_the_factory_example_is_admitted() -> None:
    for document in factory_documents():
        assert admit(CRDS[document["kind"]], document) == [], document["metadata"]["name"]


STATUS = {
    "observedGeneration": 2, "phase": "Placed", "summary": "cpu-cloud-eu/openvino-int8 x3", "costPerHour": 0.534,
    "conditions": [{"type": "Placed", "status": "True", "reason": "Optimal", "message": "placed",
                    "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2}],
    "placements": [{"pool": "cpu-cloud-eu", "variant": "openvino-int8", "replicas": 3, "costPerHour": 0.534,
                    "routes": [{"site": "cloud-eu", "encoding": "raw", "requestsPerSecond": 100,
                                "predictedLatencyMs": 82.9, "observedLatencyMs": 80.1}]}],
    "decision": {"at": "2026-01-01T00:00:00Z", "reason": "initial", "fingerprint": "f00"},
    "rejected": [{"pool": "gpu-cloud-us", "reason": "region"}],
}

GOOD = [
    pytest.param(a_pool("gpu-cloud-eu").gpu().nodes(4, "4", "16Gi", 1).hourly(0.81)
                 .link("factory-eu-1", kbps=2000, rtt_ms=25).toleration("nvidia.com/gpu").raw(), id="a gpu pool"),
    pytest.param(a_pool("arm-factory-eu-1").arm().site("factory-eu-1").tco().allow_namespaces("factory").raw(),
                 id="an owned arm pool for one namespace"),
    pytest.param(a_workload("w").encoding("raw", 224000).encoding("compressed", 32830, -0.005)
                 .policy(maxCostPerHour=None).raw(), id="a workload with an explicit null budget"),
    pytest.param({**a_workload("w").raw(), "status": STATUS}, id="a workload with the status the operator writes"),
    pytest.param({**a_pool("p").raw(), "status": {"nodesReady": 2, "nodeCostPerHour": 0.178,
                  "capacity": {"cpu": "8", "memory": "16Gi"}}}, id="a pool with its status"),
    pytest.param(a_workload("w").variant("v", cpu=2, memory=4294967296).raw(), id="integer quantities"),
]


@pytest.mark.parametrize("document", GOOD)
def test_good_objects_pass_both_the_crd_and_the_models(document: dict[str, Any]) -> None:
    assert admit(CRDS[document["kind"]], document) == []
    validate_manifest(MODELS[document["kind"]], document)


def _tco() -> dict[str, Any]:
    return {"capex": 600, "amortizationYears": 3, "powerWatts": 25, "electricityPerKWh": 0.25}


BAD = [
    ("a percentile of 120", a_workload().raw(), "spec.slo.percentile", 120, "maximum"),
    ("an unknown hardware class", a_workload().raw(), "spec.variants[0].hardware", "tpu", "is not one of"),
    ("a missing SLO", a_workload().raw(), "spec.slo", DELETE, "'slo' is a required property"),
    ("a cpu quantity with words", a_workload().raw(), "spec.variants[0].resources.cpu", "2 cores", "does not match"),
    ("a bare fractional cpu", a_workload().raw(), "spec.variants[0].resources.cpu", 1.5, "is not valid under any"),
    ("17 variants", a_workload().raw(), "spec.variants",
     [{"name": f"v{i}", "hardware": "cpu", "accuracy": 0.8, "profile": {"latencyMs": 1},
       "resources": {"cpu": "1", "memory": "1Gi"}} for i in range(17)], "is too long"),
    ("two variants of one name", a_workload().variant("a").variant("a").raw(), "spec.responseBytes", 1, "Duplicate value"),
    ("two traffic entries from one site", a_workload().traffic("x", 1).traffic("x", 2).raw(), "spec.responseBytes", 1,
     "Duplicate value"),
    ("a tail below the mean latency", a_workload().raw(), "spec.variants[0].profile.tailLatencyMs", 1,
     "tailLatencyMs must be >= latencyMs"),
    ("min replicas above max", a_workload().replicas(5, 2).raw(), "spec.responseBytes", 1, "min must be <= max"),
    ("min replicas above the default max", a_workload().raw(), "spec.replicas", {"min": 60}, "min must be <= max"),
    ("a typo in a field name", a_workload().raw(), "spec.slo.latncyMs", 150, "unknown field"),
    ("a variant name with capitals", a_workload().raw(), "spec.variants[0].name", "TRT", "does not match"),
    ("a workload name with dots", a_workload().raw(), "metadata.name", "a.b", "does not match"),
    ("both an hourly price and a tco", a_pool().raw(), "spec.cost", {"hourly": 1, "tco": _tco()},
     "set exactly one of hourly or tco"),
    ("neither an hourly price nor a tco", a_pool().raw(), "spec.cost", {}, "set exactly one of hourly or tco"),
    ("a pue below one", a_pool().tco().raw(), "spec.cost.tco.pue", 0.9, "minimum"),
    ("a zero bandwidth link", a_pool().link("f", kbps=1, rtt_ms=1).raw(), "spec.links[0].bandwidthKBps", 0,
     "less than or equal to the minimum"),
    ("two links from one site", a_pool().link("f", 1, 1).link("f", 2, 2).raw(), "spec.image", "", "Duplicate value"),
    ("accelerators without an accelerator resource", a_pool().raw(), "spec.nodes.accelerators", 1,
     "need spec.accelerator.resourceName"),
    ("a pool name with an underscore", a_pool().raw(), "metadata.name", "gpu_pool", "does not match"),
]


@pytest.mark.parametrize(
    ("document", "path", "value", "reason"),
    [pytest.param(*case[1:], id=f"{case[0]} is refused by the CRD and by the models") for case in BAD],
)
def test_bad_objects_are_refused_by_both_the_crd_and_the_models(document: dict[str, Any], path: str, value: Any,
                                                                 reason: str) -> None:
    document = with_path(document, path, value)
    problems = admit(CRDS[document["kind"]], document)
    assert any(reason in problem for problem in problems), problems
    with pytest.raises(InvalidObject):
        validate_manifest(MODELS[document["kind"]], document)


def _schema_at(kind: str, path: str) -> dict[str, Any]:
    schema = crd_schema(CRDS[kind])
    for part in path.split("."):
        schema = schema["items"] if part == "[*]" else schema["properties"][part]
    return schema


CEL = [
    ("only an hourly price satisfies exactly-one", "ComputePool", "spec.cost", {"hourly": 0.81}, True),
    ("only a tco satisfies exactly-one", "ComputePool", "spec.cost", {"tco": _tco()}, True),
    ("an hourly price and a tco break exactly-one", "ComputePool", "spec.cost", {"hourly": 0.81, "tco": _tco()}, False),
    ("no price at all breaks exactly-one", "ComputePool", "spec.cost", {}, False),
    ("min below max holds", "InferenceWorkload", "spec.replicas", {"min": 1, "max": 50}, True),
    ("min equal to max holds", "InferenceWorkload", "spec.replicas", {"min": 3, "max": 3}, True),
    ("min above max breaks the order", "InferenceWorkload", "spec.replicas", {"min": 4, "max": 3}, False),
    ("no tail latency holds", "InferenceWorkload", "spec.variants.[*].profile", {"latencyMs": 2}, True),
    ("an integer tail above a fractional mean holds", "InferenceWorkload", "spec.variants.[*].profile",
     {"latencyMs": 2.5, "tailLatencyMs": 3}, True),
    ("a tail below the mean breaks the order", "InferenceWorkload", "spec.variants.[*].profile",
     {"latencyMs": 2.5, "tailLatencyMs": 2}, False),
    ("accelerated nodes with an accelerator resource hold", "ComputePool", "spec",
     a_pool().gpu().nodes(accelerators=1).spec_dict(), True),
    ("accelerated nodes without an accelerator resource break the rule", "ComputePool", "spec",
     a_pool().nodes(accelerators=1).spec_dict(), False),
    ("nodes without accelerators need no accelerator resource", "ComputePool", "spec",
     {**a_pool().spec_dict(), "nodes": {"count": 1, "cpu": "1", "memory": "1Gi", "accelerators": 0}}, True),
]


@pytest.mark.parametrize(("kind", "path", "value", "holds"), [pytest.param(*case[1:], id=case[0]) for case in CEL])
def test_cel_rules_evaluated_by_cel_python(kind: str, path: str, value: dict[str, Any], holds: bool) -> None:
    schema = _schema_at(kind, path)
    results = [evaluate(rule["rule"], schema, value) for rule in schema["x-kubernetes-validations"]]
    assert all(results) is holds
