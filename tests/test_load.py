"""Loading manifests and telemetry from files: what is read, and how each kind of bad file is named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from builders import a_pool, a_workload, with_path
from hetplace.api.errors import InvalidObject
from hetplace.api.load import load_manifests, load_telemetry

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "examples"


def write(directory: Path, name: str, *documents: object, text: str | None = None) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else yaml.safe_dump_all(documents, sort_keys=False))
    return path


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="the shared examples are not beside this checkout")
def test_the_factory_example_loads_pools_workload_and_its_scenario() -> None:
    manifests = load_manifests([EXAMPLES / "factory.yaml"])
    assert [pool.name for pool in manifests.pools] == ["gpu-cloud-eu", "cpu-cloud-eu", "arm-factory-eu-1", "gpu-cloud-us"]
    assert [workload.key for workload in manifests.workloads] == ["factory/defect-detector"]
    (scenario,) = manifests.scenarios
    assert (scenario.name, scenario.duration_seconds, scenario.step_seconds) == ("factory-bandwidth-drop", 3600, 60)
    assert [(e.at, [(link.pool, link.bandwidth_kbps) for link in e.links]) for e in scenario.timeline()] == [
        (900, [("gpu-cloud-eu", 250), ("cpu-cloud-eu", 250)]), (2700, [("gpu-cloud-eu", 2000), ("cpu-cloud-eu", 2000)])]
    assert manifests.others == []


def test_a_directory_is_read_recursively_in_name_order_with_both_suffixes(tmp_path: Path) -> None:
    write(tmp_path, "b/pools.yml", a_pool("pool-b").raw())
    write(tmp_path, "a.yaml", a_pool("pool-a").raw(), a_workload("w").raw())
    write(tmp_path, "notes.txt", text="not: a manifest")
    manifests = load_manifests([tmp_path])
    assert [pool.name for pool in manifests.pools] == ["pool-a", "pool-b"]
    assert [workload.key for workload in manifests.workloads] == ["default/w"]


def test_files_and_directories_can_be_mixed(tmp_path: Path) -> None:
    pools = write(tmp_path, "pools/p.yaml", a_pool("p").raw()).parent
    workload = write(tmp_path, "w.yaml", a_workload("w").raw())
    manifests = load_manifests([workload, pools])
    assert (len(manifests.pools), len(manifests.workloads)) == (1, 1)


def test_a_workload_without_namespace_lands_in_default(tmp_path: Path) -> None:
    document = a_workload("w").raw()
    del document["metadata"]["namespace"]
    manifests = load_manifests([write(tmp_path, "w.yaml", document)])
    assert manifests.workloads[0].metadata.namespace == "default"


def test_other_kinds_and_empty_documents_pass_through_untouched(tmp_path: Path) -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}}
    path = write(tmp_path, "mixed.yaml", text="---\n" + yaml.safe_dump(config_map) + "---\n---\n")
    assert load_manifests([path]).others == [config_map]


def test_the_same_workload_name_in_two_namespaces_is_two_workloads(tmp_path: Path) -> None:
    path = write(tmp_path, "w.yaml", a_workload("w", namespace="a").raw(), a_workload("w", namespace="b").raw())
    assert [w.key for w in load_manifests([path]).workloads] == ["a/w", "b/w"]


@pytest.mark.parametrize(
    ("documents", "name"),
    [
        pytest.param([a_pool("p").raw(), a_pool("p").gpu().raw()], "p", id="two pools of one name are refused"),
        pytest.param([a_workload("w").raw(), a_workload("w").raw()], "default/w",
                     id="two workloads of one namespace and name are refused"),
    ],
)
def test_duplicate_names_are_refused_naming_both_places(tmp_path: Path, documents: list, name: str) -> None:
    first = write(tmp_path, "1.yaml", documents[0])
    second = write(tmp_path, "2.yaml", documents[1])
    with pytest.raises(InvalidObject) as refused:
        load_manifests([first, second])
    assert refused.value.name == name and refused.value.source == str(second)
    assert refused.value.field == "metadata.name"
    assert f"first defined in {first}:1" in refused.value.rule


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", text="apiVersion: hetplace.io/v1alpha1\nkind: ComputePool\nspec: {a: [1, 2}\n")
    with pytest.raises(InvalidObject) as refused:
        load_manifests([path])
    assert refused.value.source == str(path) and refused.value.line == 3
    assert str(refused.value).startswith(f"{path}:3: YAML syntax error")


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        pytest.param("- a\n- b\n", "must be a mapping", id="a list document is refused"),
        pytest.param("just a string\n", "must be a mapping", id="a scalar document is refused"),
        pytest.param("apiVersion: v1\nmetadata: {name: x}\n", "kind: is required", id="a document without kind is refused"),
    ],
)
def test_documents_that_are_not_manifests_are_refused_naming_the_file(tmp_path: Path, text: str, rule: str) -> None:
    path = write(tmp_path, "odd.yaml", text="apiVersion: v1\nkind: ConfigMap\n---\n" + text)
    with pytest.raises(InvalidObject) as refused:
        load_manifests([path])
    assert refused.value.line == 4 and rule in str(refused.value) and str(path) in str(refused.value)


def test_our_kind_under_another_api_version_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", {**a_pool("p").raw(), "apiVersion": "hetplace.io/v1"})
    with pytest.raises(InvalidObject) as refused:
        load_manifests([path])
    assert (refused.value.field, refused.value.value) == ("apiVersion", "hetplace.io/v1")
    assert "must be hetplace.io/v1alpha1" in refused.value.rule


def test_a_validation_error_points_at_the_line_of_the_field(tmp_path: Path) -> None:
    document = with_path(a_workload("w", namespace="factory").raw(), "spec.slo.percentile", 120)
    path = write(tmp_path, "w.yaml", a_pool("p").raw(), document)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "percentile" in text)
    with pytest.raises(InvalidObject) as refused:
        load_manifests([path])
    assert str(refused.value) == f"factory/w (InferenceWorkload) in {path}:{line}: spec.slo.percentile = 120: must be < 100"


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidObject, match="no such file or directory"):
        load_manifests([tmp_path / "absent.yaml"])


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(InvalidObject, match="cannot read"):
        load_manifests([path])


TELEMETRY = """\
links:
  - {site: factory-eu-1, pool: gpu-cloud-eu, bandwidthKBps: 250, rttMs: 25}
  - {site: factory-eu-1, pool: cpu-cloud-eu, bandwidthKBps: 250, rttMs: 25}
traffic:
  - {workload: factory/defect-detector, site: factory-eu-1, requestsPerSecond: 40}
  - {workload: detector, site: cloud-eu, requestsPerSecond: 10}
"""


def test_a_telemetry_file_reads_links_and_traffic(tmp_path: Path) -> None:
    telemetry = load_telemetry(write(tmp_path, "t.yaml", text=TELEMETRY))
    assert [(link.site, link.pool, link.bandwidth_kbps) for link in telemetry.links] == [
        ("factory-eu-1", "gpu-cloud-eu", 250), ("factory-eu-1", "cpu-cloud-eu", 250)]
    assert [row.workload for row in telemetry.traffic] == ["factory/defect-detector", "detector"]


def test_a_telemetry_file_with_only_links_is_enough(tmp_path: Path) -> None:
    telemetry = load_telemetry(write(tmp_path, "t.yaml", text=TELEMETRY.split("traffic:")[0]))
    assert len(telemetry.links) == 2 and telemetry.traffic == []


@pytest.mark.parametrize(
    ("text", "field", "rule"),
    [
        pytest.param(TELEMETRY.replace("bandwidthKBps: 250", "bandwidthKBps: 0", 1), "links[0].bandwidthKBps",
                     "must be > 0", id="a zero bandwidth observation is refused"),
        pytest.param(TELEMETRY.replace("cpu-cloud-eu", "gpu-cloud-eu"), "links[1].pool",
                     "must be unique", id="two observations of one link are refused"),
        pytest.param(TELEMETRY.replace("requestsPerSecond: 40", "rps: 40"), "traffic[0].rps",
                     "unknown field", id="an unknown field is refused"),
        pytest.param(TELEMETRY.replace("factory/defect-detector", "Factory/Detector"), "traffic[0].workload",
                     "NAMESPACE/NAME", id="a workload reference that is not NAMESPACE/NAME is refused"),
        pytest.param("- links\n", None, "must be one YAML mapping", id="a list instead of a mapping is refused"),
    ],
)
def test_bad_telemetry_is_refused_naming_file_field_and_rule(tmp_path: Path, text: str, field: str | None,
                                                             rule: str) -> None:
    path = write(tmp_path, "t.yaml", text=text)
    with pytest.raises(InvalidObject) as refused:
        load_telemetry(path)
    assert (refused.value.kind, refused.value.source) == ("Telemetry", str(path))
    assert any(problem.field == field and rule in problem.rule for problem in refused.value.problems)


def test_a_list_as_kubectl_prints_it_is_read_item_by_item(tmp_path: Path) -> None:
    """`kubectl get computepools,inferenceworkloads -o yaml` prints one `kind: List`."""
    bad = with_path(a_workload("w", namespace="factory").raw(), "spec.slo.percentile", 120)
    listed = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
              "items": [a_pool("pool-a").raw(), a_pool("pool-b").raw(), a_workload("ok", namespace="f").raw()]}
    manifests = load_manifests([write(tmp_path, "list.yaml", listed)])
    assert [p.name for p in manifests.pools] == ["pool-a", "pool-b"] and [w.key for w in manifests.workloads] == ["f/ok"]
    assert manifests.others == []
    path = write(tmp_path, "bad.yaml", {**listed, "items": [a_pool("pool-a").raw(), bad]})
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "percentile" in text)
    with pytest.raises(InvalidObject) as refused:
        load_manifests([path])
    assert str(refused.value) == f"factory/w (InferenceWorkload) in {path}:{line}: spec.slo.percentile = 120: must be < 100"
