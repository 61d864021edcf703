"""Manifests are read as Kubernetes reads them: YAML 1.2 numbers, DNS-label namespaces."""

from __future__ import annotations

import pytest
import yaml

from builders import a_workload
from hetplace.api.errors import InvalidObject
from hetplace.api.load import load_manifests

pytestmark = pytest.mark.unit


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path):
    text = yaml.safe_dump(a_workload().raw()).replace("latencyMs: 150", "latencyMs: 1.5e2")
    text = text.replace("latencyMs: 1.5e2", "latencyMs: 15e1")
    (tmp_path / "w.yaml").write_text(text)
    (w,) = load_manifests([tmp_path / "w.yaml"]).workloads
    assert w.spec.slo.latency_ms == 150


def test_a_namespace_that_is_not_a_dns_label_is_refused(tmp_path):
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(a_workload(namespace="Factory_NS").raw()))
    with pytest.raises(InvalidObject) as refused:
        load_manifests([tmp_path / "w.yaml"])
    assert refused.value.field == "metadata.namespace" and refused.value.value == "Factory_NS"
