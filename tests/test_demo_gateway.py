"""`make demo-gateway` as a user runs it: the factory's gateway fails over when its pool is killed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def test_the_gateway_demo_fails_over_losing_at_most_one_request():
    run = subprocess.run([sys.executable, str(REPO / "demo" / "gateway_failover.py")], capture_output=True,
                         text=True, timeout=180, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stdout + run.stderr
    summary = run.stdout.strip().splitlines()[-1]
    sent, lost = (int(summary.split()[0]), int(summary.split(", ")[1].split()[0]))
    assert sent == 400 and lost <= 1, summary
    rows = [line for line in run.stdout.splitlines() if line.startswith("│")]
    first, last = rows[0].split("│"), rows[-1].split("│")
    assert int(first[3]) == 50 and int(last[4]) == 50, "the primary served before the kill, the fallback after"
