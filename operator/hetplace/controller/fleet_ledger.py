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

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._held: dict[str, tuple[Workload, Decision]] = {}
        self._pools: tuple[Pool, ...] | None = None
        self._ledger: Ledger | None = None

    def update(self, view: WorkloadView, to_engine: Callable[[WorkloadView], Workload]) -> None:
        """Charge what `view` holds now: the placement it is bringing up, else the one serving."""
        held = view.migration_target or view.running
        with self.lock:
            if view.valid is None or held is None:
                self.forget(view.key)
                return
            w = to_engine(view)
            self._held[view.key] = (w, held)
            if self._ledger is not None:
                if all(g.pool in self._ledger.pools for g in held.groups):
                    self._ledger.add(w, held)
                else:
                    self._ledger.remove(w)

    def forget(self, key: str) -> None:
        with self.lock:
            held = self._held.pop(key, None)
            if held is not None and self._ledger is not None:
                self._ledger.remove(held[0])

    def ledger_for(self, pools: tuple[Pool, ...]) -> Ledger:
        """The ledger against `pools` (rebuilt if they differ from last time). Hold `lock` while using it."""
        with self.lock:
            if self._ledger is None or self._pools != pools:
                names = {p.name for p in pools}
                self._ledger = Ledger(pools, [(w, d) for w, d in self._held.values()
                                              if all(g.pool in names for g in d.groups)])
                self._pools = pools
            return self._ledger

    def snapshot(self, pools: tuple[Pool, ...]) -> tuple[Snapshot, Ledger]:
        return Snapshot(pools), self.ledger_for(pools)

    def reset(self) -> None:
        """Rebuild at the next decision (the links or the latency corrections changed)."""
        with self.lock:
            self._ledger = None
