"""The rebalance's plan, made in a child process of its own with a hard deadline.

Planning a large fleet builds hundreds of thousands of short-lived objects (every workload's
candidate pieces, the MILP's matrices) and can run past its solver time limit in the Python work
around HiGHS. In the operator's own process that memory stays fragmented after the cycle and a
long plan cannot be stopped. In a child process the memory goes back to the system when it ends,
and a plan not ready by the deadline is abandoned by killing the child: the next cycle tries again.
The child is started with `spawn` (a fork of the multi-threaded operator could inherit held locks).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from multiprocessing.reduction import ForkingPickler
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from hetplace.engine.rebalance import Hold, Move, Running, plan_moves
from hetplace.engine.snapshot import Snapshot, Workload

_SPAWN = multiprocessing.get_context("spawn")


def _mapping_proxy(items: dict) -> MappingProxyType:
    return MappingProxyType(items)


# the engine freezes some of its mappings; multiprocessing (only) sends them as the dicts they wrap
ForkingPickler.register(MappingProxyType, lambda proxy: (_mapping_proxy, (dict(proxy),)))


class PlanningFailed(RuntimeError):
    """The plan could not be made: the deadline passed, or the child failed or died."""


def exit_with_parent() -> None:
    """End this (child) process when its parent ends: an operator killed in the middle of a plan
    leaves no planner running on, past the deadline nobody is left to enforce."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), name="hetplace parent watch",
                         daemon=True).start()


def _plan_in_child(conn: Any, args: tuple, kwargs: dict) -> None:
    exit_with_parent()
    try:
        plan = plan_moves(*args, **kwargs, clock=time.monotonic)
        conn.send(("ok", (plan.moves, plan.held)))
    except BaseException as failed:  # noqa: BLE001 — reported to the parent, which raises it
        conn.send(("failed", f"{type(failed).__name__}: {failed}"))
    finally:
        conn.close()


def plan_in_child(workloads: Sequence[Workload], snapshot: Snapshot, running: Mapping[str, Running], now_s: float,
                  *, max_moves: int, time_limit_s: float,
                  deadline_s: float) -> tuple[tuple[Move, ...], tuple[Hold, ...]]:
    """`plan_moves` in a child process: its moves and holds, or PlanningFailed after `deadline_s`
    (blocking: call it from a thread)."""
    receiving, sending = _SPAWN.Pipe(duplex=False)
    child = _SPAWN.Process(target=_plan_in_child, name="hetplace planner", daemon=True,
                           args=(sending, (list(workloads), snapshot, dict(running), now_s),
                                 {"max_moves": max_moves, "time_limit_s": time_limit_s}))
    started = time.monotonic()
    child.start()
    sending.close()
    try:
        if not receiving.poll(deadline_s):
            raise PlanningFailed(f"no plan within {deadline_s:g} s (HETPLACE_PLAN_DEADLINE_SECONDS) for "
                                 f"{len(workloads)} workloads: abandoned, the next cycle tries again")
        try:
            outcome, payload = receiving.recv()
        except EOFError:
            child.join(5)
            raise PlanningFailed(f"the planning process ended without a plan (exit code {child.exitcode}) "
                                 f"after {time.monotonic() - started:.1f} s") from None
        if outcome != "ok":
            raise PlanningFailed(f"planning failed: {payload}")
        return payload
    finally:
        receiving.close()
        if child.is_alive():
            child.kill()
        child.join(5)
