"""What every workload holds in the pools and on the links, kept current as the workload index
changes, so that deciding one workload costs one placement whatever the size of the fleet.

The engine's `Ledger` is rebuilt only when the pools or the links change (a pool edited, Nodes
changed, a telemetry reading); a workload's status change replaces just its own charge.
"""

from __future__ import annotations

import threading
from typing import Callable

from hetplace.controller.inventory import WorkloadView
from hetplace.engine.decision import Decision
from hetplace.engine.snapshot import Pool, Snapshot, Workload
from hetplace.engine.usage import Ledger


class FleetLedger:
    """The charges of every placed workload; thread-safe (the index and the deciding thread share it)."""

    def __init__(self, to_engine: Callable[[WorkloadView], Workload] | None = None) -> None:
        self.lock = threading.RLock()
        self.to_engine = to_engine
        # per workload: the last view with a valid spec (its pods run by it even while an edit is
        # refused), the workload as the engine read it then, and what it holds
        self._held: dict[str, tuple[WorkloadView, Workload, Decision]] = {}
        self._gone: set[str] = set()            # uids deleted: a late status write does not revive them
        self._pools: tuple[Pool, ...] | None = None
        self._ledger: Ledger | None = None

    def update(self, view: WorkloadView, to_engine: Callable[[WorkloadView], Workload]) -> None:
        """Charge what `view` holds now: the placement it is bringing up, else the one serving. A
        refused spec keeps the charge of the last accepted one (what runs still runs)."""
        held = view.migration_target or view.running
        uid = (view.body.get("metadata") or {}).get("uid", "")
        with self.lock:
            self.to_engine = to_engine
            if uid in self._gone:
                return
            if held is None:
                self.forget(view.key)
                return
            if view.valid is None:
                if view.key not in self._held:
                    return
                view = self._held[view.key][0]
            w = to_engine(view)
            self._held[view.key] = (view, w, held)
            if self._ledger is not None:
                if all(g.pool in self._ledger.pools for g in held.groups):
                    self._ledger.add(w, held)
                else:
                    self._ledger.remove(w)

    def forget(self, key: str, uid: str = "") -> None:
        with self.lock:
            if uid:
                self._gone.add(uid)
            held = self._held.pop(key, None)
            if held is not None and self._ledger is not None:
                self._ledger.remove(held[1])

    def ledger_for(self, pools: tuple[Pool, ...]) -> Ledger:
        """The ledger against `pools` (rebuilt if they differ from last time). Hold `lock` while using it."""
        with self.lock:
            if self._ledger is None or self._pools != pools:
                names = {p.name for p in pools}
                if self.to_engine is not None:      # read each workload again (telemetry may have changed it)
                    self._held = {k: (v, self.to_engine(v), d) for k, (v, _, d) in self._held.items()}
                self._ledger = Ledger(pools, [(w, d) for _, w, d in self._held.values()
                                              if all(g.pool in names for g in d.groups)])
                self._pools = pools
            return self._ledger

    def snapshot(self, pools: tuple[Pool, ...]) -> tuple[Snapshot, Ledger]:
        return Snapshot(pools), self.ledger_for(pools)

    def reset(self) -> None:
        """Rebuild at the next decision (the links or the latency corrections changed)."""
        with self.lock:
            self._ledger = None
