"""What every workload holds in the pools and on the links, kept current as the workload index
changes, so that deciding one workload costs one placement whatever the size of the fleet.

The engine's `Ledger` is rebuilt only when the pools or the links change (a pool edited, Nodes
changed, a telemetry reading); a workload's status change replaces just its own charge.

A decision is charged the moment it is made (`charge`), not when its status write comes back
through the watch: decisions made one after another, before any of their writes is seen, would
otherwise each take the same free capacity and bandwidth. The caller `settle`s it once the write
is done or has failed; until then the decision is what the workload holds.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable

from hetplace.controller.inventory import WorkloadView
from hetplace.engine.decision import Decision
from hetplace.engine.snapshot import Pool, Snapshot, Traffic, Workload
from hetplace.engine.usage import Ledger


class FleetLedger:
    """The charges of every placed workload; thread-safe (the index and the deciding thread share it)."""

    def __init__(self, to_engine: Callable[[WorkloadView], Workload]) -> None:
        """`to_engine`: a workload as the engine plans it now (observed traffic, corrections)."""
        self.lock = threading.RLock()
        self.to_engine = to_engine
        # per workload: the last view with a valid spec (its pods run by it even while an edit is
        # refused), the workload as the engine read it then, and what it holds
        self._held: dict[str, tuple[WorkloadView, Workload, Decision]] = {}
        self._gone: set[str] = set()            # uids deleted: a late status write does not revive them
        self._pending: dict[str, tuple[Workload, Decision]] = {}    # decided, status not yet written
        self._pools: tuple[Pool, ...] | None = None
        self._ledger: Ledger | None = None

    def update(self, view: WorkloadView) -> bool:
        """Charge what `view` holds now: the placement it is bringing up, else the one serving. True
        when a placement it held changed or was let go (others refused before may fit now; a first
        placement only takes room).

        A placement is charged with the spec it was placed for: a spec that was refused (invalid,
        or infeasible: 999,999 req/s, a 0.01 ms SLO) or not decided yet runs nothing of what it asks,
        so it keeps the charge of the last spec placed; read first after a restart, what runs is
        charged at the rates its status gives, protected at the latencies it was predicted."""
        held = view.migration_target or view.running
        uid = (view.body.get("metadata") or {}).get("uid", "")
        with self.lock:
            if uid in self._gone:
                return False
            before = self._held.get(view.key)
            same_uid = before is not None and (before[0].body.get("metadata") or {}).get("uid") == uid
            if held is None:
                if (before is not None and view.kept_status is None and before[0].generation == view.generation
                        and same_uid):
                    return False    # an event from before the operator's own status write, delivered after it
                self._drop(view.key)
                return before is not None
            placed_as_is = view.accepted and (view.kept_status is None or view.kept_status.placed_at(view.generation))
            moved = before is not None and before[2].fingerprint() != held.fingerprint()
            if placed_as_is:
                w = self.to_engine(view)
            elif before is not None and same_uid and not moved:
                view, w = before[0], self.to_engine(before[0])      # the spec that was placed
            elif view.accepted:
                view = dataclasses.replace(view, engine=as_running(view.engine, held))
                w = self.to_engine(view)
            else:
                return False        # nothing known of what it runs: a reconcile reads it afresh
            self._held[view.key] = (view, w, held)
            if view.key not in self._pending:       # a decision being written stays charged until settled
                self._charge(w, held)
            return moved

    def charge(self, key: str, w: Workload, decision: Decision) -> None:
        """Charge a decision just made, before its status is written (see the module's note)."""
        with self.lock:
            self._pending[key] = (w, decision)
            self._charge(w, decision)

    def settle(self, key: str) -> None:
        """The decision's write is done (or failed): the workload holds what its status says again."""
        with self.lock:
            pending = self._pending.pop(key, None)
            if pending is None:
                return
            held = self._held.get(key)
            if held is not None:
                self._charge(held[1], held[2])
            elif self._ledger is not None:
                self._ledger.remove(pending[0])

    def _charge(self, w: Workload, held: Decision) -> None:
        if self._ledger is not None:
            if all(g.pool in self._ledger.pools for g in held.groups):
                self._ledger.add(w, held)
            else:
                self._ledger.remove(w)

    def _drop(self, key: str) -> None:
        held = self._held.pop(key, None)
        if held is not None and self._ledger is not None and key not in self._pending:
            self._ledger.remove(held[1])

    def forget(self, key: str, uid: str = "") -> None:
        with self.lock:
            if uid:
                self._gone.add(uid)
            self._drop(key)
            pending = self._pending.pop(key, None)
            if pending is not None and self._ledger is not None:
                self._ledger.remove(pending[0])

    def ledger_for(self, pools: tuple[Pool, ...]) -> Ledger:
        """The ledger against `pools` (rebuilt if they differ from last time). Hold `lock` while using it."""
        with self.lock:
            if self._ledger is None or self._pools != pools:
                names = {p.name for p in pools}
                # read each workload again (telemetry may have changed it)
                self._held = {k: (v, self.to_engine(v), d) for k, (v, _, d) in self._held.items()}
                charges = {k: (w, d) for k, (_, w, d) in self._held.items()}
                charges.update(self._pending)
                self._ledger = Ledger(pools, [(w, d) for w, d in charges.values()
                                              if all(g.pool in names for g in d.groups)])
                self._pools = pools
            return self._ledger

    def others_link_load(self, key: str, pools: tuple[Pool, ...]) -> dict[tuple[str, str], float]:
        """Bytes/s every other workload sends over each (site, pool) link: what a fallback of `key`'s
        routes shares its link with."""
        with self.lock:
            ledger = self.ledger_for(pools)
            own = ledger.links_of(key)
            return {link: rate - own.get(link, 0.0) for link, rate in ledger.link_load.items()
                    if rate - own.get(link, 0.0) > 0.0}

    def snapshot(self, pools: tuple[Pool, ...]) -> tuple[Snapshot, Ledger]:
        return Snapshot(pools), self.ledger_for(pools)

    def reset(self) -> None:
        """Rebuild at the next decision (the links or the latency corrections changed)."""
        with self.lock:
            self._ledger = None


def as_running(w: Workload, running: Decision) -> Workload:
    """`w` with the traffic its running placement serves (its status' route rates), and an SLO no
    tighter than the latency predicted for those routes: the spec asks for something else, but
    what runs takes what it was placed with."""
    rates: dict[str, float] = {}
    for g in running.groups:
        for r in g.routes:
            rates[r.site] = rates.get(r.site, 0.0) + r.requests_per_second
    return dataclasses.replace(w, traffic=tuple(Traffic(site, rps) for site, rps in sorted(rates.items())),
                               slo_latency_ms=max(w.slo_latency_ms, running.worst_latency_ms))
