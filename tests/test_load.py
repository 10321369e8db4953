"""Concurrent sessions on one server see exactly what a solo session sees (benchmarks/load.py --check, small N)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.browser


def test_two_concurrent_sessions_read_the_solo_numbers() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--sessions", "2", "--seconds", "8", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ablation: toggle" in out.stdout and "FAIL" not in out.stdout
