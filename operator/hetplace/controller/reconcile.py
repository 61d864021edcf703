"""The reconcile pipeline of one workload, pure: validate -> snapshot -> engine -> (readiness, from
the caller) -> make-before-break step -> render -> what to apply, delete and report.

`choose` decides what the workload should run; the caller then looks up which of those groups are
ready (Deployment available, model ready through tritonclient) and `converge` turns that into an
`Outcome`: the objects that changed, the ones to prune, the status and the Events. Nothing here
talks to the API or reads a clock.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal, Mapping

from hetplace.api.status import Phase
from hetplace.controller.drift import describe, differences
from hetplace.controller.fleet_ledger import FleetLedger
from hetplace.controller.inventory import (
    APPLIED_HASH,
    Child,
    Picture,
    WorkloadView,
    live_pool,
    with_applied_hash,
)
from hetplace.controller.moves import GroupKey, InFlight, Step, advance, names_of
from hetplace.engine.decision import Decision
from hetplace.engine.fallbacks import route_options
from hetplace.engine.fleet import place_one
from hetplace.engine.observed import LinkObservation, TrafficObservation, with_links, with_traffic
from hetplace.engine.snapshot import Pool, Snapshot, Workload
from hetplace.engine.usage import Ledger
from hetplace.k8s.status import Observed, two_digits, workload_status
from hetplace.render.names import group_name
from hetplace.render.triton import render_decision, routes_configmap

Verdict = Literal["invalid", "infeasible", "keep", "move"]


@dataclass(frozen=True)
class Telemetry:
    """What the telemetry loop last read, laid over the declared links."""

    links: tuple[LinkObservation, ...] = ()
    fresh: Observed = Observed(False, "NoPrometheus", "no Prometheus configured: deciding on the declared links")
    # per workload key: observed/profiled service time per (pool, variant), bounded
    corrections: Mapping[str, Mapping[tuple[str, str], float]] = dataclasses.field(default_factory=dict)
    # per workload key: observed requests per second by site
    traffic: Mapping[str, tuple[TrafficObservation, ...]] = dataclasses.field(default_factory=dict)
    # per workload key: latency clients at each site observe at the workload's SLO percentile, ms
    route_latency_ms: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Choice:
    """What a workload should run: keep what runs, move to `target`, or nothing (and why)."""

    verdict: Verdict
    target: Decision | None
    started: datetime | None = None
    reason: str = ""
    decided: bool = False               # the engine ran (not a look at a placement already decided)


@dataclass(frozen=True)
class Note:
    """An Event to record on the workload."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    apply: tuple[dict, ...]
    delete: tuple[Child, ...]
    status: dict | None                 # None: status already says this
    events: tuple[Note, ...]
    outcome: str                        # placed | infeasible | invalid | unchanged | moving (metrics)
    serving: Decision | None


def snapshot_for(picture: Picture, telemetry: Telemetry, leave_out: str | None = None) -> tuple[Snapshot, Ledger]:
    """Pools as observed, and a ledger of what every other workload runs (or is bringing up)."""
    pools = with_links(picture.engine_pools(), telemetry.links)
    ledger = Ledger(pools)
    for key, view in picture.workloads.items():
        held = view.migration_target or view.running
        if key == leave_out or not view.accepted or held is None:
            continue
        if all(g.pool in picture.pools for g in held.groups):
            ledger.add(engine_workload(view, telemetry), held)
    return Snapshot(pools), ledger


def engine_workload(view: WorkloadView, telemetry: Telemetry) -> Workload:
    """The workload as the engine plans it: observed traffic per site, corrected service times."""
    workload = view.engine
    observed = telemetry.traffic.get(view.key)
    if observed:
        workload = with_traffic(workload, observed)
    corrections = telemetry.corrections.get(view.key)
    return dataclasses.replace(workload, latency_correction=corrections) if corrections else workload


def choose(view: WorkloadView, picture: Picture, telemetry: Telemetry, now: datetime,
           fleet: FleetLedger | None = None) -> Choice:
    """What an event on the workload (create, resume, spec change) asks for. Others' placements
    come from `fleet` (kept by the operator) or, without one, from `picture.workloads`."""
    if view.valid is None:
        return Choice("invalid", None, reason=view.problem)
    status = view.status
    # a generation refused (invalid, infeasible) is decided again: it may fit now
    decided_this_generation = (status is not None and status.observed_generation == view.generation
                               and status.phase not in (Phase.INVALID, Phase.INFEASIBLE))
    known = set(picture.pools)
    if decided_this_generation and view.migration_target is not None and _on(view.migration_target, known):
        return Choice("move", view.migration_target, view.migration_started, view.migration_target.reason)
    if decided_this_generation and view.running is not None and _on(view.running, known):
        return Choice("keep", view.running)
    w = engine_workload(view, telemetry)
    if fleet is None:
        snapshot, ledger = snapshot_for(picture, telemetry, leave_out=view.key)
        decision = place_one(w, snapshot, ledger)
    else:
        with fleet.lock:      # what this workload holds is taken out while it is decided, then put back
            snapshot, ledger = fleet.snapshot(with_links(picture.engine_pools(), telemetry.links))
            decision = place_one(w, snapshot, ledger, current=view.migration_target or view.running)
            if decision.feasible and not (view.running and view.running.fingerprint() == decision.fingerprint()):
                fleet.charge(view.key, w, decision)     # the next decision must see it (the caller settles it)
    if not decision.feasible:
        return Choice("infeasible", decision, reason=decision.reason, decided=True)
    if view.running is not None and view.running.fingerprint() == decision.fingerprint():
        return Choice("keep", view.running, decided=True)
    why = _why_replanned(view, known)
    return Choice("move", dataclasses.replace(decision, reason=f"{why}: {decision.reason}"), now, why, decided=True)


def deployments_ready(view: WorkloadView, choice: Choice,
                      picture: Picture) -> tuple[dict[GroupKey, bool], dict[GroupKey, str]]:
    """Which of the target's groups have an available Deployment, and for each one that has not, why
    (the caller adds the model probe)."""
    if choice.target is None or view.valid is None:
        return {}, {}
    name = view.valid.metadata.name
    owned = {c.name: c for c in picture.children.get(view.key, ()) if c.kind == "Deployment"}
    ready: dict[GroupKey, bool] = {}
    why: dict[GroupKey, str] = {}
    for g in choice.target.groups:
        deployment = owned.get(group_name(name, g.pool, g.variant))
        ready[(g.pool, g.variant)] = deployment is not None and deployment.available
        if not ready[(g.pool, g.variant)]:
            # one wording for "not created" and "not available": status is not rewritten between them
            why[(g.pool, g.variant)] = f"Deployment {group_name(name, g.pool, g.variant)} not available yet"
    return ready, why


def _why_replanned(view: WorkloadView, pools: set[str]) -> str:
    if view.running is None:
        return "first placement"
    gone = sorted({g.pool for g in view.running.groups} - pools)
    if gone:
        return f"ComputePool {', '.join(gone)} removed"
    if view.status is not None and view.status.observed_generation != view.generation:
        return f"spec changed (generation {view.generation})"
    return "re-planned"


def _on(decision: Decision, pools: set[str]) -> bool:
    return all(g.pool in pools for g in decision.groups)


def converge(view: WorkloadView, choice: Choice, picture: Picture, telemetry: Telemetry,
             ready: Mapping[GroupKey, bool], now: datetime, *, move_timeout_s: float, image: str,
             dry_run: bool = False, waiting: Mapping[GroupKey, str] | None = None,
             drain_s: float = 0.0, live: Mapping[tuple[str, str], Mapping | None] | None = None,
             missing_is_drift: bool = False,
             others_link_load: Mapping[tuple[str, str], float] | None = None) -> Outcome:
    """The step a choice leads to now, given which groups are ready (and, for those not, why).
    `live`: owned objects someone else changed or deleted, as the API holds them now (None:
    deleted); each one wanted is applied again where it differs from what hetplace applies. With
    `missing_is_drift` (the first look after a start), an object of what serves that does not
    exist was deleted by someone too. `others_link_load`: bytes/s other workloads send over each
    (site, pool) link, which the routes' fallbacks share.

    Only the groups of the target are (re-)rendered; a group only the running placement has is
    left exactly as it runs (its variant may even be gone from the spec) until it is deleted, and
    nothing hetplace owns is deleted before everything it runs in this step is ready."""
    deleted = _deleted_pools(view, picture)
    if choice.verdict in ("invalid", "infeasible"):
        return _refused(view, choice, telemetry, now, deleted, _unavailable(view, picture))
    workload = view.valid
    # while the groups left behind drain, the move is still from them
    running = view.leaving if view.leaving is not None and view.migration_target is not None else view.running
    if choice.verdict == "keep" or dry_run:
        step = Step(_sizes(choice.target), (), choice.target, "Placed", "DryRun" if dry_run else "Placed",
                    "dry-run: decided, nothing created" if dry_run else
                    f"placed on {names_of(_sizes(choice.target))}",
                    finished=True)
    else:
        started = choice.started or now
        switched = view.routes_switched if view.migration_target is not None else None
        step = advance(InFlight(running, choice.target, started.timestamp(), move_timeout_s, drain_s,
                                switched.timestamp() if switched else None), ready, now.timestamp())
    target_keys = {(g.pool, g.variant) for g in choice.target.groups}
    rendered_groups = tuple(dataclasses.replace(g, replicas=step.run[(g.pool, g.variant)])
                            for g in choice.target.groups
                            if (g.pool, g.variant) in step.run and g.pool in picture.pools)
    rendered = render_decision(workload, picture.pools, dataclasses.replace(choice.target, groups=rendered_groups),
                               default_image=image)
    new_decision = view.status is None or view.status.decision is None or (
        view.status.decision.fingerprint != step.routes.fingerprint())
    decided_at = now if new_decision else view.status.decision.at
    draining = running if step.reason == "Draining" else None
    options = route_options(engine_workload(view, telemetry), _route_pools(picture, telemetry, step.routes, draining),
                            step.routes, draining, background_bytes_per_s=others_link_load)
    routes = routes_configmap(workload, options, picture.pools, view.generation,
                              decided_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"))
    desired = [with_applied_hash(o) for o in (*rendered.deployments, *rendered.services, routes)]
    # groups kept as they run: only the running placement has them, or their pool is gone
    untouched = {group_name(workload.metadata.name, *k) for k in step.run
                 if k not in target_keys or k[0] not in picture.pools}
    uid = (view.body.get("metadata") or {}).get("uid")
    owned = {(c.kind, c.name): c for c in picture.children.get(view.key, ()) if c.owned_by(uid)}
    serving_names = ({group_name(workload.metadata.name, g.pool, g.variant) for g in view.running.groups}
                     | {routes["metadata"]["name"]} if view.running is not None and missing_is_drift else set())
    drifted = _drifted(desired, owned, live or {}, serving_names)
    apply = tuple(o for o in desired
                  if owned.get((o["kind"], o["metadata"]["name"])) is None
                  or owned[(o["kind"], o["metadata"]["name"])].applied_hash
                  != o["metadata"]["annotations"]["hetplace.io/applied-hash"]
                  or (o["kind"], o["metadata"]["name"]) in drifted)
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired} | {
        (kind, name) for name in untouched for kind in ("Deployment", "Service")}
    dropped = {group_name(workload.metadata.name, *k) for k in step.delete}
    applying = {o["metadata"]["name"] for o in apply if o["kind"] == "Deployment"}
    all_ready = all(ready.get(k, False) for k in step.run) and not applying
    delete = tuple(c for key, c in sorted(owned.items())
                   if key not in wanted and (c.name in dropped or all_ready))
    if dry_run:
        apply, delete = (), ()

    moving = step.phase == "Migrating"
    serving = step.routes
    if applying and not dry_run:        # one not created yet keeps its wording: status is not rewritten once it is
        waiting = {**{k: "Deployment being updated" for k in step.run
                      if group_name(workload.metadata.name, *k) in applying}, **(waiting or {})}
    observed = {
        "Valid": Observed(True, "Valid", "spec accepted"),
        "Placed": Observed(True, step.reason, step.message),
        "SLOMet": _slo_met(serving, workload.spec.slo.latency_ms, telemetry.route_latency_ms.get(view.key, {})),
        "TelemetryFresh": telemetry.fresh,
        "Ready": Observed(False, "DryRun", "dry-run mode creates nothing") if dry_run else
        Observed(all_ready, "Ready" if all_ready else "Waiting",
                 "every group is available and its model ready" if all_ready else
                 "; ".join([step.message, *(f"{p}/{v}: {why}" for (p, v), why in sorted((waiting or {}).items()))])),
    }
    status = workload_status(
        workload.metadata.name, view.generation, serving, Phase.MIGRATING if moving else Phase.PLACED, now, observed,
        previous=view.status, decided_at=decided_at,
        moving_to=choice.target if moving else None, move_started=choice.started if moving else None,
        routes_switched=(view.routes_switched or now) if step.reason == "Draining" else None,
        leaving=draining,
        observed_ms=telemetry.route_latency_ms.get(view.key), deleted_pools=deleted).wire()
    events = _move_events(choice, step, view) + (() if dry_run else tuple(
        Note("Warning", "DriftCorrected", message) for _, message in sorted(drifted.items())))
    return Outcome(apply, delete, _changed(view, status), events,
                   "moving" if moving else ("unchanged" if choice.verdict == "keep" else "placed"), serving)


def _route_pools(picture: Picture, telemetry: Telemetry, *placements: Decision | None) -> tuple[Pool, ...]:
    """The pools of the groups that may serve a site, as observed (fallbacks are ranked on them)."""
    names = {g.pool for d in placements if d is not None for g in d.groups}
    return with_links(tuple(live_pool(picture.pools[n], picture.nodes) for n in sorted(names) if n in picture.pools),
                      [o for o in telemetry.links if o.pool in names])


def _drifted(desired: list[dict], owned: Mapping[tuple[str, str], Child], live: Mapping[tuple[str, str], Mapping | None],
             serving_names: set[str]) -> dict[tuple[str, str], str]:
    """Of the objects wanted, those someone else deleted or changed, with what changed. An object
    whose applied hash differs from the one wanted is being updated by hetplace anyway: what it
    holds is not drift. `serving_names`: objects of what serves, whose absence is a deletion."""
    found = {}
    for o in desired:
        key = (o["kind"], o["metadata"]["name"])
        if key in live:
            body = live[key]
            if body is None:
                found[key] = f"{key[0]} {key[1]} was deleted: re-created"
            elif ((body.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH) == \
                    o["metadata"]["annotations"][APPLIED_HASH] and (changed := differences(o, body)):
                found[key] = describe(*key, changed)
        elif key[1] in serving_names and key not in owned:
            found[key] = f"{key[0]} {key[1]} was deleted: re-created"
    return found


def _sizes(decision: Decision) -> dict[GroupKey, int]:
    return {(g.pool, g.variant): g.replicas for g in decision.groups}


def _slo_met(decision: Decision, slo_ms: float, observed_ms: Mapping[str, float]) -> Observed:
    """Observed latency decides where clients report it; the prediction elsewhere."""
    seen = {r.site: observed_ms[r.site] for g in decision.groups for r in g.routes if r.site in observed_ms}
    if seen:
        site, worst = max(seen.items(), key=lambda item: item[1])
        verdict = "within" if worst <= slo_ms else "over"
        return Observed(worst <= slo_ms, "ObservedWithinSLO" if worst <= slo_ms else "ObservedOverSLO",
                        f"worst observed route latency {two_digits(worst):g} ms ({site}) {verdict} SLO {slo_ms:g} ms")
    worst = decision.worst_latency_ms
    if worst <= slo_ms:
        return Observed(True, "PredictedWithinSLO", f"worst predicted route latency {worst:.1f} ms <= SLO {slo_ms:g} ms")
    return Observed(False, "PredictedOverSLO", f"worst predicted route latency {worst:.1f} ms > SLO {slo_ms:g} ms")


def _move_events(choice: Choice, step: Step, view: WorkloadView) -> tuple[Note, ...]:
    if choice.verdict != "move":
        return ()
    notes = []
    if view.migration_target is None:         # the move starts now (not one read back from status)
        what = ", ".join(f"{g.pool}/{g.variant} x{g.replicas}" for g in choice.target.groups)
        notes.append(Note("Normal", "Placing" if view.running is None else "Moving", f"{choice.reason}: to {what}"))
    if step.finished:
        notes.append(Note("Warning" if step.reason == "MoveTimedOut" else "Normal", step.reason, step.message))
    return tuple(notes)


def _refused(view: WorkloadView, choice: Choice, telemetry: Telemetry, now: datetime,
             deleted: frozenset[str] = frozenset(), unavailable: tuple[str, ...] = ()) -> Outcome:
    """Invalid spec or no feasible placement: what runs keeps running, and status says why. What
    runs on a ComputePool that was deleted runs on unmanaged: phase Degraded, Placed=False. Ready
    follows what is live: False while a Deployment of what runs is `unavailable`."""
    keeping = (f"; {', '.join(f'{g.pool}/{g.variant}' for g in view.running.groups)} keeps serving"
               if view.running is not None else "")
    if choice.verdict == "invalid":
        phase, reason = Phase.INVALID, "InvalidSpec"
        observed = {"Valid": Observed(False, reason, choice.reason + keeping)}
    elif deleted:
        phase, reason = Phase.DEGRADED, "PoolDeleted"
        observed = {"Valid": Observed(True, "Valid", "spec accepted"),
                    "Placed": Observed(False, reason, _pools_deleted(view, deleted) +
                                       f"; no placement meets the spec: {choice.reason}")}
    else:
        phase, reason = Phase.INFEASIBLE, "Infeasible"
        observed = {"Valid": Observed(True, "Valid", "spec accepted"),
                    "Placed": Observed(False, reason, f"no placement meets the spec: {choice.reason}{keeping}")}
    observed["TelemetryFresh"] = telemetry.fresh
    if unavailable:
        observed["Ready"] = Observed(False, "Waiting", "; ".join(f"Deployment {name} not available"
                                                                 for name in unavailable))
    elif view.running is not None and view.status is not None and any(
            c.type == "Ready" and c.reason == "Waiting" for c in view.status.conditions):
        observed["Ready"] = Observed(True, "Ready", "every group of what runs is available (its model is not "
                                                    "probed while the spec is refused)")
    for c in (view.status.conditions if view.status else ()):      # what runs is as it was
        if c.type not in observed:
            observed[c.type] = Observed({"True": True, "False": False}.get(c.status), c.reason, c.message)
    name = (view.body.get("metadata") or {}).get("name", "")
    previous = view.status
    status = workload_status(name, view.generation, view.running, phase, now, observed, previous=previous,
                             decided_at=previous.decision.at if previous and previous.decision else now,
                             deleted_pools=deleted).wire()
    if choice.verdict == "infeasible":
        status["rejected"] = workload_status(name, view.generation, choice.target, phase, now, observed).wire()["rejected"]
    message = observed["Valid"].message if choice.verdict == "invalid" else observed["Placed"].message
    # said before: the same reason and message but for its figures (a refused workload is decided
    # again every cycle, and a latency or a link's load in its message moves with telemetry)
    said_before = previous is not None and previous.phase == phase and any(
        c.reason == reason and _figures_apart(c.message) == _figures_apart(message) for c in previous.conditions)
    events = () if said_before else (Note("Warning", reason, message),)
    return Outcome((), (), _changed(view, status), events, choice.verdict, view.running)


def _figures_apart(message: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "#", message)


def _unavailable(view: WorkloadView, picture: Picture) -> tuple[str, ...]:
    """The Deployments of what runs that are not available now (deleted, scaled to 0, rolling)."""
    if view.running is None:
        return ()
    name = (view.body.get("metadata") or {}).get("name", "")
    uid = (view.body.get("metadata") or {}).get("uid")
    available = {c.name for c in picture.children.get(view.key, ())
                 if c.kind == "Deployment" and c.available and c.owned_by(uid)}
    return tuple(sorted(group_name(name, g.pool, g.variant) for g in view.running.groups
                        if group_name(name, g.pool, g.variant) not in available))


def _deleted_pools(view: WorkloadView, picture: Picture) -> frozenset[str]:
    """The pools of what runs (or is left draining) that no longer exist."""
    return frozenset(g.pool for d in (view.running, view.leaving) if d is not None for g in d.groups
                     if g.pool not in picture.pools and g.pool not in picture.pool_views)


def _pools_deleted(view: WorkloadView, deleted: frozenset[str]) -> str:
    groups = ", ".join(f"{g.pool}/{g.variant}" for g in view.running.groups if g.pool in deleted)
    return (f"ComputePool {', '.join(sorted(deleted))} deleted: {groups} runs on unmanaged until a placement "
            "elsewhere is ready")


def _changed(view: WorkloadView, status: dict) -> dict | None:
    return status_patch(view.body.get("status") or {}, status)


def status_patch(before: Mapping, status: dict) -> dict | None:
    """The merge patch from the status stored to `status` (null removes a field), or None when equal."""
    patch = {**{k: None for k in before if k not in status}, **status}
    return None if all(before.get(k) == v for k, v in patch.items()) else patch
