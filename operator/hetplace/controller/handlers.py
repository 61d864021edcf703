"""The kopf handlers, thin: indexes over ComputePools, Nodes, InferenceWorkloads and the objects
hetplace owns; one reconcile for a new workload, a new generation of its spec, and each workload
listed at start (resuming), queued by name for a few workers (workqueue.py) so that a handler
returns at once; a Deployment's change progresses its workload's move (queued first); the rebalance
loop starts with the operator and runs where kopf's peering lets handlers run. Everything they do
is `Operator`'s (runtime.py).

Workloads are watched with an event handler rather than kopf's create/update/resume handlers:
status.observedGeneration already says which generation was decided, so kopf's own record of the
last handled spec (an annotation patch per workload) is not needed, nor its handler bookkeeping."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from hetplace.config import Settings
from hetplace.controller.inventory import child_view, node_view, pool_view

GROUP, VERSION = "hetplace.io", "v1alpha1"
MANAGED = {"app.kubernetes.io/managed-by": "hetplace"}
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=hetplace"
OWNED_KINDS = (("apps", "deployments"), ("", "services"), ("", "configmaps"))
KOPF_PREFIX = "hetplace.io"
log = logging.getLogger("hetplace")


def kopf_settings(settings: Settings) -> kopf.OperatorSettings:
    """kopf's settings for hetplace."""
    kopf_settings = kopf.OperatorSettings()
    # event and index handlers keep no state; should kopf ever store any, annotations, not status
    # (status is hetplace's own schema)
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration")
    kopf_settings.posting.enabled = False        # hetplace records its own Events, one per decision
    kopf_settings.watching.server_timeout = settings.watch_timeout_seconds
    kopf_settings.watching.client_timeout = settings.watch_timeout_seconds + 10
    kopf_settings.networking.error_backoffs = [0.5, 1, 2, 5]
    kopf_settings.peering.lifetime = settings.peering_lifetime_seconds
    # kopf's per-object worker keeps the last event's body while it idles; hetplace's handlers are
    # quick (a workload's reconcile waits in the operator's own queue as a name), so idle briefly
    kopf_settings.queueing.idle_timeout = 1.0
    # the API server sends only the objects hetplace owns (kopf's own label filters are client-side:
    # without this it would hold every Deployment, Service and ConfigMap of the cluster), and one
    # that stops matching — its label removed — as a deletion, which the handlers below see
    kopf_settings.watching.label_selectors[_owned_kinds] = MANAGED_SELECTOR
    return kopf_settings


def _owned_kinds(resource: kopf.Resource) -> bool:
    return (resource.group, resource.plural) in OWNED_KINDS


class SharedMemo(kopf.Memo):
    """kopf's memo, one for every object. kopf gives each object it sees a shallow copy of the
    operator's memo, for per-object state; hetplace keeps none there (its handlers read the operator
    and the loop's stop), and a copy is ~0.2 KB for each of the four objects a workload watches."""

    def __copy__(self) -> SharedMemo:
        return self


def make_registry() -> kopf.OperatorRegistry:
    """A registry of hetplace's handlers (its own, so tests can run several operators in one process)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # as the kubernetes client (and k8s.client.Kube) does: the pod's service account, else KUBECONFIG
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry, id="start")
    async def start(memo: kopf.Memo, **kwargs: Any) -> None:
        operator = memo.operator
        operator.indices = {name: kwargs[name] for name in
                            ("pools", "nodes", "workloads", "deployments", "services", "configmaps")}
        operator.event_loop = asyncio.get_running_loop()
        memo.stop = asyncio.Event()
        operator.start_workers()
        memo.loop_task = asyncio.create_task(operator.run_loop(memo.stop), name="hetplace rebalance loop")

    @kopf.on.cleanup(registry=registry, id="stop")
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        memo.stop.set()
        memo.operator.wake_soon()
        await asyncio.wait_for(memo.loop_task, timeout=30)
        await memo.operator.stop_workers()

    @kopf.index(GROUP, VERSION, "computepools", registry=registry, id="pools")
    async def pools(body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> dict:
        return {name: memo.operator.pool_indexed(pool_view(dict(body)))}

    @kopf.on.event(GROUP, VERSION, "computepools", registry=registry, id="pool-gone")
    async def pool_gone(type: str, name: str, memo: kopf.Memo, **_: Any) -> None:
        memo.operator.indexes_full.set()        # kopf runs handlers only once every index is full
        if type == "DELETED":
            memo.operator.pool_deleted(name)

    @kopf.index("", "v1", "nodes", registry=registry, id="nodes")
    async def nodes(body: kopf.Body, name: str, **_: Any) -> dict:
        return {name: node_view(body)}

    @kopf.index(GROUP, VERSION, "inferenceworkloads", registry=registry, id="workloads")
    async def workloads(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict:
        view = memo.operator.indexed(dict(body))
        return {view.key: view}

    @kopf.on.event(GROUP, VERSION, "inferenceworkloads", registry=registry, id="workload")
    async def workload(type: str | None, namespace: str, name: str, body: kopf.Body, memo: kopf.Memo,
                       **_: Any) -> None:
        memo.operator.indexes_full.set()
        key = f"{namespace}/{name}"
        if type == "DELETED":       # what it held is free again (its children go with it, by owner reference)
            memo.operator.workload_deleted(key, body.get("metadata", {}).get("uid", ""))
        elif memo.operator.wants_a_look(key, body, listed=type is None):
            memo.operator.queue.add(key)

    async def owned(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict:
        child = child_view(dict(body))
        if child is None:
            return {}
        memo.operator.child_seen(child)      # before the index replaces what it held
        return {child.workload: child}

    async def owned_gone(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if type == "DELETED" and (child := child_view(dict(body))) is not None:
            memo.operator.child_gone(child)

    for plural, group in (("deployments", "apps"), ("services", ""), ("configmaps", "")):
        kopf.index(group, "v1", plural, labels=MANAGED, registry=registry, id=plural)(owned)
    for plural in ("services", "configmaps"):     # no label filter: one whose label was removed leaves as DELETED
        kopf.on.event("", "v1", plural, registry=registry, id=f"{plural[:-1]}-gone")(owned_gone)

    @kopf.on.event("apps", "v1", "deployments", registry=registry, id="deployment-changed")
    async def deployment_changed(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        child = child_view(dict(body))
        if child is None:
            return
        if type == "DELETED":
            memo.operator.child_gone(child)
        changed = memo.operator.availability_changed(child, gone=type == "DELETED")
        if changed and type is not None:        # a listing (start, watch renewed): resuming looks at the workload
            memo.operator.progress(child.workload)

    return registry
