"""The operator's work queue: a workload waits once however many events ask for it, is never worked
on by two workers at once, is looked at again when asked for while being worked on, and a
child's change (urgent) goes before new specs."""

from __future__ import annotations

import asyncio

import pytest

from hetplace.controller.workqueue import WorkQueue

pytestmark = pytest.mark.unit


def run(scenario):
    return asyncio.run(asyncio.wait_for(scenario(), timeout=10))


def test_a_key_asked_for_many_times_waits_once_in_the_order_first_asked():
    async def scenario():
        queue = WorkQueue()
        for key in ("ns/a", "ns/b", "ns/a", "ns/c", "ns/b"):
            queue.add(key)
        assert len(queue) == 3
        return [await queue.get() for _ in range(3)]
    assert run(scenario) == ["ns/a", "ns/b", "ns/c"]


def test_urgent_keys_go_first_and_a_waiting_key_made_urgent_moves_up():
    async def scenario():
        queue = WorkQueue()
        queue.add("ns/new-1")
        queue.add("ns/new-2")
        queue.add("ns/ready", urgent=True)
        queue.add("ns/new-2", urgent=True)
        queue.add("ns/ready")            # asked for again, not urgently: stays urgent
        return [await queue.get() for _ in range(3)], len(queue)
    assert run(scenario) == (["ns/ready", "ns/new-2", "ns/new-1"], 0)


def test_a_key_being_worked_on_is_not_handed_out_again_until_done_then_once_more():
    async def scenario():
        queue = WorkQueue()
        queue.add("ns/a")
        key = await queue.get()
        queue.add("ns/a")                # an event while it is being reconciled
        queue.add("ns/a", urgent=True)
        assert len(queue) == 0, "not handed to a second worker meanwhile"
        second = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0.05)
        assert not second.done()
        queue.done(key)
        again = await asyncio.wait_for(second, 1)
        queue.done(again)
        assert len(queue) == 0 and "ns/a" not in queue
        return again
    assert run(scenario) == "ns/a"


def test_waiting_workers_are_woken_one_per_key_and_a_deleted_workload_is_forgotten():
    async def scenario():
        queue = WorkQueue()
        workers = [asyncio.ensure_future(queue.get()) for _ in range(3)]
        await asyncio.sleep(0.01)
        queue.add("ns/a")
        queue.add("ns/b")
        await asyncio.sleep(0.05)
        got = sorted(w.result() for w in workers if w.done())
        assert got == ["ns/a", "ns/b"] and sum(not w.done() for w in workers) == 1
        queue.add("ns/gone")
        queue.forget("ns/gone")
        queue.add("ns/c")
        await asyncio.sleep(0.05)
        last = [w for w in workers if w.done() and w.result() not in got]
        return [w.result() for w in last]
    assert run(scenario) == ["ns/c"], "the deleted workload is not reconciled"
