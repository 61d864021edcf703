"""What the cluster holds, as the engine needs it: pools sized by their live Ready nodes, what each
workload runs (read back from its status), and the objects hetplace owns. Pure: API bodies in,
engine values out; the kopf indexes call these on every change."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping

from hetplace.api.errors import InvalidObject
from hetplace.api.load import validate_manifest
from hetplace.api.models import ComputePool, InferenceWorkload, InferenceWorkloadStatus
from hetplace.api.quantity import parse_cpu, parse_memory
from hetplace.api.status import Phase, PlacementStatus
from hetplace.controller.drift import content_digest
from hetplace.engine.decision import Decision, GroupPlan, RoutePlan
from hetplace.engine.from_api import pool_from_spec, workload_from_spec
from hetplace.engine.snapshot import Pool, Resources, Workload
from hetplace.render.names import group_name
from hetplace.site.routes import DATA_KEY as ROUTES_KEY
from hetplace.site.routes import VOLATILE_ROUTE_FIELD

APPLIED_HASH = "hetplace.io/applied-hash"
WORKLOAD_LABEL = "hetplace.io/workload"


@dataclass(frozen=True, slots=True)
class NodeView:
    """A Node: its labels, whether it is Ready and schedulable, and what it can allocate."""

    name: str
    labels: Mapping[str, str]
    ready: bool
    allocatable: Mapping[str, str]


def node_view(body: Mapping[str, Any]) -> NodeView:
    conditions = body.get("status", {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    schedulable = not body.get("spec", {}).get("unschedulable", False)
    return NodeView(body["metadata"]["name"], dict(body["metadata"].get("labels") or {}), ready and schedulable,
                    dict(body.get("status", {}).get("allocatable") or {}))


def live_pool(pool: ComputePool, nodes: Iterable[NodeView]) -> Pool:
    """The pool as the engine sees it: with the Ready nodes its nodeSelector matches, each node
    counted at the smallest allocatable among them (a replica never spans nodes); with none
    matching, the declared `nodes` shape; with matching nodes but none Ready, down."""
    declared = pool_from_spec(pool.name, pool.spec)
    selector = pool.spec.node_selector
    matching = [n for n in nodes if all(n.labels.get(k) == v for k, v in selector.items())]
    if not matching:
        return declared
    ready = [n for n in matching if n.ready]
    if not ready:
        return pool_from_spec(pool.name, pool.spec, down=True)
    accelerator = pool.spec.accelerator.resource_name if pool.spec.accelerator else None
    shape = Resources(
        min(parse_cpu(n.allocatable.get("cpu", 0)) for n in ready),
        min(parse_memory(n.allocatable.get("memory", 0)) for n in ready),
        min(int(parse_cpu(n.allocatable.get(accelerator, 0))) for n in ready) if accelerator else 0,
    )
    return Pool(declared.name, declared.hardware, declared.region, declared.site, shape, len(ready),
                declared.node_cost_per_hour, declared.links, declared.allowed_namespaces, declared.down)


@dataclass(frozen=True, slots=True)
class KeptStatus:
    """What the loop reads of a workload's status, small enough to keep for every workload (the
    parsed status is kept by no index): when its placement was decided, its Ready condition."""

    decided_at: datetime | None
    ready: str | None = None            # the Ready condition's status ("True", "False"), None without one
    ready_reason: str = ""
    phase: str | None = None            # status.phase, as written
    observed_generation: int | None = None

    def refused_at(self, generation: int) -> bool:
        """The spec of `generation` was decided and could not be placed as asked (Infeasible, or
        Degraded: what runs is not what it asks): it waits for something to change."""
        return self.observed_generation == generation and self.phase in (Phase.INFEASIBLE, Phase.DEGRADED)

    def placed_at(self, generation: int) -> bool:
        """What runs (or is being brought up) was decided for the spec of `generation`."""
        return self.observed_generation == generation and self.phase in (Phase.PLACED, Phase.MIGRATING)

    @property
    def bringing_up(self) -> bool:
        """Ready has not been said yet, or is False (a dry run is never Ready, nor brought up)."""
        return self.ready is None or (self.ready != "True" and self.ready_reason != "DryRun")


@dataclass(frozen=True, slots=True)
class WorkloadView:
    """One InferenceWorkload as indexed: the validated object (None when its spec is refused),
    what serves (from status.placements) and the move under way (from status.migration)."""

    key: str
    body: Mapping[str, Any]
    valid: InferenceWorkload | None
    problem: str
    running: Decision | None
    migration_target: Decision | None
    migration_started: datetime | None
    status: InferenceWorkloadStatus | None
    engine: Workload | None = None          # the spec as the engine reads it (declared traffic)
    routes_switched: datetime | None = None  # a move whose routes switched already (old groups draining)
    leaving: Decision | None = None         # and the placement it left behind
    kept_status: KeptStatus | None = None   # of the status what the loop reads (None: no status yet)

    @property
    def generation(self) -> int:
        return int(self.body.get("metadata", {}).get("generation") or 1)

    @property
    def accepted(self) -> bool:
        """Its spec was accepted (a view the index keeps has no `valid` object, but its `engine` one)."""
        return self.engine is not None

    def to_keep(self) -> WorkloadView:
        """The view as an index keeps it, for thousands of workloads: its body cut to the metadata
        that names it, no parsed object (`engine` is what the fleet needs of the spec) and no parsed
        status (`kept_status` is what the loop reads of it; what serves and what it moves to are
        `running` and `migration_target` already). A reconcile reads the object afresh."""
        meta = self.body.get("metadata") or {}
        kept = {k: sys.intern(meta[k]) if k in SHARED_METADATA and isinstance(meta[k], str) else meta[k]
                for k in KEPT_METADATA if k in meta}
        return dataclasses.replace(self, body={"metadata": kept}, valid=None, status=None)


KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion")
SHARED_METADATA = ("namespace", "uid")      # held once: by many workloads, and by a workload's owned objects


class ValidatedSpecs:
    """Each workload's spec as last validated, reused while its uid, generation and labels stay: the
    API bumps the generation on every spec change, and most events (status writes, Deployment
    changes, resyncs) carry a spec already read. The engine's reading is kept for every workload;
    the parsed object (far larger) only for the `recent` last validated, which the reconcile that
    follows an event reuses."""

    def __init__(self, recent: int = 512) -> None:
        self._by_key: dict[str, tuple[tuple, str, Workload | None]] = {}
        self._parsed: OrderedDict[str, tuple[tuple, InferenceWorkload]] = OrderedDict()
        self._recent = recent
        self._catalogues = Catalogues()
        self._lock = threading.Lock()       # the event loop and the reconciles' threads share it

    def of(self, key: str, body: Mapping[str, Any],
           parsed: bool = True) -> tuple[InferenceWorkload | None, str, Workload | None]:
        """(the parsed object, or None when refused or not `parsed`; the problem; the engine's reading)."""
        meta = body.get("metadata", {})
        stamp = (meta.get("uid"), meta.get("generation"), tuple(sorted((meta.get("labels") or {}).items())))
        with self._lock:
            known = self._by_key.get(key)
            if known is not None and known[0] == stamp and stamp[0] is not None:
                problem, engine = known[1:]
                recent = self._parsed.get(key)
                valid = recent[1] if recent is not None and recent[0] == stamp else None
                if engine is None or not parsed or valid is not None:
                    if valid is not None:
                        self._parsed.move_to_end(key)
                    return (valid if parsed else None), problem, engine
        valid, problem, engine = _validated(body)
        with self._lock:
            before = self._by_key.get(key)
            engine = self._catalogues.hold(engine)
            self._catalogues.release(before[2] if before else None)
            self._by_key[key] = (stamp, problem, engine)
            self._parsed.pop(key, None)
            if valid is not None:
                self._parsed[key] = (stamp, valid)
                while len(self._parsed) > self._recent:
                    self._parsed.popitem(last=False)
        return (valid if parsed else None), problem, engine

    def forget(self, key: str) -> None:
        with self._lock:
            before = self._by_key.pop(key, None)
            self._catalogues.release(before[2] if before else None)
            self._parsed.pop(key, None)


class Catalogues:
    """Equal variant and encoding lists held once for all the workloads that name them (workloads
    of one model usually do), each counted by its users and let go with the last."""

    def __init__(self) -> None:
        self._held: dict[tuple, list] = {}      # catalogue -> [the one copy, users]

    def hold(self, engine: Workload | None) -> Workload | None:
        """`engine` with its catalogues replaced by the copies held (counted once more)."""
        if engine is None:
            return None
        return dataclasses.replace(engine, variants=self._take(engine.variants), encodings=self._take(engine.encodings))

    def _take(self, catalogue: tuple) -> tuple:
        entry = self._held.setdefault(catalogue, [catalogue, 0])
        entry[1] += 1
        return entry[0]

    def release(self, engine: Workload | None) -> None:
        for catalogue in (engine.variants, engine.encodings) if engine is not None else ():
            entry = self._held.get(catalogue)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._held[catalogue]

    def __len__(self) -> int:
        return len(self._held)


def _validated(body: Mapping[str, Any]) -> tuple[InferenceWorkload | None, str, Workload | None]:
    try:
        valid = validate_manifest(InferenceWorkload, {k: v for k, v in body.items() if k != "status"})
    except InvalidObject as refused:
        return None, str(refused), None
    return valid, "", workload_from_spec(valid.metadata.namespace or "default", valid.metadata.name, valid.spec)


def workload_view(body: Mapping[str, Any], specs: ValidatedSpecs | None = None, keep: bool = False) -> WorkloadView:
    """The workload as a reconcile reads it; with `keep`, as the index keeps it (`to_keep`)."""
    meta = body.get("metadata", {})
    key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
    status = _status(body.get("status"))
    valid, problem, engine = specs.of(key, body, parsed=not keep) if specs is not None else _validated(body)
    objective = engine.objective if engine is not None else "MinCost"
    running = decision_from(key, status.placements, objective, status.decision.reason if status and status.decision
                            else "") if status and not _dry_run(status) else None
    migration = status.migration if status else None
    target = decision_from(key, migration.target, objective, migration.reason) if migration else None
    view = WorkloadView(key, body, valid, problem, running, target, migration.started_at if migration else None,
                        status, engine, migration.routes_switched_at if migration else None,
                        decision_from(key, migration.leaving, objective, "") if migration else None,
                        _kept_status(status))
    return view.to_keep() if keep else view


def _kept_status(status: InferenceWorkloadStatus | None) -> KeptStatus | None:
    if status is None:
        return None
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    return KeptStatus(status.decision.at if status.decision else None,
                      sys.intern(ready.status) if ready else None, sys.intern(ready.reason) if ready else "",
                      sys.intern(str(status.phase)) if status.phase else None, status.observed_generation)


def _dry_run(status: InferenceWorkloadStatus) -> bool:
    """Placements a dry-run operator reported were decided, never deployed: nothing of them runs."""
    return any(c.type == "Placed" and c.reason == "DryRun" for c in status.conditions)


def _status(raw: Any) -> InferenceWorkloadStatus | None:
    if not raw:
        return None
    try:
        return InferenceWorkloadStatus.model_validate(raw)
    except ValueError:          # a status from another version or hand-edited: start over from nothing
        return None


def decision_from(key: str, placements: Iterable[PlacementStatus], objective: str, reason: str) -> Decision | None:
    """A decision read back from status: what the engine needs of a running placement (pools,
    variants, replicas, routes and their encodings and rates)."""
    # one is kept per workload: the names (pools, variants, sites, encodings) thousands share are held once
    groups = tuple(
        GroupPlan(sys.intern(p.pool), sys.intern(p.variant), p.replicas, p.cost_per_hour,
                  tuple(RoutePlan(sys.intern(r.site), sys.intern(r.encoding), r.requests_per_second,
                                  r.predicted_latency_ms, r.predicted_latency_ms - (r.predicted_compute_ms or 0.0),
                                  r.predicted_compute_ms or 0.0, 0.0)
                        for r in p.routes))
        for p in placements)
    if not groups:
        return None
    return Decision(key, True, sys.intern(objective), sum(g.cost_per_hour for g in groups), groups, (),
                    reason, "status")


@dataclass(frozen=True, slots=True)
class Child:
    """An object hetplace owns: which workload, its kind and name, the hash it was applied with,
    and (for a Deployment) whether it is available at its current spec."""

    workload: str
    api_version: str
    kind: str
    namespace: str
    name: str
    applied_hash: str
    available: bool = False
    group: str = ""
    owner_uid: str = ""
    replicas: int = 0                                   # a Deployment's spec.replicas
    routes: tuple[tuple[str, str, str, str], ...] = ()  # the routes ConfigMap: (site, pool, variant, encoding)
    content: int = 0                                    # digest of what hetplace applies there (drift.py)

    def owned_by(self, uid: str | None) -> bool:
        """Whether the workload with `uid` controls it (labels alone can be copied by anyone)."""
        return not uid or self.owner_uid == uid


def child_view(body: Mapping[str, Any]) -> Child | None:
    meta = body.get("metadata", {})
    labels = meta.get("labels") or {}
    workload = labels.get(WORKLOAD_LABEL)
    if not workload:
        return None
    available = False
    if body.get("kind") == "Deployment":
        status, spec = body.get("status") or {}, body.get("spec") or {}
        # hetplace never runs a group at 0 replicas: one scaled to 0 serves nothing, so it is not available
        wanted = max(1, spec.get("replicas", 1))
        available = (status.get("observedGeneration", 0) >= meta.get("generation", 1)
                     and status.get("availableReplicas", 0) >= wanted
                     and status.get("updatedReplicas", 0) >= wanted)
    owner = _owner(meta)
    name, group = meta.get("name", ""), labels.get("hetplace.io/group", "")
    # thousands are kept: the strings many share are held once (a group is named as its objects)
    return Child(sys.intern(f"{meta.get('namespace')}/{owner.get('name') or workload}"),
                 sys.intern(body.get("apiVersion", "")), sys.intern(body.get("kind", "")),
                 sys.intern(meta.get("namespace", "")), name,
                 (meta.get("annotations") or {}).get(APPLIED_HASH, ""), available,
                 name if group == name else sys.intern(group), sys.intern(owner.get("uid", "")),
                 int((body.get("spec") or {}).get("replicas") or 0), _routes_of(body), content_digest(body))


def _routes_of(body: Mapping[str, Any]) -> tuple[tuple[str, str, str, str], ...]:
    """(site, pool, variant, encoding) of each site's first route: the routes document
    (docs/routes.md), or the one route per site key an older hetplace wrote."""
    if body.get("kind") != "ConfigMap":
        return ()
    data = body.get("data") or {}
    try:
        if ROUTES_KEY in data:
            sites = json.loads(data[ROUTES_KEY])["sites"]
            first = sorted((site, options[0]) for site, options in sites.items())
        else:
            first = sorted((site, json.loads(raw)) for site, raw in data.items())
        return tuple(tuple(sys.intern(str(v)) for v in (site, route["pool"], route["variant"], route["encoding"]))
                     for site, route in first)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return ()        # not one of ours (or hand-edited): it tells nothing


def served_by(key: str, children: Iterable[Child], uid: str | None) -> Decision | None:
    """What serves now by the objects themselves — the routes ConfigMap and the Deployments it points
    at — for when status cannot say (lost, unreadable, or written by a dry run). Costs and
    predictions are unknown (0): this only keeps a move make-before-break."""
    owned = [c for c in children if c.owned_by(uid)]
    routes = next((c.routes for c in owned if c.kind == "ConfigMap" and c.routes), ())
    replicas = {c.name: c.replicas for c in owned if c.kind == "Deployment"}
    name = key.split("/", 1)[1]
    groups: dict[tuple[str, str], list[RoutePlan]] = {}
    for site, pool, variant, encoding in routes:
        groups.setdefault((pool, variant), []).append(RoutePlan(site, encoding, 0.0, 0.0, 0.0, 0.0, 0.0))
    plans = tuple(GroupPlan(pool, variant, replicas[group_name(name, pool, variant)], 0.0, tuple(rs))
                  for (pool, variant), rs in sorted(groups.items()) if group_name(name, pool, variant) in replicas)
    if not plans or len(plans) != len(groups):
        return None
    return Decision(key, True, "MinCost", 0.0, plans, (), "read from the objects that serve", "objects")


def _owner(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    # the label holds a cut name for long workload names; the controlling owner reference the whole one
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "InferenceWorkload" and ref.get("controller"):
            return ref
    return {}


def with_applied_hash(obj: dict) -> dict:
    """`obj` with an annotation hashing its content, so an unchanged object is not applied again. The
    routes' predicted latencies are left out of the hash: a prediction that moves with every telemetry
    reading alone would rewrite every routes ConfigMap each cycle; they are refreshed with the next
    change that matters to a site (order, encoding, withinSlo, the decision)."""
    digest = hashlib.sha256(json.dumps(_decisive(obj), sort_keys=True).encode()).hexdigest()[:20]
    meta = {**obj["metadata"], "annotations": {**obj["metadata"].get("annotations", {}), APPLIED_HASH: digest}}
    return {**obj, "metadata": meta}


def _decisive(obj: dict) -> dict:
    data = obj.get("data") or {}
    if obj.get("kind") != "ConfigMap" or ROUTES_KEY not in data:
        return obj
    document = json.loads(data[ROUTES_KEY])
    for routes in document.get("sites", {}).values():
        for route in routes:
            route.pop(VOLATILE_ROUTE_FIELD, None)
    return {**obj, "data": {**data, ROUTES_KEY: document}}


@dataclass(frozen=True, slots=True)
class PoolView:
    """One ComputePool as indexed: the validated object (None when refused, with the problem)."""

    name: str
    generation: int
    valid: ComputePool | None
    problem: str
    status: Mapping[str, Any]


def pool_view(body: Mapping[str, Any]) -> PoolView:
    meta = body.get("metadata", {})
    try:
        valid, problem = validate_manifest(ComputePool, {k: v for k, v in body.items() if k != "status"}), ""
    except InvalidObject as refused:
        valid, problem = None, str(refused)
    return PoolView(meta.get("name", ""), int(meta.get("generation") or 1), valid, problem, body.get("status") or {})


@dataclass
class Picture:
    """The cluster as the operator last saw it (the kopf indexes' content), read by one decision."""

    pools: Mapping[str, ComputePool] = field(default_factory=dict)      # the valid ones
    pool_views: Mapping[str, PoolView] = field(default_factory=dict)    # all, refused ones too
    nodes: tuple[NodeView, ...] = ()
    workloads: Mapping[str, WorkloadView] = field(default_factory=dict)
    children: Mapping[str, tuple[Child, ...]] = field(default_factory=dict)

    def engine_pools(self) -> tuple[Pool, ...]:
        return tuple(live_pool(p, self.nodes) for p in self.pools.values())
