"""The send-throughput benchmark runs end to end at its smoke size and prints its ratios."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_send_throughput_benchmark_quick_run_prints_the_ratio():
    done = subprocess.run([sys.executable, "-m", "bench.send_throughput", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ratio service/baseline: " in done.stdout, done.stdout[-3000:]
    assert "ratio service/ideal: " in done.stdout
