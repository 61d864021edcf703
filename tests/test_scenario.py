"""The Scenario document of `hetplace simulate` is validated like every other manifest."""

from __future__ import annotations

import pytest
import yaml

from hetplace.api.errors import InvalidObject
from hetplace.api.load import load_manifests

pytestmark = pytest.mark.unit


def scenario(**fields):
    doc = {"apiVersion": "hetplace.io/v1alpha1", "kind": "Scenario", "metadata": {"name": "trace"},
           "durationSeconds": 3600, "stepSeconds": 60,
           "events": [{"at": 900, "links": [{"site": "factory-eu-1", "pool": "cpu-cloud-eu",
                                             "bandwidthKBps": 250, "rttMs": 25}]}]}
    doc.update(fields)
    return doc


def load(tmp_path, doc):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    return load_manifests([tmp_path / "s.yaml"])


def test_events_come_back_in_time_order(tmp_path):
    events = [{"at": 1800, "poolDown": "gpu-cloud-eu"}, {"at": 600, "poolUp": "gpu-cloud-eu"},
              {"at": 900, "traffic": [{"workload": "factory/defect-detector", "site": "cloud-eu",
                                       "requestsPerSecond": 150}]}]
    (s,) = load(tmp_path, scenario(events=events)).scenarios
    assert [e.at for e in s.timeline()] == [600, 900, 1800]
    assert s.timeline()[2].pool_down == "gpu-cloud-eu"


@pytest.mark.parametrize("fields, field, words", [
    pytest.param({"stepSeconds": 0}, "stepSeconds", "must be > 0", id="a zero step is refused"),
    pytest.param({"stepSeconds": 7200}, "stepSeconds", "must be <= durationSeconds",
                 id="a step longer than the trace is refused"),
    pytest.param({"stepSeconds": 0.001}, "stepSeconds", "more than 100000 steps",
                 id="a trace of millions of steps is refused with the limit"),
    pytest.param({"events": [{"at": 4000, "poolDown": "x"}]}, "events[0].at", "must be <= durationSeconds",
                 id="an event after the end is refused"),
    pytest.param({"events": [{"at": 10}]}, "events[0]", "must change links, traffic, poolDown or poolUp",
                 id="an event that changes nothing is refused"),
    pytest.param({"events": [{"at": 10, "poolDown": "Not_A_Pool"}]}, "events[0].poolDown", "DNS-1123",
                 id="a pool name that cannot exist is refused"),
])
def test_bad_scenarios_name_the_field(tmp_path, fields, field, words):
    with pytest.raises(InvalidObject) as refused:
        load(tmp_path, scenario(**fields))
    message = str(refused.value)
    assert field in message and words in message and "trace (Scenario)" in message
