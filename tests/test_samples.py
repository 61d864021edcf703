"""The sample pools and workloads in manifests/samples: admitted by the CRDs users install, valid for
the models, complete in their kustomization, and each placed by `hetplace explain` where its
objective says it should be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from crd_admission import admit
from hetplace.api.load import load_manifests
from hetplace.cli import main

pytestmark = pytest.mark.cli

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "manifests" / "samples"
INSTALLED_CRDS = {d["spec"]["names"]["kind"]: d for d in
                  (yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml")))}


def documents() -> list[dict]:
    return [d for p in sorted(SAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def test_every_sample_object_is_admitted_by_the_installed_crds() -> None:
    ours = [d for d in documents() if d.get("apiVersion", "").startswith("hetplace.io/")]
    assert len(ours) == 5
    for document in ours:
        assert admit(INSTALLED_CRDS[document["kind"]], document) == [], document["metadata"]["name"]


def test_the_samples_cover_each_hardware_class_both_prices_and_both_objectives() -> None:
    manifests = load_manifests([SAMPLES])
    pools = {p.spec.hardware: p for p in manifests.pools}
    assert sorted(pools) == ["arm", "cpu", "gpu"]
    assert pools["gpu"].spec.cost.hourly and pools["cpu"].spec.cost.hourly
    assert pools["arm"].spec.cost.tco is not None and pools["arm"].spec.links, "an edge pool priced by TCO, with links"
    assert sorted(w.spec.policy.objective for w in manifests.workloads) == ["MinCost", "MinLatency"]
    assert {w.metadata.namespace for w in manifests.workloads} == {"retail"}


def test_the_kustomization_lists_every_sample_file_and_only_those() -> None:
    kustomization = yaml.safe_load((SAMPLES / "kustomization.yaml").read_text())
    files = sorted(p.name for p in SAMPLES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    assert "namespace" not in kustomization, "kustomize would put the cluster-scoped ComputePools in a namespace"
    namespaces = {d["metadata"]["name"] for d in documents() if d["kind"] == "Namespace"}
    assert {w.metadata.namespace for w in load_manifests([SAMPLES]).workloads} <= namespaces


@pytest.mark.parametrize("workload, pools", [
    pytest.param("shelf-gap-detector.yaml", {"arm-store-berlin": "trt-int8-orin"},
                 id="the MinCost shelf detector runs on the store's Jetson, cheapest of all"),
    pytest.param("checkout-recognizer.yaml", {"gpu-l4-eu-central": "trt-fp16"},
                 id="the MinLatency checkout recognizer runs on the cloud L4, fastest for both stores within budget"),
])
def test_hetplace_explain_places_each_sample_workload(workload: str, pools: dict[str, str]) -> None:
    run = CliRunner().invoke(main, ["explain", "-f", str(SAMPLES / workload), "--pools", str(SAMPLES / "pools.yaml"),
                                    "-o", "json"])
    assert run.exit_code == 0, run.output
    decision = json.loads(run.output)
    assert decision["feasible"] is True
    assert {p["pool"]: p["variant"] for p in decision["placements"]} == pools
    placed_sites = {r["site"] for p in decision["placements"] for r in p["routes"]}
    declared = yaml.safe_load((SAMPLES / workload).read_text())["spec"]["traffic"]
    assert placed_sites == {t["site"] for t in declared}, "every site is served"


def test_both_sample_workloads_fit_together(tmp_path: Path) -> None:
    both = tmp_path / "both.yaml"
    both.write_text("---\n".join((SAMPLES / f).read_text() for f in ("shelf-gap-detector.yaml", "checkout-recognizer.yaml")))
    run = CliRunner().invoke(main, ["explain", "-f", str(both), "--pools", str(SAMPLES / "pools.yaml"), "-o", "json"])
    assert run.exit_code == 0, run.output
    assert [d["feasible"] for d in json.loads(run.output)] == [True, True]
