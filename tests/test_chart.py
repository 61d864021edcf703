"""The Helm chart, the kustomize manifests rendered from it and the Dockerfile, checked with the real
helm v4 and kubectl v1.34 binaries (docs/design.md §6; `make chart-tools` puts them in .tools/bin/).

Every rendered object is validated: built-in kinds strictly against the Kubernetes 1.34 JSON schema
(`kubernetes-validate`), the peering objects against the CRD the chart ships, the ServiceMonitor and
PodMonitor against prometheus-operator's schema (the compiled validators of the pinned npm package
@kubernetes-models/prometheus-operator, run with node). The chart's HETPLACE_* variables are loaded
into the operator's own `Settings`, so chart and operator cannot disagree on a name or a limit.
The gateways the chart runs at client sites (`sites:`, docs/gateway-install.md) are checked the same
way, and their arguments parsed as `hetplace gateway` takes them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import kubernetes_validate
import pydantic
import pytest
import yaml
from annotated_types import Ge, Gt, Le
from crd_admission import admit

from hetplace.cli import main as cli_main
from hetplace.config import Settings
from hetplace.controller.leader import peering_objects
from hetplace.k8s.client import KINDS

pytestmark = pytest.mark.chart

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "hetplace"
TOOLS = REPO / ".tools"
HELM, KUBECTL = TOOLS / "bin" / "helm", TOOLS / "bin" / "kubectl"
KUBERNETES_VERSION = "1.34.0"
RELEASE, NAMESPACE = "hetplace", "hetplace-system"

# manifests/render.py (the GitOps files from the chart), loaded under a name of its own
_spec = importlib.util.spec_from_file_location("hetplace_manifests_render", REPO / "manifests" / "render.py")
manifests_render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(manifests_render)

# Value sets beyond the defaults; each is rendered once per module, in parallel.
VALUE_SETS: dict[str, dict] = {
    "default": {},
    "namespaced, custom Prometheus and queries": {
        "settings": {
            "watchNamespaces": ["team-a", "team-b"],
            "prometheusUrl": "http://prometheus-operated.monitoring.svc:9090",
            "queries": {"link_rtt_seconds": 'max_over_time(probe_rtt_seconds{{site="{site}",pool="{pool}"}}[10m])'},
            "rebalanceIntervalSeconds": 120, "maxMovesPerCycle": 3, "solverTimeLimitSeconds": 2.5,
            "movePollSeconds": 0.5, "dryRun": True, "peeringName": "hetplace-teams", "metricsPort": 9100,
        },
        "healthPort": 9101,
    },
    "ServiceMonitor, NetworkPolicy and scheduling": {
        "metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kube-prometheus"}}},
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
                       {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}],
        },
        "image": {"repository": "registry.example.com/hetplace", "digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry"}],
        "nodeSelector": {"kubernetes.io/arch": "arm64"},
        "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
                "matchLabels": {"app.kubernetes.io/name": "hetplace"}}}}]}},
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"example.com/team": "platform"},
        "verbose": True,
        "replicaCount": 3,
    },
    "edge overlay": yaml.safe_load((REPO / "manifests" / "overlays" / "edge" / "values.yaml").read_text()),
    # a Deployment at a factory reading two namespaces over TLS, a DaemonSet in the cloud reading every one
    "gateways at two sites": {
        "sites": [
            {"name": "factory-eu-1", "kind": "Deployment", "replicas": 2,
             "nodeSelector": {"topology.kubernetes.io/zone": "factory-eu-1"},
             "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
             "namespaces": ["factory", "vision"], "tls": {"secretName": "factory-gateway-tls"},
             "upstreamCA": {"configMapName": "cloud-ca", "key": "bundle.pem"},
             "service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                         "annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}}},
            {"name": "cloud-eu", "kind": "DaemonSet", "nodeSelector": {"kubernetes.io/arch": "amd64"},
             "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}},
        ],
        "gateway": {"maxRequestBytes": 67108864, "deadlineSeconds": 2.5,
                    "monitor": {"kind": "PodMonitor", "interval": "15s", "labels": {"release": "kube-prometheus"}}},
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        },
    },
    # namespaced operator: a site with no scope reads the watched namespaces; one reads one workload
    "gateways in namespaced mode with a ServiceMonitor": {
        "settings": {"watchNamespaces": ["team-a", "team-b"]},
        "sites": [
            {"name": "Edge_Box.7", "nodeSelector": {"hetplace.example.com/site": "edge-box-7"}, "replicas": 1,
             "workloads": ["team-a/defect-detector"], "upstreamCA": {"secretName": "upstream-ca"},
             "extraArgs": ["--deadline-seconds", "5"]},
            {"name": "berlin", "kind": "DaemonSet", "nodeSelector": {}, "service": {"internalTrafficPolicy": "Local"}},
        ],
        "gateway": {"image": {"repository": "registry.example.com/hetplace-gateway", "tag": "0.1.0-slim"},
                    "ports": {"http": 8080, "grpc": 8081, "metrics": 9091}, "listen": "::", "verbose": True,
                    "monitor": {"kind": "ServiceMonitor"}},
    },
}
GATEWAY_SETS = [name for name, values in VALUE_SETS.items() if values.get("sites")]


def tool(path: Path) -> str:
    if not path.exists():
        pytest.fail(f"{path.relative_to(REPO)} is missing: run `make chart-tools` (make test does)")
    return str(path)


def run(*args: str, cwd: Path = REPO, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120, input=stdin)


def helm_template(values: dict, *extra: str) -> subprocess.CompletedProcess:
    return run(tool(HELM), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
               "--values", "-", *extra, stdin=json.dumps(values))


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """Every value set rendered by `helm template` (CRDs excluded, as `helm install` applies them apart)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(VALUE_SETS, pool.map(helm_template, VALUE_SETS.values())))
    failed = {name: result.stderr for name, result in done.items() if result.returncode != 0}
    assert not failed, failed
    return {name: documents(result.stdout) for name, result in done.items()}


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name or 'anything'}"
    return found[0]


def component(obj: dict) -> str | None:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def operator_deployment(objects: list[dict]) -> dict:
    return one([o for o in objects if component(o) == "operator"], "Deployment")


def container(objects: list[dict]) -> dict:
    return operator_deployment(objects)["spec"]["template"]["spec"]["containers"][0]


def chart_env(objects: list[dict]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(objects)["env"] if "value" in e}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [n for n in os.environ if n.startswith("HETPLACE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


# ---- lint and schema ------------------------------------------------------------------------------

@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_strict_passes(values, tmp_path):
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = run(tool(HELM), "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--values", str(values_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@lru_cache(maxsize=None)
def chart_crds() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the CRD the chart ships for it (each serves one version)."""
    crds = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for crd in documents(path.read_text()):
            (version,) = crd["spec"]["versions"]
            crds[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = crd
    return crds


MONITOR_CHECK = """
import { KIND } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/KIND";
let input = ""; process.stdin.on("data", (chunk) => input += chunk);
process.stdin.on("end", () => {
  try { new KIND(JSON.parse(input)).validate(); } catch (e) { console.error(e.message); process.exit(1); }
});
"""


def validate_monitor(obj: dict) -> None:
    """prometheus-operator's ServiceMonitor or PodMonitor schema (it does not refuse unknown fields: the
    API server prunes them)."""
    assert obj["kind"] in ("ServiceMonitor", "PodMonitor"), obj["kind"]
    check = MONITOR_CHECK.replace("KIND", obj["kind"])
    result = run("node", "--input-type=module", "-e", check, cwd=TOOLS / "node", stdin=json.dumps(obj))
    if result.returncode != 0:
        raise ValueError(f"{obj['kind']} {obj['metadata']['name']}: {result.stderr.strip()}")


def validate(obj: dict) -> None:
    """The object as an API server with the chart's CRDs (and prometheus-operator's) would admit it."""
    crd = chart_crds().get((obj["apiVersion"], obj["kind"]))
    if crd is not None:     # admission as tests/crd_admission.py rebuilds it: schema, unknown fields, CEL
        problems = admit(crd, obj)
        if problems:
            raise ValueError(f"{obj['kind']} {obj['metadata']['name']}: {'; '.join(problems)}")
    elif obj["apiVersion"] == "monitoring.coreos.com/v1":
        validate_monitor(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_object_passes_its_schema(rendered, name):
    for obj in rendered[name]:
        validate(obj)


def test_the_crds_the_chart_installs_pass_the_kubernetes_schema():
    result = helm_template({}, "--include-crds")
    assert result.returncode == 0, result.stderr
    crds = [o for o in documents(result.stdout) if o["kind"] == "CustomResourceDefinition"]
    assert {c["metadata"]["name"] for c in crds} == {"computepools.hetplace.io", "inferenceworkloads.hetplace.io",
                                                     "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    for crd in crds:
        kubernetes_validate.validate(crd, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("breakage", [
    ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(runAsNonRoot="yes")),
    ("Deployment", lambda d: d["spec"].update(replica=2)),
    ("ClusterKopfPeering", lambda p: p.update(spec="not an object")),
    ("ClusterRole", lambda r: r["rules"][0].update(verbs="get")),
], ids=["a string where a boolean goes", "an unknown field", "a peering object off its CRD", "verbs not a list"])
def test_the_schema_checks_are_real(rendered, breakage):
    kind, breaks = breakage
    obj = json.loads(json.dumps(one(rendered["default"], kind)))
    breaks(obj)
    with pytest.raises((kubernetes_validate.ValidationError, ValueError)):
        validate(obj)


@pytest.mark.parametrize("name, kind, endpoints", [
    ("ServiceMonitor, NetworkPolicy and scheduling", "ServiceMonitor", "endpoints"),
    ("gateways at two sites", "PodMonitor", "podMetricsEndpoints"),
], ids=["the operator's ServiceMonitor", "the gateways' PodMonitor"])
def test_the_monitor_check_is_real(rendered, name, kind, endpoints):
    monitor = json.loads(json.dumps(one(rendered[name], kind)))
    monitor["spec"][endpoints][0]["interval"] = "15 seconds"
    with pytest.raises(ValueError, match="interval must match pattern"):
        validate(monitor)


@pytest.mark.parametrize("values, says", [
    ({}, ["Watching: every namespace", "Telemetry: none", "port-forward svc/hetplace-metrics 8080"]),
    (VALUE_SETS["namespaced, custom Prometheus and queries"],
     ["Watching: team-a, team-b", "Telemetry: http://prometheus-operated.monitoring.svc:9090", "DRY RUN"]),
    (VALUE_SETS["gateways at two sites"],
     ["factory-eu-1: a Deployment of 2 replica(s), watching factory, vision",
      "HTTP https://hetplace-gateway-factory-eu-1.hetplace-system.svc:8000",
      "gRPC hetplace-gateway-factory-eu-1.hetplace-system.svc:8001 (TLS)",
      "kubectl -n hetplace-system get svc hetplace-gateway-factory-eu-1   # its LoadBalancer address",
      "cloud-eu: a DaemonSet on every node of the site, watching every namespace",
      "HTTP http://hetplace-gateway-cloud-eu.hetplace-system.svc:8000", "model name of the workload",
      "Metrics: a PodMonitor scrapes /metrics on port 9090"]),
    (VALUE_SETS["gateways in namespaced mode with a ServiceMonitor"],
     ["Edge_Box.7: a Deployment of 1 replica(s), watching team-a/defect-detector",
      "berlin: a DaemonSet on every node of the site, watching team-a, team-b",
      "HTTP http://hetplace-gateway-berlin.hetplace-system.svc:8080"]),
], ids=["cluster-wide without telemetry", "namespaced, in dry run, with Prometheus", "gateways at two sites",
        "gateways of a namespaced operator"])
def test_the_install_notes_say_what_was_installed(values, says):
    result = run(tool(HELM), "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                 "--values", "-", stdin=json.dumps(values))
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("\nNOTES:\n", 1)[1]
    for line in says:
        assert line in notes, notes
    assert ("DRY RUN" in notes) is bool(values.get("settings", {}).get("dryRun"))
    assert ("Gateways" in notes) is bool(values.get("sites")), notes


# ---- values the schema refuses --------------------------------------------------------------------

@pytest.mark.parametrize("values, field, says", [
    ({"settings": {"maxMovesPerCycle": 5000}}, "/settings/maxMovesPerCycle", "maximum: got 5,000, want 1,000"),
    ({"settings": {"solverTimeLimitSeconds": 0}}, "/settings/solverTimeLimitSeconds", "exclusiveMinimum: got 0, want 0"),
    ({"settings": {"movePollSeconds": 0.01}}, "/settings/movePollSeconds", "minimum: got 0.01, want 0.05"),
    ({"settings": {"metricsPort": 70000}}, "/settings/metricsPort", "maximum: got 70,000, want 65,535"),
    ({"settings": {"peeringName": "Hetplace_1"}}, "/settings/peeringName", "'Hetplace_1' does not match pattern"),
    ({"settings": {"watchNamespaces": ["Team-A"]}}, "/settings/watchNamespaces/0", "'Team-A' does not match pattern"),
    ({"settings": {"prometheusUrl": "prometheus:9090"}}, "/settings/prometheusUrl", "does not match pattern"),
    ({"settings": {"tritonEndpoint": "http://{service}:8000"}}, "/settings/tritonEndpoint", "does not match pattern"),
    ({"settings": {"dryRun": "yes"}}, "/settings/dryRun", "got string, want boolean"),
    ({"settings": {"rebalanceInterval": 60}}, "/settings", "additional properties 'rebalanceInterval' not allowed"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "value must be one of 'Always', 'IfNotPresent', 'Never'"),
    ({"replicaCount": 0}, "/replicaCount", "minimum: got 0, want 1"),
    ({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}}, "/metrics/serviceMonitor/interval", "does not match"),
    ({"replicas": 2}, "", "additional properties 'replicas' not allowed"),
    ({"sites": [{"name": "factory eu 1", "nodeSelector": {}}]}, "/sites/0/name", "'factory eu 1' does not match pattern"),
    ({"sites": [{"name": "factory-eu-1", "kind": "StatefulSet", "nodeSelector": {}}]}, "/sites/0/kind",
     "value must be one of 'Deployment', 'DaemonSet'"),
    ({"sites": [{"name": "factory-eu-1"}]}, "/sites/0", "missing property 'nodeSelector'"),
    ({"sites": [{"name": "factory-eu-1", "nodeSelector": {}, "workloads": ["defect-detector"]}]}, "/sites/0/workloads/0",
     "'defect-detector' does not match pattern"),
    ({"sites": [{"name": "factory-eu-1", "nodeSelector": {}, "replica": 3}]}, "/sites/0",
     "additional properties 'replica' not allowed"),
    ({"sites": [{"name": "factory-eu-1", "nodeSelector": {}, "upstreamCA": {"key": "ca.crt"}}]}, "/sites/0/upstreamCA",
     "missing property 'configMapName'"),
    ({"gateway": {"ports": {"http": 0, "grpc": 8001, "metrics": 9090}}}, "/gateway/ports/http", "minimum: got 0, want 1"),
    ({"gateway": {"monitor": {"kind": "Probe"}}}, "/gateway/monitor/kind",
     "value must be one of 'PodMonitor', 'ServiceMonitor', 'none'"),
], ids=["too many moves per cycle", "a solver with no time", "polling faster than 50 ms", "a port above 65535",
        "a peering name that is no DNS label", "a namespace in upper case", "a Prometheus URL without a scheme",
        "a Triton endpoint with a scheme", "dry run as a string", "a misspelt setting", "an unknown pull policy",
        "no replicas", "a Prometheus duration with words", "a misspelt top-level key",
        "a site name with spaces", "a gateway kind that is neither Deployment nor DaemonSet",
        "a site without its nodes", "a gateway workload without its namespace", "a misspelt site field",
        "an upstream CA from nowhere", "a gateway port of 0", "a monitor kind prometheus-operator has not"])
def test_bad_values_are_refused_naming_the_field_value_and_limit(values, field, says):
    result = helm_template(values)
    assert result.returncode != 0, f"{values} was accepted"
    assert f"at '{field}'" in result.stderr and says in result.stderr, result.stderr


@pytest.mark.parametrize("values, says", [
    ({"healthPort": 8080}, "healthPort (8080) and settings.metricsPort (8080) must differ"),
    ({"serviceAccount": {"create": False}}, "serviceAccount.name: set it when serviceAccount.create is false"),
    ({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
     "metrics.serviceMonitor.enabled needs metrics.service.enabled"),
    ({"sites": [{"name": "factory-eu-1", "nodeSelector": {}}, {"name": "cloud-eu", "nodeSelector": {}},
                {"name": "factory-eu-1", "nodeSelector": {}, "kind": "DaemonSet"}]},
     'sites[2]: site "factory-eu-1" is listed twice (also sites[0])'),
    ({"sites": [{"name": "cloud-eu", "kind": "DaemonSet", "replicas": 3, "nodeSelector": {}}]},
     "sites[0] (cloud-eu): replicas is for kind Deployment"),
    ({"sites": [{"name": "factory-eu-1", "nodeSelector": {}, "workloads": ["factory/defect-detector"],
                 "namespaces": ["factory"]}]},
     "sites[0] (factory-eu-1): give workloads or namespaces, not both"),
    ({"sites": [{"name": "factory-eu-1", "nodeSelector": {}}], "gateway": {"ports": {"http": 8000, "grpc": 8001, "metrics": 8000}}},
     "gateway.ports: http (8000), grpc (8001) and metrics (8000) must differ"),
], ids=["health and metrics on one port", "no service account to run as", "a ServiceMonitor without its Service",
        "a site listed twice", "replicas for a DaemonSet", "a gateway given workloads and namespaces",
        "two gateway listeners on one port"])
def test_values_that_cannot_work_together_are_refused(values, says):
    result = helm_template(values)
    assert result.returncode != 0, f"{values} was accepted"
    assert says in result.stderr, result.stderr


def limits(schema: dict) -> dict[str, float]:
    return {k: schema[k] for k in ("minimum", "maximum", "exclusiveMinimum") if k in schema}


def test_the_schema_limits_are_the_operators_own():
    """Every numeric setting's range in values.schema.json is the one config.Settings enforces."""
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["settings"]["properties"]
    for field, info in Settings.model_fields.items():
        if info.annotation not in (int, float):
            continue
        expected = {}
        for rule in info.metadata:
            if isinstance(rule, Ge):
                expected["minimum"] = rule.ge
            elif isinstance(rule, Gt):
                expected["exclusiveMinimum"] = rule.gt
            elif isinstance(rule, Le):
                expected["maximum"] = rule.le
        key = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), field)
        assert limits(schema[key]) == expected, f"settings.{key}: schema {limits(schema[key])}, config.py {expected}"
        assert schema[key]["type"] == ("integer" if info.annotation is int else "number"), key


# ---- the chart and the operator agree -------------------------------------------------------------

def test_every_operator_setting_is_a_chart_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())["settings"]
    as_fields = {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower() for key in values}
    # the pod always listens on all interfaces, the operator's default
    assert as_fields == set(Settings.model_fields) - {"metrics_address"}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_variable_the_chart_sets_is_a_setting_the_operator_accepts(rendered, name, monkeypatch):
    env = chart_env(rendered[name])
    unknown = {n for n in env if n.startswith("HETPLACE_")} - {
        f"HETPLACE_{field.upper()}" for field in Settings.model_fields}
    assert not unknown, f"the operator would ignore {sorted(unknown)}"
    try:
        settings_from(env, monkeypatch)
    except pydantic.ValidationError as refused:
        pytest.fail(f"the operator refuses the chart's settings: {refused}")


def test_default_values_give_the_operators_defaults(rendered, monkeypatch):
    assert settings_from(chart_env(rendered["default"]), monkeypatch) == settings_from({}, monkeypatch)


def test_custom_values_reach_the_operator(rendered, monkeypatch):
    settings = settings_from(chart_env(rendered["namespaced, custom Prometheus and queries"]), monkeypatch)
    assert str(settings.prometheus_url) == "http://prometheus-operated.monitoring.svc:9090/"
    assert settings.queries["link_rtt_seconds"].startswith("max_over_time(probe_rtt_seconds")
    assert settings.queries["link_bandwidth_bytes"] == Settings().queries["link_bandwidth_bytes"]
    assert settings.watch_namespaces == ["team-a", "team-b"]
    assert (settings.rebalance_interval_seconds, settings.max_moves_per_cycle, settings.solver_time_limit_seconds,
            settings.move_poll_seconds) == (120, 3, 2.5, 0.5)
    assert settings.dry_run is True and settings.peering_name == "hetplace-teams" and settings.metrics_port == 9100


def test_the_pod_runs_hetplace_run_with_the_flags_it_takes(rendered):
    """The image's ENTRYPOINT is `hetplace`; the chart's args must be `run` and its options."""
    for name, objects in rendered.items():
        command, *args = container(objects)["args"]
        assert command == "run", name
        context = cli_main.commands["run"].make_context("run", args)
        health = next(p for p in container(objects)["ports"] if p["name"] == "health")["containerPort"]
        assert context.params["liveness_endpoint"] == f"http://0.0.0.0:{health}/healthz", name
        assert context.params["verbose"] is bool(VALUE_SETS[name].get("verbose")), name
        assert "command" not in container(objects), "the image's ENTRYPOINT (`hetplace`) runs the operator"


def test_probes_and_ports_point_at_what_the_operator_serves(rendered):
    objects = rendered["namespaced, custom Prometheus and queries"]
    c = container(objects)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9100, "health": 9101}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    service = one(objects, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = operator_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def assert_restricted(pod: dict, c: dict) -> None:
    """The restricted Pod Security Standard, and a writable /tmp only."""
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                                    "seccompProfile": {"type": "RuntimeDefault"}}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_pod_runs_restricted(rendered, name):
    pod = operator_deployment(rendered[name])["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert_restricted(pod, c)
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
    assert "hostNetwork" not in pod and "hostPID" not in pod
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c["env"]


def test_scheduling_and_image_values_reach_the_pod(rendered):
    values = VALUE_SETS["ServiceMonitor, NetworkPolicy and scheduling"]
    deployment = one(rendered["ServiceMonitor, NetworkPolicy and scheduling"], "Deployment")
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 3
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"):
        assert pod["spec"][key] == values[key], key
    assert pod["metadata"]["annotations"] == values["podAnnotations"]
    assert pod["spec"]["containers"][0]["image"] == "registry.example.com/hetplace@sha256:" + "a" * 64
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    default = container(rendered["default"])
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert default["image"] == f"ghcr.io/hetplace/hetplace:{chart_yaml['appVersion']}"


def test_the_service_monitor_scrapes_the_metrics_service(rendered):
    objects = rendered["ServiceMonitor, NetworkPolicy and scheduling"]
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert not [o for o in rendered["default"] if o["kind"] == "ServiceMonitor"]


def test_the_network_policy_admits_only_scrapes_and_the_egress_given(rendered):
    values = VALUE_SETS["ServiceMonitor, NetworkPolicy and scheduling"]["networkPolicy"]
    objects = rendered["ServiceMonitor, NetworkPolicy and scheduling"]
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= \
        one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}], "from": values["metricsFrom"]}]
    assert policy["egress"] == values["egress"]
    assert not [o for o in rendered["default"] if o["kind"] == "NetworkPolicy"]


# ---- RBAC -----------------------------------------------------------------------------------------

CLUSTER_SCOPED = {("", "nodes"), ("", "namespaces"), ("hetplace.io", "computepools"),
                  ("hetplace.io", "computepools/status"), ("kopf.dev", "clusterkopfpeerings"),
                  ("apiextensions.k8s.io", "customresourcedefinitions")}
READ = {"get", "list", "watch"}
OWNED = {"create", "delete", "get", "list", "patch", "watch"}


def grants(role: dict) -> set[tuple[str, str, str, str]]:
    """(apiGroup, resource, verb, resourceName or '') for every combination a role's rules allow."""
    return {(group, resource, verb, name)
            for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"] for name in rule.get("resourceNames") or [""]}


def expand(table: dict[tuple[str, str], set[str]], names: dict[tuple[str, str, str], str] | None = None) -> set:
    names = names or {}
    return {(g, r, v, names.get((g, r, v), "")) for (g, r), verbs in table.items() for v in verbs}


# What the operator calls, and why (see templates/rbac.yaml): the expected grants, exactly.
CLUSTER_READS = {
    ("hetplace.io", "computepools"): READ,                 # kopf's index and pool-gone handler
    ("hetplace.io", "computepools/status"): {"patch"},     # pool status from the leader
    ("", "nodes"): READ,                                   # pools sized by Ready Nodes
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},   # kopf's CRD scan
}
NAMESPACED = {
    ("hetplace.io", "inferenceworkloads"): READ,           # kopf's index and handler; reconcile reads afresh
    ("hetplace.io", "inferenceworkloads/status"): {"patch"},
    ("apps", "deployments"): OWNED,                        # server-side apply, prune, owner check, kopf's index
    ("", "services"): OWNED,
    ("", "configmaps"): OWNED,
    ("", "events"): {"create"},
}


def expected_clusterwide(peering: str) -> set:
    table = {**CLUSTER_READS, **NAMESPACED, ("kopf.dev", "clusterkopfpeerings"): {"create", "list", "watch", "get", "patch"}}
    return expand(table, {("kopf.dev", "clusterkopfpeerings", v): peering for v in ("get", "patch")})


def expected_namespace_role(peering: str) -> set:
    table = {**NAMESPACED, ("kopf.dev", "kopfpeerings"): {"create", "list", "watch", "get", "patch"}}
    return expand(table, {("kopf.dev", "kopfpeerings", v): peering for v in ("get", "patch")})


def roles(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] in ("ClusterRole", "Role")]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rbac_never_grants_wildcards_secrets_or_escalation(rendered, name):
    for role in roles(rendered[name]):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field] and not any("*" in item for item in rule[field]), (role, rule)
            assert not {"secrets", "pods", "pods/exec", "serviceaccounts/token"} & set(rule["resources"]), rule
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
            assert "nonResourceURLs" not in rule


def test_cluster_wide_rbac_is_exactly_what_the_operator_calls(rendered):
    objects = rendered["default"]
    assert [r["kind"] for r in roles(objects)] == ["ClusterRole"]
    assert grants(one(objects, "ClusterRole")) == expected_clusterwide("hetplace")


def test_namespaced_rbac_writes_only_in_the_watched_namespaces(rendered):
    objects = rendered["namespaced, custom Prometheus and queries"]
    cluster = grants(one(objects, "ClusterRole"))
    assert cluster == expand({**CLUSTER_READS, ("", "namespaces"): {"list", "watch"}})
    for group, resource, verb, _ in cluster:
        assert (group, resource) in CLUSTER_SCOPED or verb in READ, f"cluster-wide {verb} on {resource}"
    by_namespace = {r["metadata"]["namespace"]: r for r in objects if r["kind"] == "Role"}
    assert set(by_namespace) == {"team-a", "team-b", "default"}
    for namespace in ("team-a", "team-b"):
        assert grants(by_namespace[namespace]) == expected_namespace_role("hetplace-teams"), namespace
    # Events about ComputePools (cluster-scoped) are recorded in `default` (k8s/client.py Kube.event)
    assert grants(by_namespace["default"]) == {("", "events", "create", "")}


@pytest.mark.parametrize("name", ["default", "namespaced, custom Prometheus and queries"])
def test_every_role_is_bound_to_the_operators_service_account(rendered, name):
    objects = rendered[name]
    account = one(objects, "ServiceAccount")["metadata"]
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]
    bindings = [o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    bound = {(b["roleRef"]["kind"], b["metadata"].get("namespace"), b["roleRef"]["name"]) for b in bindings}
    assert bound == {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]) for r in roles(objects)}
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                        "namespace": account["namespace"]}]


def test_every_kind_the_operator_calls_is_granted(rendered):
    """A kind added to k8s/client.py without RBAC fails here, not in a cluster."""
    granted = {(g, r) for role in roles(rendered["default"]) for g, r, _, _ in grants(role)}
    for kind in KINDS.values():
        group = kind.api_version.rpartition("/")[0]
        if kind.plural != "kopfpeerings":          # namespaced mode's; checked there
            assert (group, kind.plural) in granted, kind


# ---- gateways at client sites ---------------------------------------------------------------------

# The flags whose value is a file: click checks it exists, so the test hands it one and checks the
# chart's path against the pod's volumes itself.
FILE_FLAGS = ("--tls-cert", "--tls-key", "--upstream-ca")


def gateway_command_line(args: list[str], tmp_path: Path) -> tuple[dict, dict[str, str]]:
    """`hetplace gateway`'s own parse of the pod's args (its params), and the file flags' paths."""
    stand_in = tmp_path / "mounted"
    stand_in.write_text("")
    files = {flag: value for flag, value in zip(args, args[1:]) if flag in FILE_FLAGS}
    given = [str(stand_in) if flag in FILE_FLAGS else value for flag, value in zip([None, *args], args)]
    return cli_main.commands["gateway"].make_context("gateway", given).params, files


def gateway_workloads(objects: list[dict]) -> dict[str, dict]:
    """Site -> the Deployment or DaemonSet of its gateway."""
    found = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet") and component(o) == "gateway"]
    by_site = {o["metadata"]["labels"]["hetplace.io/site"]: o for o in found}
    assert len(by_site) == len(found), "two gateways for one site"
    return by_site


def gateway_objects(objects: list[dict]) -> list[dict]:
    return [o for o in objects if component(o) == "gateway" or "gateway" in o["metadata"]["name"]]


def expected_scope(values: dict, site: dict) -> tuple[list[str], list[str]]:
    """(--workload values, --namespace values): the site's own, else the operator's watched namespaces."""
    workloads = site.get("workloads", [])
    namespaces = site.get("namespaces") or ([] if workloads else values.get("settings", {}).get("watchNamespaces", []))
    return workloads, namespaces


def gateway_sites():
    return [pytest.param(name, site, id=f"{name}: {site['name']}") for name in GATEWAY_SETS
            for site in VALUE_SETS[name]["sites"]]


@pytest.mark.parametrize("name", [n for n in VALUE_SETS if n not in GATEWAY_SETS])
def test_without_sites_the_chart_renders_no_gateway(rendered, name):
    assert gateway_objects(rendered[name]) == []


def test_an_empty_site_list_renders_nothing_even_with_a_monitor_and_network_policy_asked_for(rendered):
    values = {"sites": [], "gateway": {"monitor": {"kind": "ServiceMonitor"}}, "networkPolicy": {"enabled": True}}
    result = helm_template(values)
    assert result.returncode == 0, result.stderr
    assert gateway_objects(documents(result.stdout)) == []


@pytest.mark.parametrize("name, site", gateway_sites())
def test_each_site_runs_hetplace_gateway_with_the_flags_it_takes(rendered, name, site, tmp_path):
    values, gateway = VALUE_SETS[name], VALUE_SETS[name].get("gateway", {})
    workload = gateway_workloads(rendered[name])[site["name"]]
    assert workload["kind"] == site.get("kind", "Deployment")
    pod = workload["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert "command" not in c, "the image's ENTRYPOINT (`hetplace`) runs the gateway"
    command, *args = c["args"]
    assert command == "gateway"
    params, files = gateway_command_line(args, tmp_path)
    assert params["site"] == site["name"]
    assert (list(params["workloads"]), list(params["namespaces"])) == expected_scope(values, site)
    assert params["routes_file"] is None, "in the cluster the routes come from the API"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == gateway.get("ports", {"http": 8000, "grpc": 8001, "metrics": 9090})
    assert (params["http_port"], params["grpc_port"], params["metrics_port"]) == \
        (ports["http"], ports["grpc"], ports["metrics"])
    assert params["listen"] == gateway.get("listen", "0.0.0.0")
    extra = dict(zip(site.get("extraArgs", [])[::2], site.get("extraArgs", [])[1::2]))
    assert params["deadline_seconds"] == float(extra.get("--deadline-seconds", gateway.get("deadlineSeconds", 10)))
    assert params["max_request_bytes"] == gateway.get("maxRequestBytes", 16 * 1024 * 1024)
    assert params["probe_interval_seconds"] == gateway.get("probeIntervalSeconds", 10)
    assert params["verbose"] is bool(gateway.get("verbose"))
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(files) == ({"--tls-cert", "--tls-key"} if "tls" in site else set()) | \
        ({"--upstream-ca"} if "upstreamCA" in site else set())
    for flag in ("--tls-cert", "--tls-key") if "tls" in site else ():
        directory, _, key = files[flag].rpartition("/")
        secret = volumes[mounts[directory]]["secret"]
        assert secret["secretName"] == site["tls"]["secretName"] and {"key": key, "path": key} in secret["items"]
    if "upstreamCA" in site:
        directory, _, key = files["--upstream-ca"].rpartition("/")
        source = volumes[mounts[directory]]
        assert key == site["upstreamCA"].get("key", "ca.crt")
        if "configMapName" in site["upstreamCA"]:
            assert source["configMap"]["name"] == site["upstreamCA"]["configMapName"]
        else:
            assert source["secret"]["secretName"] == site["upstreamCA"]["secretName"]
        assert (source.get("configMap") or source["secret"])["items"] == [{"key": key, "path": key}]


@pytest.mark.parametrize("name, site", gateway_sites())
def test_each_gateway_runs_restricted_on_its_sites_nodes(rendered, name, site):
    workload = gateway_workloads(rendered[name])[site["name"]]
    pod = workload["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert_restricted(pod, c)
    assert all(m.get("readOnly") for m in c["volumeMounts"] if m["name"] != "tmp")
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostPort" not in str(c["ports"])
    assert pod.get("nodeSelector", {}) == site["nodeSelector"]
    assert pod.get("tolerations", []) == site.get("tolerations", [])
    # sized for the gateway's goal of at most 80 MB RSS, unless the site says otherwise
    default = {"requests": {"cpu": "100m", "memory": "96Mi"}, "limits": {"memory": "160Mi"}}
    assert c["resources"] == site.get("resources", default)
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "gateway" and labels["hetplace.io/site"] == site["name"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert workload["spec"].get("replicas") == (site.get("replicas", 2) if workload["kind"] == "Deployment" else None)


@pytest.mark.parametrize("name, site", gateway_sites())
def test_each_gateway_is_probed_on_its_health_paths_and_called_through_its_service(rendered, name, site):
    objects = rendered[name]
    workload = gateway_workloads(objects)[site["name"]]
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    scheme = "HTTPS" if "tls" in site else "HTTP"
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http", "scheme": scheme}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http", "scheme": scheme}
    assert "http" in {p["name"] for p in c["ports"]}
    service = one(objects, "Service", workload["metadata"]["name"])
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["selector"]["hetplace.io/site"] == site["name"], "a site's Service reaches its own gateways"
    ports = {p["containerPort"]: p["name"] for p in c["ports"]}
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [("http", "http"), ("grpc", "grpc")]
    assert [p["port"] for p in service["spec"]["ports"]] == [k for k, v in ports.items() if v in ("http", "grpc")]
    wanted = site.get("service", {})
    assert service["spec"]["type"] == wanted.get("type", "ClusterIP")
    assert service["metadata"].get("annotations", {}) == wanted.get("annotations", {})
    for policy in ("externalTrafficPolicy", "internalTrafficPolicy"):
        assert service["spec"].get(policy) == wanted.get(policy), policy


@pytest.mark.parametrize("name", GATEWAY_SETS)
def test_the_operators_selectors_never_match_a_gateway(rendered, name):
    objects = rendered[name]
    selectors = [operator_deployment(objects)["spec"]["selector"]["matchLabels"]]
    selectors += [o["spec"]["selector"] for o in objects if o["kind"] == "Service" and component(o) == "operator"]
    selectors += [o["spec"]["selector"]["matchLabels"] for o in objects
                  if o["kind"] == "PodDisruptionBudget" and component(o) == "operator"]
    selectors += [o["spec"]["podSelector"]["matchLabels"] for o in objects
                  if o["kind"] == "NetworkPolicy" and component(o) == "operator"]
    for workload in gateway_workloads(objects).values():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        for selector in selectors:
            assert not selector.items() <= labels.items(), selector


@pytest.mark.parametrize("name, site", gateway_sites())
def test_each_gateway_may_only_read_configmaps_where_it_watches(rendered, name, site):
    objects = rendered[name]
    workload = gateway_workloads(objects)[site["name"]]
    account = workload["spec"]["template"]["spec"]["serviceAccountName"]
    assert one(objects, "ServiceAccount", account)["metadata"]["namespace"] == NAMESPACE
    subject = {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    bindings = [o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding") and subject in o["subjects"]]
    assert bindings
    for binding in bindings:
        assert binding["subjects"] == [subject], "a site's account is its own"
        role = one([o for o in objects if o["metadata"].get("namespace") == binding["metadata"].get("namespace")],
                   binding["roleRef"]["kind"], binding["roleRef"]["name"])
        assert grants(role) == {("", "configmaps", verb, "") for verb in READ}
    workloads, namespaces = expected_scope(VALUE_SETS[name], site)
    where = sorted({w.split("/")[0] for w in workloads} | set(namespaces))
    if where:
        assert sorted(b["metadata"]["namespace"] for b in bindings) == where
        assert {b["kind"] for b in bindings} == {"RoleBinding"}
    else:
        assert [b["kind"] for b in bindings] == ["ClusterRoleBinding"], "every namespace: one ClusterRole"


@pytest.mark.parametrize("name", GATEWAY_SETS)
def test_the_gateway_monitor_scrapes_every_sites_metrics_port_keeping_the_series_labels(rendered, name):
    objects = rendered[name]
    monitor_values = VALUE_SETS[name]["gateway"]["monitor"]
    monitor = one(objects, monitor_values["kind"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints" if monitor["kind"] == "PodMonitor" else "endpoints"]
    # the series carry namespace, workload and site themselves: the target's `namespace` must not win
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics" and endpoint["honorLabels"] is True
    assert endpoint["interval"] == monitor_values.get("interval", "30s")
    assert monitor_values.get("labels", {}).items() <= monitor["metadata"]["labels"].items()
    selector = monitor["spec"]["selector"]["matchLabels"]
    metrics_service = one(objects, "Service", "hetplace-gateways")
    assert metrics_service["spec"]["clusterIP"] == "None"
    assert metrics_service["spec"]["ports"] == [{"name": "metrics", "port": VALUE_SETS[name]["gateway"].get(
        "ports", {}).get("metrics", 9090), "targetPort": "metrics", "protocol": "TCP"}]
    if monitor["kind"] == "ServiceMonitor":
        assert selector.items() <= metrics_service["metadata"]["labels"].items()
    for workload in gateway_workloads(objects).values():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert metrics_service["spec"]["selector"].items() <= labels.items()
        if monitor["kind"] == "PodMonitor":
            assert selector.items() <= labels.items()
        assert "metrics" in {p["name"] for p in workload["spec"]["template"]["spec"]["containers"][0]["ports"]}
        site_service = one(objects, "Service", workload["metadata"]["name"])
        assert "metrics" not in {p["name"] for p in site_service["spec"]["ports"]}, "/metrics stays in the cluster"
    assert [o for o in objects if o["apiVersion"] == "monitoring.coreos.com/v1"] == [monitor]


def test_the_gateway_network_policy_admits_clients_and_scrapes_only(rendered):
    values = VALUE_SETS["gateways at two sites"]
    objects = rendered["gateways at two sites"]
    policy = one([o for o in objects if component(o) == "gateway"], "NetworkPolicy")["spec"]
    for workload in gateway_workloads(objects).values():
        assert policy["podSelector"]["matchLabels"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"], "upstreams may be anywhere: egress is not restricted unless asked"
    assert policy["ingress"] == [
        {"ports": [{"port": "http", "protocol": "TCP"}, {"port": "grpc", "protocol": "TCP"}]},
        {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": values["networkPolicy"]["metricsFrom"]}]
    assert not [o for o in rendered["gateways in namespaced mode with a ServiceMonitor"] if o["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("name, site", gateway_sites())
def test_a_site_deployment_of_more_than_one_replica_keeps_one_through_a_drain(rendered, name, site):
    objects = rendered[name]
    workload = gateway_workloads(objects)[site["name"]]
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget" and o["metadata"]["name"] == workload["metadata"]["name"]]
    if workload["kind"] == "Deployment" and workload["spec"]["replicas"] > 1:
        (budget,) = budgets
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"] == workload["spec"]["selector"]["matchLabels"]
    else:
        assert budgets == []


@pytest.mark.parametrize("name", GATEWAY_SETS)
def test_gateways_run_the_operators_image_unless_told_otherwise(rendered, name):
    override = VALUE_SETS[name]["gateway"].get("image")
    wanted = f"{override['repository']}:{override['tag']}" if override else container(rendered[name])["image"]
    for workload in gateway_workloads(rendered[name]).values():
        (c,) = workload["spec"]["template"]["spec"]["containers"]
        assert c["image"] == wanted and c["imagePullPolicy"] == container(rendered[name])["imagePullPolicy"]


def test_a_gateway_without_grpc_listens_and_is_reached_on_http_alone(tmp_path):
    values = {"sites": [{"name": "factory-eu-1", "nodeSelector": {}}], "networkPolicy": {"enabled": True},
              "gateway": {"ports": {"http": 8000, "grpc": 0, "metrics": 9090}}}
    result = helm_template(values)
    assert result.returncode == 0, result.stderr
    objects = documents(result.stdout)
    (c,) = gateway_workloads(objects)["factory-eu-1"]["spec"]["template"]["spec"]["containers"]
    assert gateway_command_line(c["args"][1:], tmp_path)[0]["grpc_port"] == 0
    assert [p["name"] for p in c["ports"]] == ["http", "metrics"]
    assert [p["name"] for p in one(objects, "Service", "hetplace-gateway-factory-eu-1")["spec"]["ports"]] == ["http"]
    policy = one([o for o in objects if component(o) == "gateway"], "NetworkPolicy")
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == ["http", "metrics"]


def test_every_site_name_gives_its_objects_a_distinct_dns_label():
    """Sites are tokens (letters, digits, '-', '_', '.'), names DNS labels: lowered, rewritten or cut
    names are told apart by a hash of the site; the label keeps the site as it is."""
    sites = ["factory-eu-1", "Factory-EU-1", "factory_eu_1", "factory.eu.1", "a" * 63, "a" * 62 + "b", "7"]
    result = helm_template({"sites": [{"name": s, "nodeSelector": {}} for s in sites]})
    assert result.returncode == 0, result.stderr
    workloads = gateway_workloads(documents(result.stdout))
    assert sorted(workloads) == sorted(sites)
    names = [w["metadata"]["name"] for w in workloads.values()]
    assert len(set(names)) == len(sites), names
    for name in names:
        assert len(name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
    assert workloads["factory-eu-1"]["metadata"]["name"] == "hetplace-gateway-factory-eu-1", "a plain name is kept"


# ---- CRDs and peering -----------------------------------------------------------------------------

def test_the_charts_crds_are_the_generated_ones_byte_for_byte():
    top = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert top and set(chart) == set(top) | {"kopf.dev_peerings.yaml"}
    differ = sorted(name for name in top if chart[name] != top[name])
    assert not differ, f"charts/hetplace/crds/ differs from crds/ in {differ}: copy them (cp crds/*.yaml charts/hetplace/crds/)"


def test_kopfs_peering_crds_serve_the_kinds_the_operator_uses():
    crds = {c["spec"]["names"]["kind"]: c for c in documents((CHART / "crds" / "kopf.dev_peerings.yaml").read_text())}
    for kind_name in ("ClusterKopfPeering", "KopfPeering"):
        kind, crd = KINDS[("kopf.dev/v1", kind_name)], crds[kind_name]
        assert crd["spec"]["names"]["plural"] == kind.plural
        assert crd["spec"]["scope"] == ("Namespaced" if kind.namespaced else "Cluster")
        assert [v["name"] for v in crd["spec"]["versions"] if v["served"] and v["storage"]] == ["v1"]


@pytest.mark.parametrize("name", ["default", "namespaced, custom Prometheus and queries"])
def test_the_chart_creates_the_peering_objects_the_operator_waits_for(rendered, name, monkeypatch):
    objects = rendered[name]
    settings = settings_from(chart_env(objects), monkeypatch)
    made = sorted((o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects
                  if o["apiVersion"] == "kopf.dev/v1")
    assert made == sorted((kind, namespace, settings.peering_name) for kind, namespace in peering_objects(settings))


# ---- GitOps manifests -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kustomized() -> dict[str, list[dict]]:
    """`kubectl kustomize` of the base and each overlay, in parallel."""
    paths = ["base", *(f"overlays/{o}" for o in manifests_render.OVERLAYS)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = dict(zip(paths, pool.map(
            lambda p: run(tool(KUBECTL), "kustomize", str(REPO / "manifests" / p)), paths)))
    failed = {p: r.stderr for p, r in done.items() if r.returncode != 0}
    assert not failed, failed
    return {p: documents(r.stdout) for p, r in done.items()}


def test_the_committed_manifests_are_a_fresh_render_of_the_chart():
    tool(HELM)
    stale = sorted(path for path, text in manifests_render.render_all().items()
                   if not (REPO / "manifests" / path).exists() or (REPO / "manifests" / path).read_text() != text)
    assert not stale, f"manifests/ drifted from the chart ({', '.join(stale)}): run `make manifests`"


@pytest.mark.parametrize("path", ["base", "overlays/namespaced", "overlays/edge"])
def test_every_kustomization_builds_objects_that_pass_their_schemas(kustomized, path):
    objects = kustomized[path]
    assert one(objects, "Deployment") and one(objects, "Namespace", NAMESPACE)
    for obj in objects:
        validate(obj)


def normalised(objects: list[dict]) -> dict[tuple, dict]:
    """Objects by (kind, namespace, name), env sorted by name (a patch appends what it adds)."""
    out = {}
    for obj in objects:
        obj = json.loads(json.dumps(obj))
        if obj["kind"] == "Deployment":
            for c in obj["spec"]["template"]["spec"]["containers"]:
                c["env"] = sorted(c["env"], key=lambda e: e["name"])
        out[manifests_render.key(obj)] = obj
    return out


@pytest.mark.parametrize("overlay", [None, *manifests_render.OVERLAYS])
def test_each_kustomization_is_the_chart_with_its_values(kustomized, overlay):
    path = f"overlays/{overlay}" if overlay else "base"
    values = [] if overlay is None else ["--values", str(REPO / "manifests" / path / "values.yaml")]
    result = run(tool(HELM), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds", *values)
    assert result.returncode == 0, result.stderr
    namespace = yaml.safe_load((REPO / "manifests" / "base" / "namespace.yaml").read_text())
    assert normalised(kustomized[path]) == normalised([*documents(result.stdout), namespace])


def test_a_patch_from_render_py_turns_the_base_into_the_wanted_object_under_kustomize(rendered, tmp_path):
    """What overlays do not exercise yet: an env entry and a field removed, a container field changed."""
    base = one(rendered["default"], "Deployment")
    wanted = json.loads(json.dumps(base))
    pod = wanted["spec"]["template"]["spec"]
    pod["containers"][0]["env"] = [e for e in pod["containers"][0]["env"] if e["name"] != "HETPLACE_DRY_RUN"]
    pod["containers"][0]["args"] = ["run", "--liveness", "http://0.0.0.0:8081/healthz", "-v"]
    del pod["volumes"][0]["emptyDir"]["sizeLimit"]
    wanted["spec"]["replicas"] = 1
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "deployment.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "base" / "kustomization.yaml").write_text("resources: [deployment.yaml]\n")
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay" / "patch.yaml").write_text(yaml.safe_dump(manifests_render.patch_for(base, wanted)))
    (tmp_path / "overlay" / "kustomization.yaml").write_text("resources: [../base]\npatches: [{path: patch.yaml}]\n")
    result = run(tool(KUBECTL), "kustomize", str(tmp_path / "overlay"))
    assert result.returncode == 0, result.stderr
    assert normalised(documents(result.stdout)) == normalised([wanted])


def test_the_edge_overlay_runs_one_small_instance_on_the_sites_prometheus(kustomized, monkeypatch):
    objects = kustomized["overlays/edge"]
    assert one(objects, "Deployment")["spec"]["replicas"] == 1
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert container(objects)["resources"]["limits"]["memory"] == "512Mi"
    settings = settings_from(chart_env(objects), monkeypatch)
    assert str(settings.prometheus_url) == "http://prometheus.monitoring.svc:9090/"
    assert settings.rebalance_interval_seconds == 300 and settings.max_moves_per_cycle == 2


def test_the_namespaced_overlay_drops_cluster_wide_writes(kustomized):
    objects = kustomized["overlays/namespaced"]
    for group, resource, verb, _ in grants(one(objects, "ClusterRole")):
        assert (group, resource) in CLUSTER_SCOPED or verb in READ, f"cluster-wide {verb} on {resource}"
    assert not [o for o in objects if o["kind"] == "ClusterKopfPeering"]
    assert {o["metadata"]["namespace"] for o in objects if o["kind"] == "KopfPeering"} == {"team-a", "team-b"}


# ---- the image ------------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip() if " " in line.strip() else "")
            for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#")]


def test_the_dockerfile_is_multi_stage_pinned_and_non_root():
    instructions = dockerfile_instructions()
    args = dict(value.split("=", 1) for op, value in instructions if op == "ARG" and "=" in value)
    bases = [value.split()[0] for op, value in instructions if op == "FROM"]
    assert len(bases) >= 2, "a builder stage and a runtime stage"
    for base in bases:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", image), \
            f"base image {image} is not pinned to an exact version"
    final_stage = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM"):]
    assert any(op == "COPY" and value.startswith("--from=") for op, value in final_stage), "the runtime copies the build"
    users = [value for op, value in final_stage if op == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), f"USER {users} must be numeric and not root"
    pod_user = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]["runAsUser"]
    assert users[-1].split(":")[0] == str(pod_user), "the image's user is the chart's runAsUser"
    entrypoints = [json.loads(value) for op, value in final_stage if op == "ENTRYPOINT"]
    # `hetplace`: the chart passes `run` to the operator and `gateway` to the site gateways
    assert entrypoints[-1] == ["hetplace"]
    exposed = {int(port) for op, value in final_stage if op == "EXPOSE" for port in value.split()}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert exposed == {values["settings"]["metricsPort"], values["healthPort"], *values["gateway"]["ports"].values()}


def test_the_build_context_is_only_what_the_image_needs():
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*", "everything is left out unless named"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "operator"}
    copied = {part for op, value in dockerfile_instructions() if op == "COPY" and not value.startswith("--from")
              for part in value.split()[:-1]}
    assert copied == allowed
    # pyproject.toml names README.md as the package's readme: the build needs it
    assert 'readme = "README.md"' in (REPO / "pyproject.toml").read_text()


def test_the_samples_build_with_kustomize_into_the_objects_their_files_hold():
    """`kubectl apply -k manifests/samples` (README) applies exactly the sample files' objects."""
    samples = REPO / "manifests" / "samples"
    result = run(tool(KUBECTL), "kustomize", str(samples))
    assert result.returncode == 0, result.stderr
    listed = yaml.safe_load((samples / "kustomization.yaml").read_text())["resources"]
    from_files = [doc for name in listed for doc in documents((samples / name).read_text())]
    assert normalised(documents(result.stdout)) == normalised(from_files)
    kinds = sorted({o["kind"] for o in from_files})
    assert kinds == ["ComputePool", "InferenceWorkload", "Namespace"], kinds
