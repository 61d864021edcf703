"""Make-before-break moves: nothing serving is removed before its replacement is ready."""

from __future__ import annotations

import pytest

from hetplace.controller.moves import InFlight, advance
from hetplace.engine.decision import Decision, GroupPlan, RoutePlan

CPU, ARM = ("cpu-cloud-eu", "openvino-int8"), ("arm-factory-eu-1", "trt-int8-orin")


def placement(*groups: tuple[tuple[str, str], int, tuple[str, ...]]) -> Decision:
    plans = tuple(GroupPlan(pool, variant, replicas, 0.1 * replicas,
                            tuple(RoutePlan(site, "raw", 10, 50, 10, 40, 0.1) for site in sites))
                  for (pool, variant), replicas, sites in groups)
    return Decision("factory/defect-detector", True, "MinCost", sum(g.cost_per_hour for g in plans), plans, (), "")


NOMINAL = placement((CPU, 3, ("cloud-eu", "factory-eu-1")))
DROPPED = placement((ARM, 1, ("factory-eu-1",)), (CPU, 2, ("cloud-eu",)))
MOVE = InFlight(NOMINAL, DROPPED, started_s=1000, timeout_s=600)


def test_while_the_new_group_is_not_ready_both_run_and_routes_stay():
    step = advance(MOVE, {CPU: True, ARM: False}, now_s=1030)
    assert step.phase == "Migrating" and step.reason == "Moving" and not step.finished
    assert step.run == {CPU: 3, ARM: 1}          # the kept group keeps its larger size until the switch
    assert step.delete == () and step.routes is NOMINAL
    assert "arm-factory-eu-1/trt-int8-orin" in step.message


def test_once_every_new_group_is_ready_routes_switch_and_kept_groups_take_their_new_size():
    step = advance(MOVE, {CPU: True, ARM: True}, now_s=1090)
    assert step.phase == "Placed" and step.reason == "Moved" and step.finished
    assert step.routes is DROPPED and step.run == {ARM: 1, CPU: 2} and step.delete == ()


def test_a_move_off_a_pool_removes_the_old_group_only_after_the_switch():
    back = InFlight(DROPPED, NOMINAL, started_s=0, timeout_s=600)
    waiting = advance(back, {CPU: False}, now_s=10)
    assert waiting.delete == () and waiting.run == {CPU: 3, ARM: 1} and waiting.routes is DROPPED
    done = advance(back, {CPU: True}, now_s=20)
    assert done.delete == (ARM,) and done.routes is NOMINAL


@pytest.mark.parametrize("now_s, times_out", [(1600, False), (1601, True)],
                         ids=["at the timeout it still waits", "past the timeout it goes back"])
def test_a_stuck_move_goes_back_to_the_old_placement_with_the_reason(now_s, times_out):
    step = advance(MOVE, {CPU: True, ARM: False}, now_s=now_s)
    if not times_out:
        assert step.phase == "Migrating"
        return
    assert step.reason == "MoveTimedOut" and step.finished and step.phase == "Placed"
    assert step.routes is NOMINAL and step.run == {CPU: 3} and step.delete == (ARM,)
    assert "not ready after 601 s" in step.message


def test_a_first_placement_has_nothing_to_protect():
    step = advance(InFlight(None, NOMINAL, 0, 600), {}, now_s=0)
    assert step.routes is NOMINAL and step.run == {CPU: 3} and step.delete == ()
    assert step.phase == "Placed" and not step.finished
    assert advance(InFlight(None, NOMINAL, 0, 600), {CPU: True}, now_s=5).finished


BACK = dict(old=DROPPED, new=NOMINAL, started_s=0, timeout_s=600, drain_s=60)


@pytest.mark.parametrize("switched_s, ready, now_s, reason, delete", [
    pytest.param(None, True, 20, "Draining", (), id="new group ready: routes switch, the old group drains"),
    pytest.param(20, True, 79, "Draining", (), id="within the drain time the old group stays"),
    pytest.param(20, True, 80, "Moved", (ARM,), id="after the drain time the old group goes"),
    pytest.param(20, False, 700, "Moved", (ARM,),
                 id="once switched a move never goes back, even past its timeout"),
])
def test_the_groups_a_move_leaves_behind_drain_after_the_routes_switch(switched_s, ready, now_s, reason, delete):
    step = advance(InFlight(**BACK, switched_s=switched_s), {CPU: ready}, now_s=now_s)
    assert (step.reason, step.delete) == (reason, delete)
    assert step.routes is NOMINAL, "routes point at the new placement from the switch on"
    if reason == "Draining":
        assert step.run == {CPU: 3, ARM: 1} and step.phase == "Migrating" and not step.finished
