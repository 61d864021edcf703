"""`hetplace gateway --workload factory/defect-detector` in its in-cluster mode, watching the routes
ConfigMap the real operator (`hetplace run`) writes, both logged in to the Kubernetes API through the
same kubeconfig: the emulator of tests/kube/ by default, or the test cluster named by
HETPLACE_TEST_KUBECONFIG. The gateway waits, unready, for a ConfigMap that does not exist yet; follows
the operator's routes through a make-before-break move within a bounded time; and keeps its last good
routes when the ConfigMap is edited into garbage, until the operator restores it (docs/routes.md).

No pool serves here (the Services do not resolve on this machine): the tests read the gateway's
routes (`GET /v2/hetplace/routes`), its readiness and its metrics, never an inference."""

from __future__ import annotations

import os
import time

import pytest
from kube.fixtures import kube  # noqa: F401  (fixture)
from operator_process import (  # noqa: F401  (start_operator: fixture)
    IW, NAME, NS, apply_factory, ready_on, start_operator, wait)
from servers import GatewayProcess, start_gateway, wait_for

from hetplace.site.routes import RoutesError, from_configmap

pytestmark = pytest.mark.integration

SITE = "factory-eu-1"
WORKLOAD = f"{NS}/{NAME}"
ROUTES = f"{NAME}-routes"
FOLLOW_WITHIN_S = 5.0       # a watch event, not a poll: the gateway has no interval of its own to wait out


def gateway_in_cluster(kube, home) -> GatewayProcess:  # noqa: F811
    """The gateway watching the detector's routes ConfigMap, logged in as the operator is: through
    the cluster's kubeconfig (KUBECONFIG), never a service account this machine may happen to have."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE_")}
    env["KUBECONFIG"] = str(kube.kubeconfig_path)
    return start_gateway(SITE, home, "--workload", WORKLOAD, env=env, until="/v2/health/live")


def served_routes(gateway: GatewayProcess) -> dict | None:
    """The detector's routes at this site as the gateway serves them (None: it has none)."""
    document = gateway.routes()
    assert document["site"] == SITE
    return next((w for w in document["workloads"] if w["workload"] == WORKLOAD), None)


def configmap_routes(kube) -> dict | None:  # noqa: F811
    """The same, as the operator's ConfigMap holds them now (None: no ConfigMap, or no usable one)."""
    configmap = kube.get("v1", "ConfigMap", ROUTES, NS)
    try:
        document = from_configmap(configmap) if configmap else None
    except RoutesError:
        return None
    if document is None:
        return None
    return {"generation": document.generation, "routes": [r.wire() for r in document.sites.get(SITE, ())]}


def decided_pool(routes: dict | None) -> str | None:
    return next((r["pool"] for r in routes["routes"] if r["decided"]), None) if routes else None


def same_routes(served: dict | None, held: dict | None) -> bool:
    """The gateway serves what the ConfigMap holds: its generation, and every route field for field."""
    return (served is not None and held is not None and served["generation"] == held["generation"]
            and [{k: v for k, v in r.items() if k != "down"} for r in served["routes"]] == held["routes"])


def test_the_gateway_waits_for_the_routes_and_follows_the_operators_move(kube, start_operator, tmp_path):  # noqa: F811
    gateway = gateway_in_cluster(kube, tmp_path)
    try:
        assert gateway.status("/v2/health/ready") == 503, "no routes yet: not ready"
        assert served_routes(gateway) is None
        operator = start_operator()
        apply_factory(kube)
        wait(kube, ready_on(["cpu-cloud-eu"]), operator)
        wait_for(lambda: gateway.status("/v2/health/ready") == 200, 10, "the gateway to be ready once routes appear")
        wait_for(lambda: same_routes(served_routes(gateway), configmap_routes(kube)), 10,
                 "the gateway to serve the ConfigMap's routes")
        assert decided_pool(served_routes(gateway)) == "cpu-cloud-eu"

        kube.patch(*IW, NAME, {"spec": {"constraints": {"pools": ["gpu-cloud-eu"]}}}, NS)
        switched_at = None          # when the test first saw the ConfigMap name the new pool
        deadline = time.monotonic() + 60
        while True:
            if switched_at is None and decided_pool(configmap_routes(kube)) == "gpu-cloud-eu":
                switched_at = time.monotonic()
            if decided_pool(served := served_routes(gateway)) == "gpu-cloud-eu":
                break
            now = time.monotonic()
            assert now < deadline, f"the operator did not switch routes within 60 s: {configmap_routes(kube)}"
            assert switched_at is None or now - switched_at <= FOLLOW_WITHIN_S, \
                f"the gateway still serves {served} {now - switched_at:.1f} s after the ConfigMap switched"
            time.sleep(0.05)
        # make-before-break: the group being drained is still a fallback when routes switch
        assert [(r["pool"], r["draining"]) for r in served["routes"]] == [("gpu-cloud-eu", False),
                                                                          ("cpu-cloud-eu", True)], served
        wait(kube, ready_on(["gpu-cloud-eu"]), operator, 40, "the move to finish")
        wait_for(lambda: same_routes(served_routes(gateway), configmap_routes(kube)), FOLLOW_WITHIN_S,
                 "the gateway to serve the routes left once the old group is gone")
        assert [r["pool"] for r in served_routes(gateway)["routes"]] == ["gpu-cloud-eu"]
        assert gateway.sample("hetplace_gateway_routes_reload_errors_total") == 0
    finally:
        assert gateway.stop() == 0, gateway.log.read_text()[-3000:]
    assert "WARNING" not in gateway.log.read_text(), "a clean run and stop, with nothing to warn of"


def test_a_routes_configmap_edited_into_garbage_keeps_the_last_good_routes(
        kube, start_operator, tmp_path):  # noqa: F811
    operator = start_operator()
    apply_factory(kube)
    wait(kube, ready_on(["cpu-cloud-eu"]), operator)
    gateway = gateway_in_cluster(kube, tmp_path)
    try:
        wait_for(lambda: same_routes(served_routes(gateway), configmap_routes(kube)), 10,
                 "the gateway to serve the ConfigMap's routes")
        good = served_routes(gateway)
        loaded_at = gateway.sample("hetplace_gateway_routes_last_load_timestamp_seconds")
        assert gateway.sample("hetplace_gateway_routes_reload_errors_total") == 0 and loaded_at > 0
        operator.stop()         # so that the garbage stays while the gateway is looked at
        kube.patch("v1", "ConfigMap", ROUTES, {"data": {"routes.json": '{"version": 2, "sites": {"factory-eu-'}},
                   NS, field_manager="kubectl-edit")
        wait_for(lambda: gateway.sample("hetplace_gateway_routes_reload_errors_total") == 1, FOLLOW_WITHIN_S,
                 "the unusable ConfigMap to be counted")
        assert served_routes(gateway) == good and gateway.status("/v2/health/ready") == 200
        assert gateway.sample("hetplace_gateway_routes_last_load_timestamp_seconds") == loaded_at
        assert "routes not reloaded" in gateway.log.read_text() and ROUTES in gateway.log.read_text()

        restarted = start_operator(priority=11)
        wait(kube, lambda c: same_routes(good, configmap_routes(c)), restarted, 30,
             "the operator to restore the routes")
        wait_for(lambda: gateway.sample("hetplace_gateway_routes_last_load_timestamp_seconds") > loaded_at,
                 FOLLOW_WITHIN_S, "the gateway to load the restored routes")
        assert served_routes(gateway) == good
        assert gateway.sample("hetplace_gateway_routes_reload_errors_total") == 1
    finally:
        assert gateway.stop() == 0, gateway.log.read_text()[-3000:]
