"""The fix to kopf's index start-up (controller/kopf_fixes.py): waiters wake when the set turns on
or off, not on every toggle — the same answers, with work linear in the number of objects."""

from __future__ import annotations

import asyncio

import pytest
from kopf._cogs.aiokits import aiotoggles

from hetplace.controller import kopf_fixes

pytestmark = pytest.mark.unit


@pytest.fixture
def patched(monkeypatch):
    for name in ("make_toggle", "drop_toggle", "drop_toggles"):     # put back after the test
        monkeypatch.setattr(aiotoggles.ToggleSet, name, getattr(aiotoggles.ToggleSet, name))
    assert kopf_fixes.apply()


def filling_the_indexes(objects: int) -> int:
    """kopf's pattern: a toggle per object, each object waiting for all; how often the set's state
    was worked out."""
    evaluations = 0

    def counting_all(states) -> bool:
        nonlocal evaluations
        evaluations += 1
        return all(states)

    async def scenario() -> None:
        indexed = aiotoggles.ToggleSet(counting_all)
        toggles = [await indexed.make_toggle(name=f"object {i}") for i in range(objects)]

        async def one_object(toggle) -> None:
            await indexed.drop_toggle(toggle)
            await indexed.wait_for(True)

        objects_seen = []
        for toggle in toggles:          # objects arrive one after another, as the listing streams in
            objects_seen.append(asyncio.create_task(one_object(toggle)))
            await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*objects_seen), timeout=60)
        assert indexed.is_on()

    asyncio.run(scenario())
    return evaluations


def test_filling_the_indexes_is_linear_with_the_fix(patched):
    assert filling_the_indexes(400) < 10 * 400


def test_without_the_fix_it_is_quadratic():
    """What the fix is for (kopf as it is): the same pattern costs the square."""
    assert filling_the_indexes(400) > 400 * 400 / 4


def test_waiters_still_wake_when_the_set_turns(patched):
    async def scenario() -> None:
        paused = aiotoggles.ToggleSet(any)
        resumed = asyncio.create_task(paused.wait_for(False))
        conflict = await paused.make_toggle(True, name="a peer")
        stopped = asyncio.create_task(paused.wait_for(True))
        await asyncio.wait_for(stopped, 1)
        await conflict.turn_to(False)                      # a member's change still wakes the set's waiters
        await asyncio.wait_for(resumed, 1)
        again = asyncio.create_task(paused.wait_for(True))
        other = await paused.make_toggle(True, name="another peer")
        await asyncio.wait_for(again, 1)
        off = asyncio.create_task(paused.wait_for(False))
        await paused.drop_toggles([conflict, other])
        await asyncio.wait_for(off, 1)

    asyncio.run(scenario())


def test_another_kopf_version_is_left_as_it_is(monkeypatch, caplog):
    monkeypatch.setattr(kopf_fixes.kopf, "__version__", "1.46.0")
    original = aiotoggles.ToggleSet.drop_toggle
    assert not kopf_fixes.apply()
    assert aiotoggles.ToggleSet.drop_toggle is original
    assert "1.46.0" in caplog.text


def test_every_object_kopf_sees_gets_the_operators_one_memo():
    """kopf copies the operator's memo for each object it sees (ResourceMemories.recall); hetplace's
    memo copies to itself, so 40,000 watched objects do not each hold a copy."""
    from kopf._core.reactor.inventory import ResourceMemories

    from hetplace.controller.handlers import SharedMemo

    async def recall_two():
        memo, memories = SharedMemo(operator="the operator"), ResourceMemories()
        seen = [await memories.recall({"metadata": {"uid": uid}}, memobase=memo) for uid in ("a", "b")]
        return memo, [m.memo for m in seen]

    memo, given = asyncio.run(recall_two())
    assert all(m is memo for m in given) and given[0].operator == "the operator"
