"""The running operator: reconciles one workload at a time per key, progresses moves, and (on the
leader) rebalances the fleet. Thin: the decisions are `reconcile` and the engine's; the API calls
are `k8s.client`; this file orders them, holds the per-workload locks and counts the metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from hetplace.config import Settings
from hetplace.api.status import ComputePoolStatus
from hetplace.controller.drift import GONE, DriftWatch, content_digest
from hetplace.controller.fleet_ledger import FleetLedger
from hetplace.controller.inventory import (
    Child,
    Picture,
    PoolView,
    ValidatedSpecs,
    WorkloadView,
    live_pool,
    served_by,
    workload_view,
)
from hetplace.controller.leader import is_leader, peering_objects
from hetplace.controller.moves import GroupKey
from hetplace.controller.reconcile import (
    Choice,
    Note,
    Outcome,
    Telemetry,
    choose,
    converge,
    deployments_ready,
    engine_workload,
    snapshot_for,
    status_patch,
)
from hetplace.engine.from_api import node_cost_per_hour
from hetplace.engine.snapshot import Resources, Workload
from hetplace.engine.usage import taken_by
from hetplace.engine.decision import Decision
from hetplace.engine.observed import TrafficObservation, correction_factor, with_links
from hetplace.telemetry.prometheus import (
    GroupRef,
    ServiceTimeTelemetry,
    SiteReading,
    SiteTelemetry,
    latency_quantile_s,
)
from hetplace.telemetry.triton import triton_endpoint
from hetplace.controller.planner import PlanningFailed, plan_in_child
from hetplace.controller.workqueue import WorkQueue
from hetplace.engine.rebalance import Running
from hetplace.k8s.client import Kube, KubeError
from hetplace.k8s.status import Observed, pool_status, two_digits
from hetplace.metrics import OperatorMetrics
from hetplace.render.names import group_name

log = logging.getLogger("hetplace")
Probe = Callable[[str, str, float], Any]        # (endpoint, model, timeout_s) -> .ready, .reason, .message
API_VERSION = "hetplace.io/v1alpha1"
# workloads reconciled at once: each mostly waits for the API (its calls run in asyncio's threads)
RECONCILE_WORKERS = 8
RESUMED = ("taking over after a pause: restarting to read the cluster afresh (kopf's indexes are not "
           "refreshed while paused)")


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


@dataclass
class Operator:
    """One operator process's state: settings, API client, metrics and what the indexes hold."""

    settings: Settings
    kube: Kube
    metrics: OperatorMetrics
    identity: str = ""
    priority: int = 0
    standalone: bool = False
    probe: Probe | None = None
    clock: Callable[[], datetime] = utc_now
    indices: Mapping[str, Any] = field(default_factory=dict)
    telemetry: Telemetry = field(default_factory=Telemetry)
    link_telemetry: Any = None
    service_telemetry: ServiceTimeTelemetry | None = None
    site_telemetry: SiteTelemetry | None = None
    # a lock per workload while someone holds or waits for it (10,000 idle locks were ~3 MB)
    locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(default_factory=weakref.WeakValueDictionary)
    fleet: FleetLedger = field(init=False)
    specs: ValidatedSpecs = field(default_factory=ValidatedSpecs)
    available: dict[tuple[str, str], bool] = field(default_factory=dict)   # Deployment -> available, as last seen
    timed_out: dict[str, tuple[str, float]] = field(default_factory=dict)
    last_valid_pools: dict[str, PoolView] = field(default_factory=dict)
    reported_conflicts: set[tuple[str, str]] = field(default_factory=set)
    refused: dict[str, int] = field(default_factory=dict)      # key -> generation the API refused to apply
    retries: dict[str, int] = field(default_factory=dict)      # key -> failed attempts in a row
    resumed: set[str] = field(default_factory=set)             # uids looked at once since the start
    queue: WorkQueue = field(default_factory=WorkQueue)        # workloads to reconcile
    drift: DriftWatch = field(default_factory=DriftWatch)      # owned objects changed by someone else
    # workloads whose spec was decided and could not be placed as asked: decided again when something
    # that could change the answer changes (`recheck_refused`), and at least every rebalance cycle
    awaiting: set[str] = field(default_factory=set)
    recheck_due: bool = False
    unread_said: tuple[str, ...] = ()           # telemetry not used, and why, as last logged
    workers: list[asyncio.Task] = field(default_factory=list)
    telemetry_read_at: float = float("-inf")
    telemetry_fresh_at: float = 0.0
    was_follower: bool = False
    stop_flag: asyncio.Event | None = None
    # kopf runs its handlers only once every index is full: the first one to run sets this, and the
    # loop starts then (pools and moves are not judged on a half-read cluster)
    indexes_full: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.fleet = FleetLedger(self.to_engine)

    def restart(self, why: str) -> None:
        """Stop the operator (its pod restarts with a fresh view of the cluster)."""
        log.warning("%s", why)
        if self.stop_flag is not None and not self.stop_flag.is_set():
            self.stop_flag.set()
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    event_loop: asyncio.AbstractEventLoop | None = None

    def wake_soon(self) -> None:
        """Run the leader's cycle now (from any thread): pools changed, or the operator stops."""
        if self.event_loop is not None:
            self.event_loop.call_soon_threadsafe(self.wake.set)

    # ---- what the indexes hold ------------------------------------------------------------------
    def picture(self, only: WorkloadView | None = None) -> Picture:
        """What the indexes hold: everything, or `only` one workload with its own children (what one
        decision reads: the other workloads' charges come from the fleet ledger)."""
        def values(name: str, key: str | None = None):
            index = self.indices.get(name) or {}
            if key is not None:
                return list(index.get(key, ()))
            return [v for store in index.values() for v in store]
        pool_views = {p.name: p for p in values("pools")}
        pools = {name: p.valid for name, p in pool_views.items() if p.valid is not None}
        key = only.key if only is not None else None
        children: dict[str, list[Child]] = {}
        for c in (*values("deployments", key), *values("services", key), *values("configmaps", key)):
            children.setdefault(c.workload, []).append(c)
        workloads = {only.key: only} if only is not None else {v.key: v for v in values("workloads")}
        return Picture(pools=pools, pool_views=pool_views, nodes=tuple(values("nodes")), workloads=workloads,
                       children={k: tuple(v) for k, v in children.items()})

    def pool_indexed(self, view: PoolView) -> PoolView:
        """A ComputePool as the index keeps it: a refused edit keeps the last accepted spec (with the
        problem reported), so bad input never moves what runs there; a new spec rebalances now."""
        before = self.last_valid_pools.get(view.name)
        if view.valid is not None:
            self.last_valid_pools[view.name] = view
            if before is None or before.generation != view.generation:
                self.wake_soon()
            return view
        if before is not None:
            return dataclasses.replace(view, valid=before.valid)
        return view

    def pool_deleted(self, name: str) -> None:
        self.last_valid_pools.pop(name, None)
        for view in self.picture().workloads.values():     # status must stop saying it serves there
            if any(g.pool == name for d in (view.running, view.migration_target) if d is not None for g in d.groups):
                self.queue.add(view.key, urgent=True)
        self.recheck_due = True
        self.wake_soon()

    def workload_deleted(self, key: str, uid: str) -> None:
        self.fleet.forget(key, uid)
        self.specs.forget(key)
        self.retries.pop(key, None)
        self.queue.forget(key)
        self.resumed.discard(uid)
        self.timed_out.pop(key, None)
        self.drift.forget(key)
        if key in self.awaiting:
            self.awaiting.discard(key)
        else:
            self.recheck_due = True     # what it held is free again
        self.metrics.forget(*key.split("/", 1))

    def to_engine(self, view: WorkloadView) -> Workload:
        return engine_workload(view, self.telemetry)

    def indexed(self, body: Mapping[str, Any]) -> WorkloadView:
        """The workload index saw `body`: charge what it holds; what the index keeps of it."""
        kept = workload_view(body, self.specs, keep=True)
        if self.fleet.update(kept):
            self.recheck_due = True     # another workload's charge moved or was released
        if kept.accepted and kept.kept_status is not None and kept.kept_status.refused_at(kept.generation):
            self.awaiting.add(kept.key)
        else:
            self.awaiting.discard(kept.key)
        return kept

    def recheck_refused(self) -> None:
        """Decide again every workload whose spec could not be placed as asked (it may fit now)."""
        self.recheck_due = False
        for key in list(self.awaiting):
            if self.refused.get(key) is None:
                self.queue.add(key)

    # ---- the objects hetplace owns ------------------------------------------------------------------
    def indexed_content(self, key: str, kind: str, name: str) -> int | None:
        """The content digest the index holds of an owned object (None: not held)."""
        plural = {"Deployment": "deployments", "Service": "services", "ConfigMap": "configmaps"}[kind]
        held = tuple((self.indices.get(plural) or {}).get(key, ()))
        return next((c.content for c in held if c.kind == kind and c.name == name), None)

    def child_seen(self, child: Child) -> None:
        """The index is about to hold `child`: if it changed and no write of hetplace's explains it,
        its workload looks again (and compares what it applied with what is live)."""
        if child.workload not in (self.indices.get("workloads") or {}):
            return      # its workload is gone (the garbage collector takes its objects): nothing to keep
        before = self.indexed_content(child.workload, child.kind, child.name)
        if self.drift.seen(child.workload, child.kind, child.namespace, child.name, child.content, before):
            self.progress(child.workload)

    def child_gone(self, child: Child) -> None:
        """An owned object was deleted: unless hetplace pruned it, its workload re-creates it."""
        if child.workload not in (self.indices.get("workloads") or {}):
            return
        if self.drift.seen(child.workload, child.kind, child.namespace, child.name, GONE, None):
            self.progress(child.workload)

    def wants_a_look(self, key: str, body: Mapping[str, Any], listed: bool = False) -> bool:
        """A workload event to act on: a generation not decided yet (created, or its spec changed),
        unless the API refused this generation's objects (status says why; a new spec tries again);
        and each workload once as it is first listed (resuming after a start)."""
        meta = body.get("metadata") or {}
        first_seen = meta.get("uid") not in self.resumed
        self.resumed.add(meta.get("uid"))
        if listed and first_seen:
            self.drift.check_everything(key)      # what changed while no operator watched
            return True
        generation = meta.get("generation")
        return (body.get("status") or {}).get("observedGeneration") != generation and \
            self.refused.get(key) != generation

    def start_workers(self) -> None:
        """Start the reconcile workers (on the running event loop)."""
        self.workers = [asyncio.create_task(self._work(), name=f"hetplace reconcile worker {n}")
                        for n in range(RECONCILE_WORKERS)]

    async def stop_workers(self) -> None:
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        self.workers = []

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.look(key)
            finally:
                self.queue.done(key)

    async def look(self, key: str) -> None:
        """Reconcile one workload; a failure the API may get over is tried again with a backoff
        (2 s doubling to a minute) until a reconcile of it succeeds."""
        namespace, name = key.split("/", 1)
        try:
            await self.reconcile({"metadata": {"namespace": namespace, "name": name}})
        except KubeError as failed:
            if failed.refused:
                self.retries.pop(key, None)
                return      # reported in status; retrying the same request would not help
            log.warning("%s: %s (trying again)", key, failed)
        except Exception:
            log.exception("%s: reconcile failed (trying again)", key)
        else:
            self.retries.pop(key, None)
            return
        attempt = self.retries[key] = self.retries.get(key, 0) + 1
        asyncio.get_running_loop().call_later(min(60.0, 2.0 ** attempt), self._look_again, key)

    def _look_again(self, key: str) -> None:
        if self.retries.get(key):       # not when a reconcile of it succeeded meanwhile, or it was deleted
            self.queue.add(key)

    def lock(self, key: str) -> asyncio.Lock:
        """The workload's lock, for `async with` only: it is kept while referenced, so a caller must
        hold the object from acquire to release (as `async with` does)."""
        lock = self.locks.get(key)
        if lock is None:
            lock = self.locks[key] = asyncio.Lock()
        return lock

    # ---- one workload ---------------------------------------------------------------------------
    async def reconcile(self, body: Mapping[str, Any], planned: Planned | None = None) -> Outcome | None:
        """Decide (or take a `planned` move), check readiness, take the next step: under the
        workload's lock, on the workload as the API holds it now (an event's body or a plan may be
        stale by then). A planned move made for another generation or placement is dropped."""
        meta = body.get("metadata", {})
        key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
        async with self.lock(key):
            if self.was_follower:       # kopf resumed this instance after a pause: its indexes missed things
                self.restart(RESUMED)
                return None
            fresh = await asyncio.to_thread(self.kube.get, API_VERSION, "InferenceWorkload", meta.get("namespace"),
                                            meta.get("name"))
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return None         # deleted meanwhile, or being deleted (its objects go with it)
            view = workload_view(fresh, self.specs)
            if planned is not None and not planned.still_applies(view):
                return None
            started = time.perf_counter()
            picture = self.picture(only=view)
            if view.running is None:        # status cannot say what serves: the objects can
                serving = served_by(view.key, picture.children.get(view.key, ()), fresh["metadata"].get("uid"))
                if serving is not None:
                    view = dataclasses.replace(view, running=serving)
                    picture.workloads = {view.key: view}
            suspects, first_look = self.drift.take(view.key, ((c.kind, c.name)
                                                              for c in picture.children.get(view.key, ())))
            now = self.clock()
            try:
                return await self._decide_and_step(view, picture, planned, started, now, suspects, first_look)
            except BaseException:
                self.drift.put_back(view.key, suspects, first_look)
                raise
            finally:
                self.fleet.settle(view.key)     # what was charged at the decision gives way to what was written

    def read_live(self, view: WorkloadView, objects: set[tuple[str, str]]) -> dict[tuple[str, str], dict | None]:
        """The suspect objects as the API holds them now (None: deleted)."""
        namespace = view.key.split("/", 1)[0]
        return {(kind, name): self.kube.get("apps/v1" if kind == "Deployment" else "v1", kind, namespace, name)
                for kind, name in sorted(objects)}

    async def _decide_and_step(self, view: WorkloadView, picture: Picture, planned: Planned | None, started: float,
                               now: datetime, suspects: set[tuple[str, str]], first_look: bool = False) -> Outcome:
        """Decide (or take the planned move), check readiness, compare the `suspects` (owned objects
        someone else may have changed) with what is live, converge one step and execute it."""
        choice = planned.choice if planned is not None else await asyncio.to_thread(
            choose, view, picture, self.telemetry, now, self.fleet)
        choice = self.backed_off(view, choice)
        if choice.verdict in ("keep", "move"):
            live = await asyncio.to_thread(self.read_live, view, suspects)
        else:       # a refused spec renders nothing: what drifted is compared at its next placement
            live = {}
            self.drift.put_back(view.key, suspects, first_look)
        if choice.verdict in ("keep", "move"):     # a resumed placement kept as it is was decided too
            self.metrics.decision_duration.observe(time.perf_counter() - started)
        ready, why = (await self.readiness(view, choice, picture) if choice.verdict in ("keep", "move")
                      else ({}, {}))
        others = (await asyncio.to_thread(self.fleet.others_link_load, view.key,
                                          with_links(picture.engine_pools(), self.telemetry.links))
                  if choice.verdict in ("keep", "move") else None)
        outcome = converge(view, choice, picture, self.telemetry, ready, now, waiting=why,
                           move_timeout_s=self.settings.move_timeout_seconds, image=self.settings.triton_image,
                           dry_run=self.settings.dry_run, drain_s=self.settings.drain_seconds, live=live,
                           missing_is_drift=first_look, others_link_load=others)
        uid = view.body.get("metadata", {}).get("uid")
        owned = frozenset((c.kind, c.name) for c in picture.children.get(view.key, ()) if uid and c.owner_uid == uid)
        try:
            await asyncio.to_thread(self.execute, view, outcome, choice.decided, owned)
        except KubeError as failed:
            if failed.refused:      # say so in status: retrying the same request will not help
                self.refused[view.key] = view.generation
                await asyncio.to_thread(self.report_refusal, view, failed)
            raise
        self.refused.pop(view.key, None)
        if any(n.reason == "MoveTimedOut" for n in outcome.events):
            self.timed_out[view.key] = (choice.target.fingerprint(),
                                        time.monotonic() + self.settings.move_timeout_seconds)
        return outcome

    def backed_off(self, view: WorkloadView, choice: Choice) -> Choice:
        """A new move to a target that just timed out waits one timeout before it is tried again."""
        failed = self.timed_out.get(view.key)
        if (failed is None or choice.verdict != "move" or view.migration_target is not None
                or view.running is None or failed[0] != choice.target.fingerprint()):
            return choice
        if time.monotonic() >= failed[1]:
            del self.timed_out[view.key]
            return choice
        return Choice("keep", view.running)

    def report_refusal(self, view: WorkloadView, failed: KubeError) -> None:
        meta = view.body.get("metadata", {})
        before = (view.body.get("status") or {}).get("conditions", [])
        if any(c.get("reason") == "ApplyRefused" and c.get("message") == str(failed)[:2000] for c in before):
            return          # already said
        conditions = [c for c in before if c.get("type") != "Ready"]
        now = self.clock().isoformat().replace("+00:00", "Z")
        conditions.append({"type": "Ready", "status": "False", "reason": "ApplyRefused", "message": str(failed)[:2000],
                           "lastTransitionTime": now, "observedGeneration": view.generation})
        try:
            self.kube.patch_status(API_VERSION, "InferenceWorkload", meta.get("namespace"), meta.get("name"),
                                   {"conditions": conditions})
        except KubeError as lost:
            log.warning("%s: could not report %s: %s", view.key, failed, lost)

    async def readiness(self, view: WorkloadView, choice: Choice,
                        picture: Picture) -> tuple[dict[GroupKey, bool], dict[GroupKey, str]]:
        """A group is ready when its Deployment is available and (with probing on) its model answers
        ready through tritonclient; for each one that is not, why."""
        ready, why = deployments_ready(view, choice, picture)
        if ready and self.probe is not None and self.settings.probe_models:
            name, namespace = view.valid.metadata.name, view.valid.metadata.namespace or "default"
            model = view.valid.spec.model.name
            for key in [k for k, ok in ready.items() if ok]:
                endpoint = triton_endpoint(group_name(name, *key), namespace, template=self.settings.triton_endpoint)
                verdict = await asyncio.to_thread(self.probe, endpoint, model, 2.0)
                ready[key] = bool(verdict.ready)
                if not verdict.ready:
                    why[key] = f"{verdict.reason}: {verdict.message}"
        return ready, why

    def execute(self, view: WorkloadView, outcome: Outcome, decided: bool = False,
                owned: frozenset[tuple[str, str]] = frozenset()) -> None:
        """Apply what changed, prune what is no longer wanted, write status, record Events; count the
        outcome if the engine `decided` it or something was written (a poll that changed nothing is
        no decision). `owned`: (kind, name) of the objects the index shows this workload controls
        (applied again without asking the API who holds them)."""
        uid = view.body.get("metadata", {}).get("uid")
        conflicts = []
        skipped: list[str] = []         # objects not applied: nothing of theirs was corrected
        for obj in outcome.apply:
            ours = (obj["kind"], obj["metadata"]["name"]) in owned
            holder = None if ours else self.held_by_another(obj, uid)
            if holder:
                skipped += [f"{obj['kind']} {obj['metadata']['name']}:", f"{obj['kind']} {obj['metadata']['name']} "]
                conflict = f"{obj['kind']} {obj['metadata']['name']} already belongs to {holder}"
                if (view.key, conflict) not in self.reported_conflicts:      # said once, not every poll
                    self.reported_conflicts.add((view.key, conflict))
                    conflicts.append(conflict)
                continue
            meta = obj["metadata"]
            content = content_digest(self.kube.apply(obj))
            self.drift.wrote(obj["kind"], meta["namespace"], meta["name"], content, view.key,
                             seen_already=self.indexed_content(view.key, obj["kind"], meta["name"]) == content)
        for child in outcome.delete:
            self.drift.wrote(child.kind, child.namespace, child.name, GONE)
            self.kube.delete(child.api_version, child.kind, child.namespace, child.name)
        meta = view.body.get("metadata", {})
        if outcome.status is not None:      # against the version decided on: a 409 means decide again
            written = self.kube.patch_status(API_VERSION, "InferenceWorkload", meta.get("namespace"), meta.get("name"),
                                             outcome.status, resource_version=meta.get("resourceVersion"))
            if written:       # charge it now: the next decision must not wait for the watch to see it
                self.indexed(written)
        now = self.clock().isoformat().replace("+00:00", "Z")
        notes = [*(n for n in outcome.events
                   if not (n.reason == "DriftCorrected" and n.message.startswith(tuple(skipped)))),
                 *(Note("Warning", "NameConflict", f"{c}: not taken over (rename the workload, "
                                                    "or remove that object)") for c in conflicts)]
        for note in notes:
            try:
                self.kube.event({"apiVersion": API_VERSION, "kind": "InferenceWorkload", "metadata": meta},
                                note.type, note.reason, note.message, now)
            except KubeError as lost:       # an Event is a courtesy; the status already says it
                log.warning("event %s on %s not recorded: %s", note.reason, view.key, lost)
        namespace, name = view.key.split("/", 1)
        if decided or outcome.status is not None or outcome.apply or outcome.delete:
            self.metrics.record_outcome(namespace, name, "placed" if outcome.outcome == "moving" else outcome.outcome,
                                        outcome.serving)

    def held_by_another(self, obj: dict, uid: str | None) -> str | None:
        """Who controls an object of this name, if not this workload: group names join workload, pool
        and variant names with dashes, so two workloads can ask for one name — hetplace never takes
        over another owner's object."""
        meta = obj["metadata"]
        existing = self.kube.get(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        if existing is None or not uid:
            return None
        owners = [r for r in existing["metadata"].get("ownerReferences") or [] if r.get("controller")]
        if any(r.get("uid") == uid for r in owners):
            return None
        return ", ".join(f"{r.get('kind')} {r.get('name')}" for r in owners) or "an object hetplace does not own"

    # ---- the loop ---------------------------------------------------------------------------------
    def leading(self) -> bool:
        """Whether kopf's peering leaves this instance working (in every watched namespace)."""
        if self.standalone:
            return True
        now = self.clock()
        for kind, namespace in peering_objects(self.settings):
            peering = self.kube.get("kopf.dev/v1", kind, namespace, self.settings.peering_name)
            if peering is None or not is_leader(peering.get("status"), self.identity, self.priority, now):
                return False    # without its peering object kopf stays paused too
        return True

    async def progress_moves(self, waiting_too: bool = False) -> None:
        """Take the next step of every move under way (their timeouts and model probes need a clock)
        and, with `waiting_too`, look again at placements not yet ready (Deployment changes look at
        them as they happen; this catches a model that became ready with no Deployment change)."""
        for view in list(self.picture().workloads.values()):
            if self.refused.get(view.key) == view.generation:
                continue
            if view.migration_target is not None or (waiting_too and _in_progress(view)):
                self.queue.add(view.key, urgent=True)

    def availability_changed(self, child: Child, gone: bool = False) -> bool:
        """Whether a Deployment event matters to its workload: it became available, or stopped being
        so (created, deleted, rolled out). Its other events (status counters, resyncs) do not."""
        name = (child.namespace, child.name)
        before = self.available.get(name, False)
        if gone:
            self.available.pop(name, None)
            return before
        self.available[name] = child.available
        return child.available != before

    def progress(self, key: str) -> None:
        """A child of `key` changed (it became available, or stopped being so): look again, before
        the workloads waiting for a first decision (a Ready status or a move's next step waits)."""
        if key in (self.indices.get("workloads") or {}):
            self.queue.add(key, urgent=True)

    def publish_pools(self, picture: Picture) -> None:
        """Each ComputePool's status (validity, ready nodes, capacity, what hetplace placed) and the
        utilisation metric; written only when it changed."""
        allocated: dict[str, Resources] = {}
        for view in picture.workloads.values():
            if view.accepted and view.running is not None:
                for pool, used in taken_by(engine_workload(view, self.telemetry), view.running)[0].items():
                    allocated[pool] = allocated.get(pool, Resources()).plus(used)
        now = self.clock()
        for name, view in picture.pool_views.items():
            live = live_pool(view.valid, picture.nodes) if view.valid is not None else None
            matching = sum(1 for n in picture.nodes if view.valid is not None and all(
                n.labels.get(k) == v for k, v in view.valid.spec.node_selector.items()))
            previous = _pool_status(view.status)
            status = pool_status(view.generation, live, matching, allocated.get(name, Resources()),
                                 node_cost_per_hour(view.valid.spec) if view.valid else None, view.problem, now,
                                 previous).wire()
            if live is not None:
                used = allocated.get(name, Resources())
                for resource, have, taken in (("cpu", live.capacity.cpu_cores, used.cpu_cores),
                                              ("memory", live.capacity.memory_bytes, used.memory_bytes),
                                              ("accelerators", live.capacity.accelerators, used.accelerators)):
                    if have:
                        self.metrics.pool_utilization.labels(name, resource).set(taken / have)
            patch = status_patch(view.status, status)
            if patch is None:
                continue
            self.kube.patch_status(API_VERSION, "ComputePool", None, name, patch)
            if view.problem and not (previous and any(c.message.startswith(view.problem) for c in previous.conditions)):
                try:
                    self.kube.event({"apiVersion": API_VERSION, "kind": "ComputePool", "metadata": {"name": name}},
                                    "Warning", "InvalidSpec", view.problem, now.isoformat().replace("+00:00", "Z"))
                except KubeError as lost:       # a courtesy: the pool's status already says it
                    log.warning("event InvalidSpec on ComputePool %s not recorded: %s", name, lost)

    async def rebalance(self) -> None:
        """Telemetry -> global solve -> hysteresis -> bounded moves (docs/design.md §4)."""
        picture = self.picture()        # read on the event loop: kopf's indexes change there
        self.recheck_refused()
        await self.refresh_telemetry(picture)
        await asyncio.to_thread(self.publish_pools, picture)
        valid = [v for v in picture.workloads.values() if v.accepted and v.migration_target is None]
        if not valid:
            return
        snapshot, _ = snapshot_for(picture, self.telemetry)
        workloads = [engine_workload(v, self.telemetry) for v in valid]
        now = self.clock()
        running = {v.key: Running(v.running, v.kept_status.decided_at.timestamp()
                                  if v.kept_status and v.kept_status.decided_at else None)
                   for v in valid if v.running is not None}
        moves, held = await in_daemon_thread(plan_in_child, workloads, snapshot, running, now.timestamp(),
                                             max_moves=self.settings.max_moves_per_cycle,
                                             time_limit_s=self.settings.solver_time_limit_seconds,
                                             deadline_s=self.settings.plan_deadline_seconds)
        by_key = {v.key: v for v in valid}
        for move in moves:
            if self.refused.get(move.workload) == by_key[move.workload].generation:
                continue        # the API refused this generation's objects: a new spec retries
            why = f"{move.reason}: {move.why}"
            planned = Planned(Choice("move", _with_reason(move.after, why), now, why), by_key[move.workload])
            if await self._safely(by_key[move.workload].body, planned):
                self.metrics.moves.labels(move.reason, move.kind).inc()
        self.metrics.infeasible.set(sum(1 for h in held if h.why.startswith("no placement")))

    async def refresh_telemetry(self, picture: Picture) -> None:
        """Read telemetry (every `telemetry_interval_seconds`) and look again at the workloads whose
        TelemetryFresh, SLOMet or observed latency it changes (status is written only if it differs)."""
        if self.link_telemetry is None or time.monotonic() - self.telemetry_read_at < \
                self.settings.telemetry_interval_seconds:
            return
        before = self.telemetry
        await asyncio.to_thread(self.read_telemetry, picture)
        self.telemetry_read_at = time.monotonic()
        after = self.telemetry
        for view in picture.workloads.values():
            if view.running is not None and (after.fresh != before.fresh or _seen(after, view.key) != _seen(
                    before, view.key)):
                self.queue.add(view.key)

    def read_telemetry(self, picture: Picture) -> None:
        """Links (bandwidth, RTT), each running group's service time, and per site the traffic and the
        latency clients observe, through the PromQL templates."""
        if self.link_telemetry is None:
            return
        placed = [v for v in picture.workloads.values() if v.accepted and v.running is not None]
        self.link_telemetry.client.new_read()       # one Prometheus client serves the three readers
        reading = self.link_telemetry.read(picture.engine_pools())
        corrections, failed, unread_groups = self._corrections(placed)
        sites = self.site_telemetry.read() if self.site_telemetry is not None else SiteReading({}, {})
        unread = (*unread_groups, *sites.reasons)
        if unread and unread != self.unread_said:         # planned on profiles / declared traffic: say why, once
            log.info("telemetry not used: %s", "; ".join(unread[:20]) + (f"; and {len(unread) - 20} more"
                                                                        if len(unread) > 20 else ""))
        self.unread_said = unread
        others = [*failed, *sites.errors]        # the link queries' own failures are in the summary
        traffic: dict[str, list[TrafficObservation]] = {}
        for (key, site), rate in sites.requests_per_second.items():
            traffic.setdefault(key, []).append(TrafficObservation(key, site, rate))
        latency: dict[str, dict[str, float]] = {}
        percentiles = {v.key: v.engine.percentile for v in placed}
        for (key, site), buckets in sites.latency_buckets.items():
            seconds = latency_quantile_s(buckets, percentiles[key]) if key in percentiles else None
            if seconds is not None:
                latency.setdefault(key, {})[site] = seconds * 1000.0
        # exactly which readings the decisions use: fresh, last-known-good or declared, and why
        if reading.all_fresh and not others:
            fresh = Observed(True, "Fresh", reading.summary())
        elif reading.errors or others:
            fresh = Observed(False, "PrometheusError", "; ".join([reading.summary(), *others])[:1000])
        else:
            fresh = Observed(False, "Stale", reading.summary()[:1000])
        observed = Telemetry(reading.observations, fresh, corrections,
                             {k: tuple(v) for k, v in traffic.items()}, latency)
        if (observed.corrections, observed.traffic) != (self.telemetry.corrections, self.telemetry.traffic):
            self.fleet.reset()          # the engine's view of the workloads changed
            self.recheck_due = True
        if observed.links != self.telemetry.links:
            self.recheck_due = True     # a refused workload may fit over the links as they are now
        self.telemetry = observed
        if reading.fresh:
            self.telemetry_fresh_at = time.time()
        self.metrics.telemetry_age.labels("prometheus").set(
            time.time() - self.telemetry_fresh_at if self.telemetry_fresh_at else float("nan"))
        self.metrics.record_observed_latency(latency)

    def _corrections(self, placed: list[WorkloadView]) -> tuple[dict[str, dict[tuple[str, str], float]], list[str],
                                                                tuple[str, ...]]:
        """Observed over profiled service time per running (pool, variant), bounded; the failed
        queries; the groups with no reading and why."""
        if self.service_telemetry is None:
            return {}, [], ()
        refs = {GroupRef(*v.key.split("/", 1), g.pool, g.variant): v for v in placed for g in v.running.groups}
        reading = self.service_telemetry.observe(refs)
        observed, failed = reading.observed_ms, reading.errors
        corrections: dict[str, dict[tuple[str, str], float]] = {}
        for ref, ms in observed.items():
            profile = next((x for x in refs[ref].engine.variants if x.name == ref.variant), None)
            if profile is not None:
                corrections.setdefault(f"{ref.namespace}/{ref.workload}", {})[(ref.pool, ref.variant)] = \
                    correction_factor(ms, profile.latency_ms)
        return corrections, list(failed), tuple(reading.reasons[g] for g in sorted(reading.reasons, key=str))

    async def _safely(self, body: Mapping[str, Any], planned: Planned | None = None) -> Outcome | None:
        """One workload's step from the loop: its failure is logged and stays its own."""
        name = f"{body.get('metadata', {}).get('namespace')}/{body.get('metadata', {}).get('name')}"
        try:
            return await self.reconcile(body, planned)
        except KubeError as failed:
            log.warning("%s: %s (will retry next cycle)", name, failed)
        except Exception:
            log.exception("%s: reconcile failed (will retry next cycle)", name)
        return None

    async def run_loop(self, stop: asyncio.Event) -> None:
        """On the leader, once the indexes are full: progress moves every `move_poll_seconds`, and
        rebalance every `rebalance_interval_seconds` (or at once when pools change) in a task of its
        own, so a long cycle over a large fleet does not hold up the moves under way."""
        last_rebalance = 0.0
        cycle: asyncio.Task | None = None
        try:
            while not stop.is_set():
                try:
                    leading = await asyncio.to_thread(self.leading)
                    self.metrics.leader.set(1 if leading else 0)
                    if not leading:
                        # kopf pauses its watches meanwhile: what the indexes hold already goes stale
                        self.was_follower = self.was_follower or any(len(i) for i in self.indices.values())
                    elif self.was_follower:
                        self.restart(RESUMED)
                        return
                    if leading and self.indexes_full.is_set():
                        due = time.monotonic() - last_rebalance >= self.settings.rebalance_interval_seconds
                        await self.progress_moves(waiting_too=due)
                        if self.recheck_due:
                            self.recheck_refused()
                        if (due or self.wake.is_set()) and (cycle is None or cycle.done()):
                            self.wake.clear()
                            last_rebalance = time.monotonic()
                            cycle = asyncio.create_task(self._rebalance_cycle(), name="hetplace rebalance cycle")
                except KubeError as failed:
                    log.warning("operator loop: %s", failed)
                except Exception:          # the loop must outlive one bad cycle; the traceback says what broke
                    log.exception("operator loop failed")
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=self.settings.move_poll_seconds)
                except asyncio.TimeoutError:
                    pass
        finally:
            if cycle is not None and not cycle.done():
                cycle.cancel()      # its planning thread is a daemon: it does not hold the process up

    async def _rebalance_cycle(self) -> None:
        try:
            await self.rebalance()
            self.metrics.rebalance_cycles.inc()
        except (KubeError, PlanningFailed) as failed:
            log.warning("rebalance cycle: %s", failed)
        except Exception:
            log.exception("rebalance cycle failed")


async def in_daemon_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn` in a thread of its own that does not keep the process alive when the operator stops
    (asyncio.to_thread's pool is joined at exit: a long solve would hold a SIGTERM up)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def deliver(result: Any, failed: BaseException | None) -> None:
        if not done.done():
            done.set_exception(failed) if failed is not None else done.set_result(result)

    def work() -> None:
        result, failure = None, None
        try:
            result = fn(*args, **kwargs)
        except BaseException as failed:  # noqa: BLE001 — handed to the awaiting task
            failure = failed
        try:
            loop.call_soon_threadsafe(deliver, result, failure)
        except RuntimeError:        # the loop closed meanwhile: nobody waits any more
            pass

    threading.Thread(target=work, name=f"hetplace {getattr(fn, '__name__', 'work')}", daemon=True).start()
    return await done


@dataclass(frozen=True)
class Planned:
    """A move the rebalance planned on `seen`; it applies only while the workload is as it was seen."""

    choice: Choice
    seen: WorkloadView

    def still_applies(self, now: WorkloadView) -> bool:
        same_running = (now.running.fingerprint() if now.running else None) == (
            self.seen.running.fingerprint() if self.seen.running else None)
        return (now.generation == self.seen.generation and same_running and now.migration_target is None
                and now.valid is not None)


def _seen(telemetry: Telemetry, key: str) -> dict[str, float | None]:
    """What a workload's status shows of telemetry: observed latency per site, two digits."""
    return {site: two_digits(ms) for site, ms in telemetry.route_latency_ms.get(key, {}).items()}


def _pool_status(raw: Mapping[str, Any]) -> ComputePoolStatus | None:
    try:
        return ComputePoolStatus.model_validate(raw) if raw else None
    except ValueError:
        return None


def _in_progress(view: WorkloadView) -> bool:
    if not view.accepted:
        return False
    if view.migration_target is not None:
        return True
    return view.running is not None and (view.kept_status is None or view.kept_status.bringing_up)


def _with_reason(decision: Decision, reason: str) -> Decision:
    return dataclasses.replace(decision, reason=reason)
