"""Workloads waiting for a reconcile, each held once however many events asked for it (as
client-go's workqueue does): a key being worked on is not handed out again until it is done, and a
key added meanwhile is queued again then. Urgent keys (a child's availability changed: a Ready
status to write, a move to step) go before the rest (new specs to decide).

Only a key waits here, not the event that asked: an event handler returns at once, so kopf lets go
of the object's body, and a burst of thousands of workloads costs a name each while it waits.
Used from one event loop only."""

from __future__ import annotations

import asyncio


class WorkQueue:
    def __init__(self) -> None:
        self._urgent: dict[str, None] = {}      # insertion-ordered sets
        self._normal: dict[str, None] = {}
        self._active: set[str] = set()
        self._again: dict[str, bool] = {}       # added while active -> urgent
        self._waiters: list[asyncio.Future] = []

    def add(self, key: str, urgent: bool = False) -> None:
        if key in self._active:
            self._again[key] = self._again.get(key, False) or urgent
            return
        if key in self._urgent:
            return
        if urgent:
            self._normal.pop(key, None)
            self._urgent[key] = None
        elif key in self._normal:
            return
        else:
            self._normal[key] = None
        self._wake_one()

    async def get(self) -> str:
        """The next key to work on (urgent first, then in the order added); call `done` after."""
        while not (self._urgent or self._normal):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        lane = self._urgent if self._urgent else self._normal
        key = next(iter(lane))
        del lane[key]
        self._active.add(key)
        return key

    def done(self, key: str) -> None:
        self._active.discard(key)
        if key in self._again:
            self.add(key, urgent=self._again.pop(key))

    def forget(self, key: str) -> None:
        """A deleted workload: no reconcile is waiting for it any more."""
        self._urgent.pop(key, None)
        self._normal.pop(key, None)
        self._again.pop(key, None)

    def __len__(self) -> int:
        return len(self._urgent) + len(self._normal)

    def __contains__(self, key: str) -> bool:
        return key in self._urgent or key in self._normal or key in self._again

    def _wake_one(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return
