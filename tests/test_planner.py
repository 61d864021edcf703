"""The rebalance plan made in a child process (controller/planner.py): the same plan as in the
operator's own process, and a deadline that is kept whatever the child does."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_rebalance import four_tenants_on_a_pool_going_down

from hetplace.controller.planner import PlanningFailed, plan_in_child
from hetplace.engine.rebalance import plan_moves

pytestmark = pytest.mark.unit


def test_the_child_makes_the_plan_the_operators_process_would():
    tenants, snapshot, running = four_tenants_on_a_pool_going_down()
    here = plan_moves(tenants, snapshot, running, 1000, max_moves=3, time_limit_s=5)
    moves, held = plan_in_child(tenants, snapshot, running, 1000, max_moves=3, time_limit_s=5, deadline_s=120)
    assert [(m.workload, m.reason, m.after.fingerprint()) for m in moves] == \
        [(m.workload, m.reason, m.after.fingerprint()) for m in here.moves]
    assert len(moves) == 3 and held == here.held


def test_a_plan_past_its_deadline_is_abandoned_and_its_process_killed():
    tenants, snapshot, running = four_tenants_on_a_pool_going_down()
    started = time.monotonic()
    with pytest.raises(PlanningFailed, match="no plan within 0.05 s"):
        plan_in_child(tenants, snapshot, running, 1000, max_moves=3, time_limit_s=5, deadline_s=0.05)
    assert time.monotonic() - started < 10
    assert not [c for c in multiprocessing.active_children() if c.name == "hetplace planner"]


def test_a_failure_in_the_child_is_reported_not_hidden():
    tenants, snapshot, running = four_tenants_on_a_pool_going_down()
    with pytest.raises(PlanningFailed, match="planning failed: .*Error"):
        plan_in_child(tenants, snapshot, {"default/ranker-0": "not a running placement"}, 1000, max_moves=3,
                      time_limit_s=5, deadline_s=120)


ORPHAN_SCRIPT = """
import multiprocessing, time
from hetplace.controller.planner import exit_with_parent

def planner():
    exit_with_parent()
    print("watching", flush=True)
    time.sleep(120)

if __name__ == "__main__":
    child = multiprocessing.get_context("spawn").Process(target=planner, daemon=True)
    child.start()
    print(child.pid, flush=True)
    time.sleep(120)
"""


def _ended(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state     # exited, not yet reaped by whoever adopted it


def test_a_planner_ends_with_an_operator_killed_in_the_middle_of_a_plan(tmp_path):
    script = tmp_path / "operator_like.py"
    script.write_text(ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "watching"
        assert not _ended(child), "the planner runs while its parent does"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while not _ended(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _ended(child), "the planner outlived the operator that started it"
    finally:
        parent.kill()
        parent.wait(10)
        if child is not None and not _ended(child):
            os.kill(child, signal.SIGKILL)      # what a failing run left behind
