"""The Argo CD health check (manifests/argocd) run under a real Lua 5.1, as Argo CD's gopher-lua runs
it, on statuses the operator's own pipeline writes — so the script and the operator cannot drift.

Argo CD opens only the base, table and os libraries for a health script (no string or math unless
`useOpenLibs` is set); the sandbox here closes the same ones, so a script that leans on them fails
here before it fails in Argo CD.
"""

from __future__ import annotations

import copy
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import lupa.lua51
import pytest
import yaml

from hetplace.api.status import Phase
from hetplace.config import Settings
from hetplace.controller.inventory import workload_view
from hetplace.controller.reconcile import Telemetry, choose, converge
from hetplace.controller.runtime import Operator
from hetplace.k8s.client import KubeError
from hetplace.k8s.status import CONDITION_TYPES
from hetplace.metrics import OperatorMetrics
from test_controller_pipeline import DROP, T0, Cluster, placed_cluster, workload_body

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
ARGOCD = REPO / "manifests" / "argocd"
SCRIPT = (ARGOCD / "health-inferenceworkload.lua").read_text()
ARGO_HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
ARGO_CLOSED_LIBRARIES = ("string", "math", "io", "debug", "coroutine")


def argo_health(obj: dict[str, Any], script: str = SCRIPT) -> dict[str, str]:
    """What Argo CD would show: the script's `hs` table, run with `obj` as a global."""
    if lupa.lua51.LUA_VERSION != (5, 1):
        raise AssertionError(f"expected Lua 5.1, got {lupa.lua51.LUA_VERSION}")
    lua = lupa.lua51.LuaRuntime(register_eval=False, register_builtins=False)
    lua.execute("getmetatable('').__index = nil")       # no string methods without the string library
    for library in ARGO_CLOSED_LIBRARIES:
        lua.globals()[library] = None
    lua.globals()["obj"] = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    assert lupa.lua51.lua_type(result) == "table", f"the script returned {result!r}, Argo CD wants a table"
    hs = dict(result.items())
    assert set(hs) <= {"status", "message"}, hs
    assert hs.get("status") in ARGO_HEALTH, hs
    return hs


# ---- statuses the operator writes, from its own pipeline (tests/test_controller_pipeline.py's Cluster) ----

def fresh() -> dict:
    return workload_body()


def first_placement_waiting() -> dict:
    cluster = Cluster(workload_body())
    cluster.cycle(T0)                       # children applied, Deployments not yet seen available
    return cluster.body


def placed_and_ready() -> dict:
    return placed_cluster().body


def spec_changed_not_yet_seen() -> dict:
    body = placed_cluster().body
    body["metadata"]["generation"] = 2
    return body


def moving() -> dict:
    cluster = placed_cluster()
    cluster.body["metadata"]["generation"] = 2
    cluster.unavailable.add("defect-detector-arm-factory-eu-1-trt-int8-orin")
    cluster.cycle(T0 + timedelta(minutes=1), DROP)
    return cluster.body


def draining() -> dict:
    cluster = placed_cluster()
    cluster.body["spec"]["constraints"]["pools"] = ["gpu-cloud-eu"]
    cluster.body["metadata"]["generation"] = 2
    cluster.cycle(T0 + timedelta(seconds=60), drain_s=30)
    cluster.cycle(T0 + timedelta(seconds=61), drain_s=30)
    return cluster.body


def moved() -> dict:
    cluster = placed_cluster()
    cluster.body["metadata"]["generation"] = 2
    cluster.cycle(T0 + timedelta(minutes=1), DROP)      # the edge group is created: Migrating
    assert cluster.body["status"]["phase"] == "Migrating"
    cluster.cycle(T0 + timedelta(minutes=2), DROP)      # it is available: routes switch, Moved
    return cluster.body


def move_timed_out() -> dict:
    cluster = placed_cluster()
    cluster.body["metadata"]["generation"] = 2
    cluster.unavailable.add("defect-detector-arm-factory-eu-1-trt-int8-orin")
    cluster.cycle(T0 + timedelta(minutes=1), DROP)
    cluster.cycle(T0 + timedelta(minutes=12), DROP)
    return cluster.body


def updated(field: str, value: float) -> dict:
    """A placed workload after a spec update of `slo.<field>`, decided once."""
    cluster = placed_cluster()
    cluster.body["spec"]["slo"][field] = value
    cluster.body["metadata"]["generation"] = 2
    cluster.cycle(T0 + timedelta(minutes=1))
    return cluster.body


def invalid_update() -> dict:
    return updated("percentile", 101)


def infeasible_update() -> dict:
    return updated("latencyMs", 1)


def infeasible_from_the_start() -> dict:
    body = workload_body()
    body["spec"]["slo"]["latencyMs"] = 1
    cluster = Cluster(body)
    cluster.cycle(T0)
    return cluster.body


def slo_missed() -> dict:
    cluster = placed_cluster()
    cluster.cycle(T0 + timedelta(minutes=1),
                  Telemetry(route_latency_ms={"factory/defect-detector": {"factory-eu-1": 181.3}}))
    return cluster.body


def dry_run() -> dict:
    cluster = Cluster(workload_body())
    picture = cluster.picture()
    view = picture.workloads["factory/defect-detector"]
    cluster.write(converge(view, choose(view, picture, Telemetry(), T0), picture, Telemetry(), {}, T0,
                           move_timeout_s=600, image="triton:test", dry_run=True))
    return cluster.body


class StatusRecorder:
    """Stands in for the API client: keeps the status patch the operator sends."""

    def __init__(self) -> None:
        self.status: dict = {}

    def patch_status(self, api_version, kind, namespace, name, patch, resource_version=None):
        self.status = patch
        return None


def apply_refused() -> dict:
    cluster = placed_cluster()
    cluster.body["metadata"]["generation"] = 2
    recorder = StatusRecorder()
    operator = Operator(settings=Settings(), kube=recorder, metrics=OperatorMetrics(), clock=lambda: T0)
    operator.report_refusal(workload_view(cluster.body), KubeError(
        "PATCH", "/apis/apps/v1/namespaces/factory/deployments/x", 422, "spec.template: forbidden by policy"))
    cluster.body["status"] = {**cluster.body["status"], **recorder.status}
    return cluster.body


CASES = [
    pytest.param(fresh, None, "Progressing", "Waiting for the operator",
                 id="a workload the operator has not seen yet is progressing"),
    pytest.param(first_placement_waiting, "Placed", "Progressing", "not available yet",
                 id="a first placement whose Deployment is not available yet is progressing"),
    pytest.param(placed_and_ready, "Placed", "Healthy", "cpu-cloud-eu/openvino-int8 x3",
                 id="placed with every group ready is healthy and says where"),
    pytest.param(spec_changed_not_yet_seen, "Placed", "Progressing", "observe generation 2",
                 id="a status of an older generation is progressing"),
    pytest.param(moving, "Migrating", "Progressing", "routes stay on cpu-cloud-eu/openvino-int8",
                 id="a make-before-break move under way is progressing"),
    pytest.param(draining, "Migrating", "Progressing", "routes switched to",
                 id="a move draining the groups it left is progressing"),
    pytest.param(moved, "Placed", "Healthy", "arm-factory-eu-1/trt-int8-orin x1",
                 id="a finished move is healthy on its new placement"),
    pytest.param(move_timed_out, "Placed", "Healthy", "cpu-cloud-eu/openvino-int8 x3",
                 id="a move that timed out is healthy on the placement it kept"),
    pytest.param(invalid_update, "Invalid", "Degraded", "spec.slo.percentile",
                 id="an invalid update is degraded and names the field"),
    pytest.param(infeasible_update, "Infeasible", "Degraded", "keeps serving",
                 id="an infeasible update is degraded and says what keeps serving"),
    pytest.param(infeasible_from_the_start, "Infeasible", "Degraded", "no placement meets the spec",
                 id="a workload no placement can meet is degraded"),
    pytest.param(slo_missed, "Placed", "Degraded", "factory-eu-1",
                 id="an observed SLO miss is degraded and names the site"),
    pytest.param(dry_run, "Placed", "Suspended", "nothing created",
                 id="a dry-run decision is suspended: nothing is created"),
    pytest.param(apply_refused, "Placed", "Degraded", "forbidden by policy",
                 id="objects the API refused for this generation are degraded"),
]


@pytest.mark.parametrize("build, phase, health, says", CASES)
def test_health_of_each_status_the_operator_writes(build: Callable[[], dict], phase: str | None, health: str,
                                                   says: str) -> None:
    obj = build()
    assert (obj.get("status") or {}).get("phase") == phase, "the scenario reaches the phase it is named for"
    hs = argo_health(copy.deepcopy(obj))
    assert hs["status"] == health, hs
    assert says in hs["message"], hs


def test_every_phase_the_model_knows_has_a_health() -> None:
    """Phases the pipeline does not reach today (Pending, Degraded) still map to something sensible."""
    base = placed_cluster().body
    seen = {}
    for phase in Phase:
        obj = copy.deepcopy(base)
        obj["status"]["phase"] = phase.value
        seen[phase.value] = argo_health(obj)["status"]
    assert seen == {"Pending": "Progressing", "Placed": "Healthy", "Migrating": "Progressing",
                    "Degraded": "Degraded", "Infeasible": "Degraded", "Invalid": "Degraded"}


def test_every_name_the_script_matches_is_one_the_operator_writes() -> None:
    """Each quoted phase, condition type and reason in the script is one the code emits."""
    quoted = set(re.findall(r'== "([A-Za-z]+)"', SCRIPT))
    code = "\n".join(p.read_text() for p in (REPO / "operator" / "hetplace").rglob("*.py"))
    phases = {p.value for p in Phase}
    for name in quoted - {"True", "False"}:
        assert name in phases or name in CONDITION_TYPES or f'"{name}"' in code, name
    assert {"Valid", "Placed", "Ready", "SLOMet"} <= set(re.findall(r'condition\(status, "(\w+)"\)', SCRIPT))


def test_the_sandbox_closes_what_argo_cd_closes() -> None:
    """A script using the string library works in plain Lua 5.1 but not here, as in Argo CD."""
    uses_string = 'local hs = {}; hs.status = string.upper("healthy"); return hs'
    with pytest.raises(lupa.lua51.LuaError):
        argo_health({}, uses_string)
    with pytest.raises(lupa.lua51.LuaError):
        argo_health({}, 'local hs = {}; hs.status = ("x"):upper(); return hs')
    assert lupa.lua51.LuaRuntime().execute('return string.upper("ok")') == "OK"


def test_the_argocd_cm_patch_carries_the_script_verbatim_under_argo_cds_key() -> None:
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert (patch["apiVersion"], patch["kind"], patch["metadata"]["name"]) == ("v1", "ConfigMap", "argocd-cm")
    assert patch["data"] == {"resource.customizations.health.hetplace.io_InferenceWorkload": SCRIPT}


def test_the_key_names_the_crd_group_and_kind() -> None:
    crd = yaml.safe_load((REPO / "crds" / "hetplace.io_inferenceworkloads.yaml").read_text())
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert f"resource.customizations.health.{group}_{kind}" in patch["data"]
