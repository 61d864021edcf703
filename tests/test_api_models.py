"""The API models: good objects parse, each rule refuses bad input naming field, value and rule."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from builders import DELETE, a_pool, a_workload, with_path
from hetplace.api.errors import MISSING, InvalidObject
from hetplace.api.load import validate_manifest
from hetplace.api.models import ComputePool, InferenceWorkload, ObjectMeta, Phase, Resources
from hetplace.api.quantity import parse_cpu, parse_memory

pytestmark = pytest.mark.unit

GI = 2**30


@pytest.mark.parametrize(
    ("value", "cores"),
    [
        pytest.param("500m", 0.5, id="millicores are thousandths of a core"),
        pytest.param("2", 2.0, id="a plain string is whole cores"),
        pytest.param(2, 2.0, id="an integer is whole cores"),
        pytest.param("1.5", 1.5, id="a decimal string is fractional cores"),
        pytest.param(0.25, 0.25, id="a float is accepted by the parser itself"),
        pytest.param("1e3", 1000.0, id="an exponent multiplies by a power of ten"),
        pytest.param("100n", 1e-7, id="nanocores are billionths of a core"),
    ],
)
def test_cpu_quantities_parse_to_cores(value: Any, cores: float) -> None:
    assert parse_cpu(value) == pytest.approx(cores)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        pytest.param("16Gi", 16 * GI, id="Gi is a power of two"),
        pytest.param("128974848", 128974848, id="plain digits are bytes"),
        pytest.param(1024, 1024, id="an integer is bytes"),
        pytest.param("129e6", 129_000_000, id="an exponent multiplies by a power of ten"),
        pytest.param("123Mi", 128974848, id="Mi is 2 to the 20"),
        pytest.param("1Ki", 1024, id="Ki is 2 to the 10"),
        pytest.param("1Ti", 2**40, id="Ti is 2 to the 40"),
        pytest.param("1Pi", 2**50, id="Pi is 2 to the 50"),
        pytest.param("1Ei", 2**60, id="Ei is 2 to the 60"),
        pytest.param("1k", 1000, id="k is a thousand"),
        pytest.param("2M", 2_000_000, id="M is a million"),
        pytest.param("1G", 10**9, id="G is a billion"),
        pytest.param("1T", 10**12, id="T is ten to the 12"),
        pytest.param("1P", 10**15, id="P is ten to the 15"),
        pytest.param("1E", 10**18, id="E alone is exa, not an exponent"),
        pytest.param("1.5Gi", 3 * GI // 2, id="a fraction of a binary unit"),
        pytest.param("500m", 1, id="a fraction of a byte rounds up as Kubernetes does"),
    ],
)
def test_memory_quantities_parse_to_bytes(value: Any, size: int) -> None:
    assert parse_memory(value) == size


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="an empty string is not a quantity"),
        pytest.param("2 cores", id="words are not a quantity"),
        pytest.param("1Gb", id="Gb is not a Kubernetes unit"),
        pytest.param("-1", id="a negative amount is not a resource"),
        pytest.param("1.2.3", id="two decimal points are not a number"),
        pytest.param("Gi", id="a unit without a number is not a quantity"),
        pytest.param(" 2", id="spaces are not allowed"),
        pytest.param(True, id="a boolean is not a quantity"),
        pytest.param(None, id="null is not a quantity"),
        pytest.param(float("inf"), id="infinity is not a quantity"),
        pytest.param("10E", id="more than 2^63 is not a quantity"),
    ],
)
def test_bad_quantities_raise_a_value_error_naming_the_input(value: Any) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_memory(value)


def test_quantities_stay_as_written_on_the_wire_and_parse_on_demand() -> None:
    resources = Resources(cpu="1500m", memory="4Gi")
    assert resources.wire() == {"cpu": "1500m", "memory": "4Gi", "accelerators": 0}
    assert (resources.cpu_cores, resources.memory_bytes) == (1.5, 4 * GI)


def test_the_builders_defaults_make_valid_objects() -> None:
    pool, workload = a_pool().build(), a_workload().build()
    assert pool.name == "cpu-cloud-eu" and pool.spec.nodes.cpu_cores == 4.0
    assert workload.key == "default/defect-detector"
    assert workload.spec.policy.objective == "MinCost"


def test_a_fully_specified_gpu_pool_reads_back_in_snake_case() -> None:
    pool = (
        a_pool("gpu-cloud-eu").gpu().region("eu-west-1").site("cloud-eu")
        .nodes(count=4, cpu="4", memory="16Gi", accelerators=1).hourly(0.81)
        .link("factory-eu-1", kbps=2000, rtt_ms=25).toleration("nvidia.com/gpu").build()
    )
    assert pool.spec.hardware == "gpu"
    assert pool.spec.accelerator is not None and pool.spec.accelerator.resource_name == "nvidia.com/gpu"
    assert pool.spec.nodes.memory_bytes == 16 * GI and pool.spec.nodes.accelerators == 1
    assert pool.spec.cost.hourly == 0.81 and pool.spec.cost.tco is None
    link = pool.spec.links[0]
    assert (link.site, link.bandwidth_kbps, link.rtt_ms) == ("factory-eu-1", 2000, 25)
    assert pool.spec.tolerations[0].effect == "NoSchedule"


def test_a_tco_pool_keeps_the_wire_spelling_of_kwh() -> None:
    pool = a_pool("arm-factory-eu-1").arm().tco(electricity_per_kwh=0.25).build()
    assert pool.spec.cost.tco is not None and pool.spec.cost.tco.electricity_per_kwh == 0.25
    assert pool.wire()["spec"]["cost"]["tco"]["electricityPerKWh"] == 0.25


def test_workload_defaults_fill_in_what_the_user_left_out() -> None:
    spec = a_workload().build().spec
    assert (spec.replicas.min, spec.replicas.max) == (1, 50)
    assert spec.constraints.max_pools == 3 and spec.constraints.regions == []
    assert spec.policy.max_utilization == 0.8 and spec.policy.max_cost_per_hour is None
    assert (spec.policy.rebalance.min_improvement_percent, spec.policy.rebalance.cooldown_seconds) == (10, 300)
    assert spec.slo.min_accuracy == 0.0 and spec.encodings[0].accuracy_delta == 0.0


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(a_pool("arm-edge").arm().tco().link("factory", kbps=250, rtt_ms=5), id="a tco pool"),
        pytest.param(a_workload("vqa").encoding("raw", 372580).encoding("compressed", 20390, -0.001)
                     .traffic("factory", 5).policy(maxCostPerHour=2.5), id="a workload with a budget"),
    ],
)
def test_wire_form_round_trips_to_an_equal_object(obj: Any) -> None:
    built = obj.build()
    assert type(built).model_validate(built.wire()) == built


def test_models_can_be_built_in_python_by_field_name() -> None:
    resources = Resources(cpu=2, memory="4Gi", accelerators=1)
    assert Resources.model_validate({"cpu": 2, "memory": "4Gi", "accelerators": 1}) == resources
    pool = ComputePool(metadata=ObjectMeta(name="p"), spec=a_pool().build().spec)
    assert pool.wire()["apiVersion"] == "hetplace.io/v1alpha1" and pool.wire()["kind"] == "ComputePool"


def test_validated_objects_are_immutable() -> None:
    workload = a_workload().build()
    with pytest.raises(ValidationError):
        workload.spec.slo.latency_ms = 10  # type: ignore[misc]


def test_status_reads_back_what_the_operator_writes() -> None:
    status = {
        "observedGeneration": 3,
        "phase": "Placed",
        "conditions": [{"type": "Placed", "status": "True", "reason": "Optimal", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3}],
        "placements": [{"pool": "cpu-cloud-eu", "variant": "openvino-int8", "replicas": 3, "costPerHour": 0.534,
                        "deployment": "defect-detector-cpu-cloud-eu", "service": "defect-detector-cpu-cloud-eu",
                        "routes": [{"site": "cloud-eu", "encoding": "raw", "requestsPerSecond": 100,
                                    "predictedLatencyMs": 82.9}]}],
        "costPerHour": 0.534,
        "decision": {"at": "2026-01-01T00:00:00Z", "reason": "initial placement", "fingerprint": "abc"},
        "rejected": [{"pool": "gpu-cloud-us", "variant": "trt-fp16", "reason": "region us-east-1 not allowed"}],
        "fieldFromANewerOperator": 1,
    }
    workload = InferenceWorkload.model_validate({**a_workload().raw(), "status": status})
    assert workload.status is not None and workload.status.phase is Phase.PLACED
    assert workload.status.placements[0].routes[0].predicted_latency_ms == 82.9
    assert workload.wire()["status"]["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"


# (case id, document, wire path to change, new value, reported field, words of the rule)
WORKLOAD_RULES = [
    ("a zero latency SLO is refused", "spec.slo.latencyMs", 0, None, "must be > 0"),
    ("a percentile of 100 or more is refused", "spec.slo.percentile", 120, None, "must be < 100"),
    ("a percentile of zero is refused", "spec.slo.percentile", 0, None, "must be > 0"),
    ("a minimum accuracy above one is refused", "spec.slo.minAccuracy", 1.2, None, "must be <= 1"),
    ("a variant accuracy below zero is refused", "spec.variants[0].accuracy", -0.1, None, "must be >= 0"),
    ("an accuracy delta below minus one is refused", "spec.encodings[0].accuracyDelta", -1.5, None, "must be >= -1"),
    ("an empty request is refused", "spec.encodings[0].requestBytes", 0, None, "must be > 0"),
    ("a negative response size is refused", "spec.responseBytes", -1, None, "must be >= 0"),
    ("negative traffic is refused", "spec.traffic[0].requestsPerSecond", -5, None, "must be >= 0"),
    ("a zero service latency is refused", "spec.variants[0].profile.latencyMs", 0, None, "must be > 0"),
    ("a tail below the mean is refused", "spec.variants[0].profile.tailLatencyMs", 10, None, "must be >= latencyMs (30)"),
    ("zero concurrency is refused", "spec.variants[0].profile.concurrency", 0, None, "must be >= 1"),
    ("min replicas above max are refused", "spec.replicas", {"min": 5, "max": 2}, "spec.replicas.min", "must be <= max (2)"),
    ("a max of zero replicas is refused", "spec.replicas.max", 0, None, "must be >= 1"),
    ("negative min replicas are refused", "spec.replicas.min", -1, None, "must be >= 0"),
    ("zero max pools is refused", "spec.constraints.maxPools", 0, None, "must be >= 1"),
    ("a zero utilisation cap is refused", "spec.policy.maxUtilization", 0, None, "must be > 0"),
    ("a utilisation cap above one is refused", "spec.policy.maxUtilization", 1.5, None, "must be <= 1"),
    ("a zero link utilisation cap is refused", "spec.policy.maxLinkUtilization", 0, None, "must be > 0"),
    ("a negative budget is refused", "spec.policy.maxCostPerHour", -1, None, "must be >= 0"),
    ("a negative cooldown is refused", "spec.policy.rebalance.cooldownSeconds", -1, None, "must be >= 0"),
    ("an unknown objective is refused", "spec.policy.objective", "Cheapest", None, "must be one of 'MinCost', 'MinLatency'"),
    ("an unknown hardware class is refused", "spec.variants[0].hardware", "tpu", None, "must be one of 'gpu', 'cpu', 'arm'"),
    ("a variant name that cannot be a Kubernetes name is refused", "spec.variants[0].name", "TRT_fp16", None, "DNS-1123 label"),
    ("a workload name that cannot be a Kubernetes name is refused", "metadata.name", "Defect.Detector", None, "DNS-1123 label"),
    ("a site with spaces is refused", "spec.traffic[0].site", "factory one", None, "must be letters, digits"),
    ("an unparsable cpu request is refused", "spec.variants[0].resources.cpu", "2 cores", None, "Kubernetes quantity"),
    ("a bare fractional cpu is refused as the API server does", "spec.variants[0].resources.cpu", 1.5, None, 'quantity string such as "1.5"'),
    ("a string where a number belongs is refused", "spec.slo.latencyMs", "150", None, "must be a number"),
    ("a fractional replica count is refused", "spec.replicas.max", 2.5, None, "must be an integer"),
    ("a missing SLO is refused", "spec.slo", DELETE, None, "is required"),
    ("a workload without variants is refused", "spec.variants", [], None, "must have at least 1 item"),
    ("a typo in a field name is refused with a suggestion", "spec.slo.latncyMs", 150, None, "unknown field; did you mean latencyMs?"),
    ("a misspelt top-level section is refused", "specs", {}, None, "unknown field"),
]


def _variant(name: str) -> dict[str, Any]:
    return {"name": name, "hardware": "cpu", "accuracy": 0.8, "profile": {"latencyMs": 10},
            "resources": {"cpu": "1", "memory": "1Gi"}}


LIST_RULES = [
    ("duplicate variant names are refused", "spec.variants", [_variant("a"), _variant("a")],
     "spec.variants[1].name", "must be unique (item 0 has the same value)"),
    ("duplicate encoding names are refused", "spec.encodings",
     [{"name": "raw", "requestBytes": 1}, {"name": "raw", "requestBytes": 2}], "spec.encodings[1].name", "must be unique"),
    ("duplicate traffic sites are refused", "spec.traffic",
     [{"site": "x", "requestsPerSecond": 1}, {"site": "x", "requestsPerSecond": 2}], "spec.traffic[1].site", "must be unique"),
    ("duplicate regions are refused", "spec.constraints.regions", ["eu", "us", "eu"],
     "spec.constraints.regions[2]", "must be unique"),
    ("more than 16 variants are refused", "spec.variants", [_variant(f"v{i}") for i in range(17)],
     None, "must have at most 16 items"),
    ("more than 8 encodings are refused", "spec.encodings",
     [{"name": f"e{i}", "requestBytes": 1} for i in range(9)], None, "must have at most 8 items"),
    ("more than 64 traffic sites are refused", "spec.traffic",
     [{"site": f"s{i}", "requestsPerSecond": 1} for i in range(65)], None, "must have at most 64 items"),
    ("more than 64 allowed regions are refused", "spec.constraints.regions", [f"r{i}" for i in range(65)],
     None, "must have at most 64 items"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "rule"),
    [pytest.param(*case[1:], id=case[0]) for case in WORKLOAD_RULES + LIST_RULES],
)
def test_each_workload_rule_names_field_value_and_rule(path: str, value: Any, field: str | None, rule: str) -> None:
    document = with_path(a_workload("defect-detector", namespace="factory").raw(), path, value)
    with pytest.raises(InvalidObject) as refused:
        validate_manifest(InferenceWorkload, document, source="w.yaml")
    error = refused.value
    assert (error.field, error.kind) == (field or path, "InferenceWorkload")
    assert rule in error.rule
    message = str(error)
    assert f"(InferenceWorkload) in w.yaml: {error.field}" in message and rule in message
    if error.value is not MISSING and not isinstance(error.value, (list, dict)):
        assert f" = {error.value!r}".replace("'", '"') in message or f" = {error.value}" in message


POOL_RULES = [
    ("a price both hourly and by tco is refused", "spec.cost",
     {"hourly": 1.0, "tco": {"capex": 1, "amortizationYears": 1, "powerWatts": 1, "electricityPerKWh": 1}},
     "spec.cost", "set exactly one of hourly or tco"),
    ("a pool without any price is refused", "spec.cost", {}, "spec.cost", "set exactly one of hourly or tco"),
    ("a negative hourly price is refused", "spec.cost.hourly", -0.1, None, "must be >= 0"),
    ("zero amortisation years are refused", "spec.cost", {"tco": {"capex": 600, "amortizationYears": 0,
     "powerWatts": 25, "electricityPerKWh": 0.25}}, "spec.cost.tco.amortizationYears", "must be > 0"),
    ("a pue below one is refused", "spec.cost", {"tco": {"capex": 600, "amortizationYears": 3, "powerWatts": 25,
     "electricityPerKWh": 0.25, "pue": 0.9}}, "spec.cost.tco.pue", "must be >= 1"),
    ("a negative electricity price is refused", "spec.cost", {"tco": {"capex": 600, "amortizationYears": 3,
     "powerWatts": 25, "electricityPerKWh": -1}}, "spec.cost.tco.electricityPerKWh", "must be >= 0"),
    ("a zero bandwidth link is refused", "spec.links", [{"site": "f", "bandwidthKBps": 0, "rttMs": 5}],
     "spec.links[0].bandwidthKBps", "must be > 0"),
    ("a negative rtt is refused", "spec.links", [{"site": "f", "bandwidthKBps": 10, "rttMs": -1}],
     "spec.links[0].rttMs", "must be >= 0"),
    ("two links from one site are refused", "spec.links",
     [{"site": "f", "bandwidthKBps": 10, "rttMs": 1}, {"site": "f", "bandwidthKBps": 20, "rttMs": 2}],
     "spec.links[1].site", "must be unique"),
    ("more than 256 links are refused", "spec.links",
     [{"site": f"s{i}", "bandwidthKBps": 10, "rttMs": 1} for i in range(257)], None, "must have at most 256 items"),
    ("a pool name that cannot be part of a Deployment name is refused", "metadata.name", "GPU_pool", None,
     "DNS-1123 label"),
    ("a pool name longer than 63 characters is refused", "metadata.name", "p" * 64, None, "at most 63 characters"),
    ("nodes without cpu are refused", "spec.nodes.cpu", "0", None, "must be > 0"),
    ("nodes with accelerators but no accelerator resource are refused", "spec.nodes.accelerators", 1, None,
     "needs spec.accelerator.resourceName"),
    ("an unknown hardware class is refused", "spec.hardware", "fpga", None, "must be one of"),
    ("an unknown toleration effect is refused", "spec.tolerations", [{"key": "k", "effect": "Sometimes"}],
     "spec.tolerations[0].effect", "must be one of"),
    ("a duplicate allowed namespace is refused", "spec.allowedNamespaces", ["a", "a"],
     "spec.allowedNamespaces[1]", "must be unique"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "rule"), [pytest.param(*case[1:], id=case[0]) for case in POOL_RULES]
)
def test_each_pool_rule_names_field_value_and_rule(path: str, value: Any, field: str | None, rule: str) -> None:
    document = with_path(a_pool("cpu-cloud-eu").raw(), path, value)
    with pytest.raises(InvalidObject) as refused:
        validate_manifest(ComputePool, document)
    assert refused.value.field == (field or path)
    assert rule in refused.value.rule and rule in str(refused.value)


def test_the_message_reads_object_kind_file_field_value_and_rule() -> None:
    document = with_path(a_workload("defect-detector", namespace="factory").raw(), "spec.slo.percentile", 120)
    with pytest.raises(InvalidObject) as refused:
        validate_manifest(InferenceWorkload, document, source="w.yaml")
    assert str(refused.value) == (
        "factory/defect-detector (InferenceWorkload) in w.yaml: spec.slo.percentile = 120: must be < 100"
    )
    assert (refused.value.name, refused.value.value, refused.value.source) == ("factory/defect-detector", 120, "w.yaml")


def test_every_problem_is_listed_not_only_the_first() -> None:
    document = with_path(a_workload().raw(), "spec.slo", {"latencyMs": -1, "percentile": 100})
    with pytest.raises(InvalidObject) as refused:
        validate_manifest(InferenceWorkload, document)
    assert [problem.field for problem in refused.value.problems] == ["spec.slo.latencyMs", "spec.slo.percentile"]
    assert str(refused.value).splitlines() == [
        "default/defect-detector (InferenceWorkload): 2 problems:",
        "  - spec.slo.latencyMs = -1: must be > 0",
        "  - spec.slo.percentile = 100: must be < 100",
    ]
