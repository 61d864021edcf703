"""The real operator (`hetplace run`, a subprocess) against the Kubernetes API and the factory
example applied as a user would: the process, the fixture that starts it, and the helpers tests
wait with (by polling with a deadline). Shared by the operator's integration tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from kube.fixtures import kube  # noqa: F401  (fixture)
from prometheus_client.parser import text_string_to_metric_families
from servers import free_ports

from hetplace.site.routes import from_configmap

REPO = Path(__file__).resolve().parents[1]
FACTORY = REPO / "manifests" / "examples" / "factory"
IW = ("hetplace.io/v1alpha1", "InferenceWorkload")
POOL = ("hetplace.io/v1alpha1", "ComputePool")
NS = "factory"
NAME = "defect-detector"
CPU_GROUP = "defect-detector-cpu-cloud-eu-openvino-int8"
GPU_GROUP = "defect-detector-gpu-cloud-eu-trt-fp16"
ARM_GROUP = "defect-detector-arm-factory-eu-1-trt-int8-orin"


class OperatorProcess:
    """`python -m hetplace run` logged in through the cluster's kubeconfig, with short intervals."""

    def __init__(self, cluster, home: Path, priority: int = 10, **settings: str) -> None:
        self.metrics_port, self.liveness_port = free_ports(2)
        self.log_path = home / f"operator-{priority}-{self.metrics_port}.log"
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig_path),
               "HETPLACE_METRICS_PORT": str(self.metrics_port), "HETPLACE_METRICS_ADDRESS": "127.0.0.1",
               "HETPLACE_MOVE_POLL_SECONDS": "0.3", "HETPLACE_REBALANCE_INTERVAL_SECONDS": "1",
               "HETPLACE_PEERING_LIFETIME_SECONDS": "3", "HETPLACE_WATCH_TIMEOUT_SECONDS": "30",
               "HETPLACE_PROBE_MODELS": "false", "HETPLACE_SOLVER_TIME_LIMIT_SECONDS": "5",
               "HETPLACE_DRAIN_SECONDS": "1",
               **{f"HETPLACE_{k.upper()}": v for k, v in settings.items()}}
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hetplace", "run", "--priority", str(priority),
                 "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def metric(self, name: str, **labels: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def start_operator(kube, tmp_path):  # noqa: F811
    started: list[OperatorProcess] = []

    def start(priority: int = 10, **settings: str) -> OperatorProcess:
        operator = OperatorProcess(kube, tmp_path, priority, **settings)
        started.append(operator)
        return operator

    yield start
    for operator in started:
        operator.stop()


# --- the factory example, applied as a user would ---------------------------------------------------

def factory_pools(only: tuple[str, ...] | None = None) -> list[dict]:
    pools = [yaml.safe_load(p.read_text()) for p in sorted((FACTORY / "pools").glob("*.yaml"))]
    return [p for p in pools if only is None or p["metadata"]["name"] in only]


def apply_factory(cluster, pools: tuple[str, ...] | None = None, **spec_changes) -> dict:
    cluster.create_namespace(NS)
    for pool in factory_pools(pools):
        cluster.create(pool)
    workload = yaml.safe_load((FACTORY / "workload.yaml").read_text())
    workload["spec"].update(spec_changes)
    return cluster.create(workload)


def workload(cluster) -> dict:
    return cluster.get(*IW, NAME, NS)


def condition(obj: dict, kind: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


def group_names(cluster, kind: str = "Deployment") -> list[str]:
    return sorted(o["metadata"]["name"] for o in cluster.list("apps/v1" if kind == "Deployment" else "v1", kind, NS)
                  if kind != "ConfigMap" or o["metadata"]["name"].startswith(NAME))


def pools_placed(cluster) -> list[str]:
    return sorted(p["pool"] for p in (workload(cluster).get("status") or {}).get("placements", []))


def ready_on(pools: list[str]):
    """A predicate: the workload serves from exactly `pools`, decided for its generation, and Ready."""
    def check(cluster) -> bool:
        w = workload(cluster)
        status = w.get("status") or {}
        return (status.get("observedGeneration") == w["metadata"]["generation"] and status.get("phase") == "Placed"
                and condition(w, "Ready").get("status") == "True" and pools_placed(cluster) == pools)
    return check


def wait(cluster, predicate, operator: OperatorProcess, timeout_s: float = 30, what: str = ""):
    try:
        return cluster.wait_for(lambda: predicate(cluster), timeout_s, 0.1, what)
    except AssertionError as timed_out:
        w = workload(cluster)
        raise AssertionError(f"{timed_out}\nstatus: {json.dumps((w or {}).get('status'), indent=1)[:3000]}\n"
                             f"operator log:\n{operator.log()}") from None


def event_reasons(cluster) -> list[str]:
    return [e["reason"] for e in cluster.list("v1", "Event", NS)
            if e.get("involvedObject", {}).get("name") == NAME]


def routes(cluster) -> dict:
    """site -> its decided route, as the routes document (docs/routes.md) gives it."""
    cm = cluster.get("v1", "ConfigMap", f"{NAME}-routes", NS)
    return {site: options[0].wire() for site, options in from_configmap(cm).sites.items()}


def writes(cluster) -> list[str]:
    """Writes to anything but kopf's peering object (its keep-alives are kopf's own)."""
    return [f"{call.method} {call.path}" for call in cluster.requests()
            if call.method not in ("GET",) and "kopfpeerings" not in call.path]
