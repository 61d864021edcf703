"""The benchmarks run at a smoke size and write what bench/README.md reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

REPO = Path(__file__).resolve().parents[1]


def test_bench_smoke_writes_results_and_agrees_with_brute_force(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    latency = json.loads((tmp_path / "decision-latency.json").read_text())
    assert {row["objective"] for row in latency["rows"]} == {"MinCost", "MinLatency"}
    for row in latency["rows"]:
        assert row["instances"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    exact = json.loads((tmp_path / "exactness-vs-brute-force.json").read_text())
    for row in exact["rows"]:
        assert row["agree_with_brute_force"] == row["instances"]
    assert latency["command"] and latency["machine"]["cpus"]
