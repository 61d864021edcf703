"""The operator's loop without an API server: it starts once kopf's indexes are full, a long
rebalance cycle runs beside the moves under way rather than in front of them, and a stop does not
wait for a solve that is still running."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from hetplace.config import Settings
from hetplace.controller.runtime import Operator, in_daemon_thread
from hetplace.metrics import OperatorMetrics

pytestmark = pytest.mark.unit


class Recorder:
    """Stands in for the loop's two steps, counting them."""

    def __init__(self, cycle_s: float = 0.0) -> None:
        self.cycles = self.polls = 0
        self.cycle_s = cycle_s
        self.solving = threading.Event()

    async def rebalance(self) -> None:
        self.cycles += 1
        if self.cycle_s:
            self.solving.set()
            await in_daemon_thread(time.sleep, self.cycle_s)       # a solve that outlasts many polls

    async def progress_moves(self, waiting_too: bool = False) -> None:
        self.polls += 1


def standalone_operator(recorder: Recorder, rebalance_interval_s: float = 1.0) -> Operator:
    settings = Settings(move_poll_seconds=0.05, rebalance_interval_seconds=rebalance_interval_s)
    operator = Operator(settings, kube=None, metrics=OperatorMetrics(), standalone=True)
    operator.rebalance = recorder.rebalance
    operator.progress_moves = recorder.progress_moves
    return operator


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=20))


async def until(predicate, timeout_s: float = 10.0) -> None:
    """Wait for `predicate` to hold, checking every 10 ms."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def looping(operator: Operator, indexes_full: bool = True):
    """The operator's loop running; stopped (and awaited) on the way out."""
    if indexes_full:
        operator.indexes_full.set()
    stop = asyncio.Event()
    loop = asyncio.create_task(operator.run_loop(stop))
    try:
        yield
    finally:
        stop.set()
        operator.wake_soon()
        await loop


def test_the_loop_waits_for_the_indexes_to_be_full():
    recorder = Recorder()

    async def scenario():
        operator = standalone_operator(recorder)
        async with looping(operator, indexes_full=False):
            await asyncio.sleep(0.4)        # eight polls' worth: none may happen
            assert (recorder.cycles, recorder.polls) == (0, 0), "nothing is judged on a half-read cluster"
            operator.indexes_full.set()
            await until(lambda: recorder.cycles == 1 and recorder.polls >= 3)

    run(scenario)


def test_a_long_rebalance_cycle_does_not_hold_up_the_moves_under_way():
    recorder = Recorder(cycle_s=1.5)

    async def scenario():
        operator = standalone_operator(recorder, rebalance_interval_s=1)
        async with looping(operator):
            await until(recorder.solving.is_set)
            polls = recorder.polls
            await until(lambda: recorder.polls - polls >= 8)     # moves keep being looked at every poll
            assert recorder.cycles == 1, "a cycle still solving is not started twice"

    run(scenario)


def test_a_stop_does_not_wait_for_a_solve_still_running():
    recorder = Recorder(cycle_s=30)

    async def scenario():
        operator = standalone_operator(recorder)
        async with looping(operator):
            await until(recorder.solving.is_set)
            started = time.monotonic()
        assert time.monotonic() - started < 1.0
        solver = next(t for t in threading.enumerate() if t.name == "hetplace sleep")
        assert solver.daemon, "the process can exit with the solve unfinished"

    run(scenario)


def test_a_failure_in_the_daemon_thread_reaches_the_caller():
    async def scenario():
        with pytest.raises(ZeroDivisionError):
            await in_daemon_thread(lambda: 1 / 0)
        assert await in_daemon_thread(sum, [1, 2, 3]) == 6

    run(scenario)


def test_which_workload_events_are_reconciled():
    operator = standalone_operator(Recorder())
    body = {"metadata": {"uid": "u1", "generation": 2}}
    assert operator.wants_a_look("ns/w", body), "a new workload (no status yet)"
    assert not operator.wants_a_look("ns/w", {**body, "status": {"observedGeneration": 2}}), "decided already"
    assert operator.wants_a_look("ns/w", {**body, "status": {"observedGeneration": 1}}), "its spec changed"
    operator.refused["ns/w"] = 2
    assert not operator.wants_a_look("ns/w", {**body, "status": {"observedGeneration": 1}}), \
        "the API refused this generation's objects: a new spec tries again"
    decided = {**body, "status": {"observedGeneration": 2}}
    assert not operator.wants_a_look("ns/w", decided, listed=True), "seen live since the start: nothing to resume"
    resumed = {"metadata": {"uid": "u2", "generation": 1}, "status": {"observedGeneration": 1}}
    assert operator.wants_a_look("ns/r", resumed, listed=True), "listed at start: resumed once"
    assert not operator.wants_a_look("ns/r", resumed, listed=True), "listed again (watch renewed): nothing new"


def test_a_failed_reconcile_is_tried_again_with_a_backoff():
    outcomes = ["fails", "fails", "works"]

    async def scenario():
        operator = standalone_operator(Recorder())
        attempts = []

        async def reconcile(body, planned=None):
            attempts.append(time.monotonic())
            if outcomes[len(attempts) - 1] == "fails":
                raise RuntimeError("the API went away")

        operator.reconcile = reconcile
        operator.start_workers()
        try:
            operator.queue.add("ns/w")
            await until(lambda: len(attempts) == 3 and not operator.retries)   # after 2 s, then 4 s; a success ends them
        finally:
            await operator.stop_workers()
        assert 1.8 <= attempts[1] - attempts[0] and 3.8 <= attempts[2] - attempts[1]

    run(scenario)


def test_a_workloads_lock_excludes_while_held_and_is_let_go_after():
    async def scenario():
        operator = standalone_operator(Recorder())
        inside, most_inside = 0, 0

        async def reconcile_of(key: str) -> None:
            nonlocal inside, most_inside
            async with operator.lock(key):
                inside += 1
                most_inside = max(most_inside, inside)
                await asyncio.sleep(0.05)
                inside -= 1

        await asyncio.gather(*(reconcile_of("ns/w") for _ in range(3)), reconcile_of("ns/other"))
        assert most_inside == 2         # one of ns/w at a time, beside ns/other
        assert dict(operator.locks) == {}       # none kept for a workload nobody reconciles

    run(scenario)


class RecordingKube:
    """Answers nothing exists; records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def get(self, api_version, kind, namespace, name):
        self.calls.append(("get", name))
        return None

    def apply(self, obj):
        self.calls.append(("apply", obj["metadata"]["name"]))
        return obj          # as the API answers an apply: the object it stores


def test_an_object_the_index_shows_this_workload_controls_is_applied_without_asking_who_holds_it():
    from hetplace.controller.inventory import workload_view
    from hetplace.controller.reconcile import Outcome

    operator = standalone_operator(Recorder())
    operator.kube = RecordingKube()
    view = workload_view({"metadata": {"name": "w", "namespace": "ns", "uid": "u1", "generation": 1}})
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w-pool-v", "namespace": "ns"}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "w-pool-v", "namespace": "ns"}}
    outcome = Outcome((deployment, service), (), None, (), "placed", None)
    operator.execute(view, outcome, owned=frozenset({("Deployment", "w-pool-v")}))
    assert operator.kube.calls == [("apply", "w-pool-v"), ("get", "w-pool-v"), ("apply", "w-pool-v")], \
        "the Service, not in the index as this workload's, is checked first"


class HeldByAnotherKube(RecordingKube):
    """Every object exists, controlled by another workload; Events are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []

    def get(self, api_version, kind, namespace, name):
        self.calls.append(("get", name))
        return {"metadata": {"name": name, "ownerReferences": [
            {"kind": "InferenceWorkload", "name": "rival", "uid": "u2", "controller": True}]}}

    def event(self, involved, type_, reason, message, now_iso):
        self.events.append((reason, message))


def test_an_object_not_applied_for_a_name_conflict_is_not_said_to_be_corrected():
    from hetplace.controller.inventory import workload_view
    from hetplace.controller.reconcile import Note, Outcome

    operator = standalone_operator(Recorder())
    operator.kube = HeldByAnotherKube()
    view = workload_view({"metadata": {"name": "w", "namespace": "ns", "uid": "u1", "generation": 1}})
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "w-pool-v", "namespace": "ns"}}
    notes = (Note("Warning", "DriftCorrected", "Service w-pool-v was deleted: re-created"),)
    for _ in range(2):          # the conflict is reported once; the correction is claimed neither time
        operator.execute(view, Outcome((service,), (), None, notes, "placed", None))
    assert [reason for reason, _ in operator.kube.events] == ["NameConflict"]
    assert ("apply", "w-pool-v") not in operator.kube.calls
