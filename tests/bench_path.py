"""The benchmark's fleet generator (bench/fleet.py), importable from tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import fleet  # noqa: E402

__all__ = ["fleet"]
