"""An edit storm against the real operator (the emulator of tests/kube/, or the test cluster named by
HETPLACE_TEST_KUBECONFIG): seeded random edits, valid and not, to several workloads sharing pools
and links, then every spec put back as it was placed.

Checked at every resourceVersion the watch delivers (Deployments and routes ConfigMaps, in order):
a routes ConfigMap that once served only routes to Deployments that exist with replicas and are
available — nothing that served was lost. At the end: every workload Placed and Ready again within
two rebalance cycles of the last revert."""

from __future__ import annotations

import copy
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import kubernetes
import pytest
import yaml
from kube.fixtures import kube  # noqa: F401  (fixture)
from operator_process import FACTORY, IW, NS, apply_factory, condition, start_operator, wait  # noqa: F401

pytestmark = pytest.mark.integration
SEEDS = (7, 52)        # storms with several pool-list edits: workloads move while others are refused
NAMES = ("ws-0", "ws-1", "ws-2", "ws-3")
EDITS = 40
LABELS = "app.kubernetes.io/managed-by=hetplace"
POOLS = ("cpu-cloud-eu", "gpu-cloud-eu", "arm-factory-eu-1")


def light_workload(name: str) -> dict:
    """The factory workload at a tenth of its traffic: four of them fit the pools together."""
    body = yaml.safe_load((FACTORY / "workload.yaml").read_text())
    body["metadata"]["name"] = name
    body["spec"]["traffic"] = [{"site": "factory-eu-1", "requestsPerSecond": 2},
                               {"site": "cloud-eu", "requestsPerSecond": 10}]
    return body


# the storm: each edit a (what, spec patch) — valid ones, ones no placement meets, ones the API or hetplace refuses
STORM: tuple[tuple[str, Callable[[random.Random], dict]], ...] = (
    ("traffic", lambda rnd: {"traffic": [{"site": "factory-eu-1", "requestsPerSecond": rnd.randint(1, 25)},
                                         {"site": "cloud-eu", "requestsPerSecond": rnd.randint(1, 40)}]}),
    ("a pool list", lambda rnd: {"constraints": {"pools": [rnd.choice(POOLS)]}}),
    ("replica bounds", lambda rnd: {"replicas": {"min": 1, "max": rnd.randint(1, 6)}}),
    ("an impossible SLO", lambda rnd: {"slo": {"latencyMs": 0.01}}),
    ("impossible traffic", lambda rnd: {"traffic": [{"site": "factory-eu-1", "requestsPerSecond": 999_999},
                                                    {"site": "cloud-eu", "requestsPerSecond": 999_999}]}),
    ("an invalid percentile", lambda rnd: {"slo": {"percentile": 101}}),
    ("an accuracy floor no variant meets", lambda rnd: {"slo": {"minAccuracy": 0.99}}),
)


@dataclass
class ServingRecord:
    """Deployments and routes ConfigMaps as the watch delivered them, checked at every resourceVersion."""

    deployments: dict[str, dict] = field(default_factory=dict)
    routes: dict[str, dict[str, str]] = field(default_factory=dict)      # ConfigMap -> site -> Deployment
    served: set[str] = field(default_factory=set)                        # routes ConfigMaps that served once
    versions: int = 0
    deployments_removed: int = 0
    violations: list[str] = field(default_factory=list)

    def see(self, kind: str, event: str, obj: dict) -> None:
        name = obj["metadata"]["name"]
        if kind == "Deployment":
            if event == "DELETED":
                self.deployments.pop(name, None)
                self.deployments_removed += 1
            else:
                self.deployments[name] = obj
        elif event == "DELETED":
            self.routes.pop(name, None)
            if name in self.served:
                self.violations.append(f"rv {obj['metadata']['resourceVersion']}: routes ConfigMap {name} deleted")
        else:
            self.routes[name] = {site: _group_of(route) for site, route in _decided(obj).items()}
        self.versions += 1
        self._check(obj["metadata"]["resourceVersion"])

    def _serving(self, deployment: str) -> bool:
        d = self.deployments.get(deployment)
        return d is not None and (d.get("spec") or {}).get("replicas", 1) >= 1 and \
            (d.get("status") or {}).get("availableReplicas", 0) >= 1

    def _check(self, rv: str) -> None:
        for configmap, sites in self.routes.items():
            serving = {site: self._serving(group) for site, group in sites.items()}
            if configmap in self.served:
                self.violations += [f"rv {rv}: {configmap} routes {site} to {sites[site]}, which does not serve"
                                    for site, ok in serving.items() if not ok]
            elif serving and all(serving.values()):
                self.served.add(configmap)


def _decided(configmap: dict) -> dict[str, dict]:
    """site -> its decided route, from a routes ConfigMap (docs/routes.md); none from a hand-broken one."""
    import json
    try:
        return {site: routes[0] for site, routes in json.loads(configmap["data"]["routes.json"])["sites"].items()}
    except (KeyError, TypeError, ValueError, IndexError):
        return {}


def _group_of(route: dict) -> str:
    """The Deployment a route names (its HTTP endpoint is that group's Service: same name)."""
    return route["http"].split("//", 1)[1].split(".", 1)[0]


class Recorder:
    """Lists, then watches, Deployments and ConfigMaps hetplace manages in NS; events replayed in
    resourceVersion order into a ServingRecord."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.events: list[tuple[int, str, str, dict]] = []
        self.lock = threading.Lock()
        self.watches: list[kubernetes.watch.Watch] = []
        self.threads: list[threading.Thread] = []
        self.initial: list[tuple[str, dict]] = []
        self.stopped = threading.Event()
        self.problems: list[str] = []

    def start(self) -> Recorder:
        apps, core = kubernetes.client.AppsV1Api(self.cluster.client), kubernetes.client.CoreV1Api(self.cluster.client)
        for kind, api_version, lister in (("Deployment", "apps/v1", apps.list_namespaced_deployment),
                                          ("ConfigMap", "v1", core.list_namespaced_config_map)):
            listed = self.cluster.request("GET", self.cluster.path(api_version, kind, NS),
                                          query=[("labelSelector", LABELS)])
            self.initial += [(kind, o) for o in listed.get("items", [])]
            watch = kubernetes.watch.Watch()
            self.watches.append(watch)
            thread = threading.Thread(target=self._follow, args=(watch, kind, lister, listed["metadata"]["resourceVersion"]),
                                      daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _follow(self, watch, kind: str, lister, resource_version: str) -> None:
        """Every event after `resource_version`, resuming from the last one seen when a stream ends."""
        while not self.stopped.is_set():
            try:
                for event in watch.stream(lister, NS, label_selector=LABELS, resource_version=resource_version,
                                          timeout_seconds=300, deserialize=False):
                    obj = event["object"]
                    if event["type"] not in ("ADDED", "MODIFIED", "DELETED"):
                        self.problems.append(f"{kind}: {event['type']} {str(obj)[:200]}")
                    else:
                        resource_version = obj["metadata"]["resourceVersion"]
                        with self.lock:
                            self.events.append((int(resource_version), kind, event["type"], obj))
            except Exception as cut:  # noqa: BLE001 — a stream cut (stop, or the server ending it): resume or end
                self.problems.append(f"{kind}: {cut!r}"[:300])
                if self.stopped.is_set():
                    return

    def stop(self) -> ServingRecord:
        self.stopped.set()
        for watch in self.watches:
            watch.stop()
        record = ServingRecord()
        for kind, obj in self.initial:
            record.see(kind, "ADDED", obj)
        with self.lock:
            events = sorted(self.events, key=lambda e: e[0])
        for _, kind, event, obj in events:
            record.see(kind, event, obj)
        return record


def all_placed_and_ready(cluster) -> bool:
    for name in NAMES:
        w = cluster.get(*IW, name, NS)
        status = w.get("status") or {}
        if not (status.get("observedGeneration") == w["metadata"]["generation"] and status.get("phase") == "Placed"
                and condition(w, "Ready").get("status") == "True"):
            return False
    return True


def put_back(cluster, name: str, spec: dict[str, Any]) -> None:
    """The spec as it was placed, whole (a replace, retried on a conflict with the operator's writes)."""
    for _ in range(50):
        current = cluster.get(*IW, name, NS)
        current["spec"] = copy.deepcopy(spec)
        current.pop("status", None)
        try:
            cluster.replace(current)
            return
        except Exception as refused:  # noqa: BLE001 — a 409 from a concurrent status write: read again
            if "409" not in str(refused):
                raise
    raise AssertionError(f"{name}: could not put its spec back")


@pytest.mark.parametrize("seed, interval", [(SEEDS[0], "4"), (SEEDS[1], "3600")],
                         ids=[f"seed {SEEDS[0]}, a rebalance cycle every 4 s",
                              f"seed {SEEDS[1]}, no rebalance cycle: the events alone converge"])
def test_an_edit_storm_loses_nothing_that_serves_and_converges_when_reverted(kube, start_operator, seed,  # noqa: F811
                                                                            interval):
    operator = start_operator(rebalance_interval_seconds=interval)
    apply_factory(kube, **light_workload("ws-placeholder")["spec"])       # the pools (and one more workload)
    placed = {}
    for name in NAMES:
        kube.create(light_workload(name))
    wait(kube, all_placed_and_ready, operator, 60, "every workload placed and ready before the storm")
    for name in NAMES:
        placed[name] = copy.deepcopy(kube.get(*IW, name, NS)["spec"])
    recorder = Recorder(kube).start()

    rnd = random.Random(seed)
    refused_by_api = 0
    for _ in range(EDITS):
        name = rnd.choice(NAMES)
        _, patch = rnd.choice(STORM)
        try:
            kube.patch(*IW, name, {"spec": patch(rnd)}, NS)
        except Exception as refused:  # noqa: BLE001 — a real API server refuses some by the CRD's schema
            assert "422" in str(refused) or "Invalid" in str(refused), refused
            refused_by_api += 1
        time.sleep(rnd.uniform(0.0, 0.25))      # the storm's pace, not a wait for anything

    for name in NAMES:
        put_back(kube, name, placed[name])
    reverted_at = operator.metric("hetplace_rebalance_cycles_total") or 0
    wait(kube, all_placed_and_ready, operator, 60, "every workload Placed and Ready after the revert")
    cycles = (operator.metric("hetplace_rebalance_cycles_total") or 0) - reverted_at
    record = recorder.stop()

    assert cycles <= 2, f"converged only after {cycles:g} rebalance cycles"
    assert record.deployments_removed >= 1, f"the storm moved nothing ({record.versions} versions seen; the watch: {recorder.problems[:5]})"
    assert len(record.served) == len(NAMES) + 1
    assert record.violations == [], "\n".join(record.violations[:20])
    assert "rebalance cycle failed" not in operator.log_path.read_text()
