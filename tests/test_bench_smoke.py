"""The benchmarks run end to end at their smoke sizes and print their ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_send_throughput_benchmark_quick_run_prints_the_ratio():
    done = subprocess.run(
        [sys.executable, "-m", "bench.send_throughput", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ratio service/baseline: " in done.stdout, done.stdout[-3000:]
    assert "ratio service/ideal: " in done.stdout


@pytest.mark.slow
def test_webhook_ingest_benchmark_quick_run_prints_the_ratios():
    """wrk against the app and a bare Flask app under gunicorn.conf.py; every answer 2xx and the
    events landed in Redis (the benchmark exits 1 otherwise); targets are not asserted."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.webhook_ingest", "--quick"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ratio app/baseline requests/s, 1-event POSTs: " in done.stdout, done.stdout[-3000:]
    assert "ratio app events/s, 100-event / 1-event POSTs: " in done.stdout
    assert "p99 app 1-event at 32 connections: " in done.stdout
    assert "checks: webhook_events grew by " in done.stdout


def test_machine_speed_figures_are_measured():
    """`make bench` prints the day's speed: a Python loop's time and a process round trip."""
    from bench._harness import python_speed_s, wakeup_round_trip_us

    assert 0 < python_speed_s(additions=200_000, tries=2) < 10
    assert 0 < wakeup_round_trip_us(round_trips=200) < 100_000  # returns once its child has exited
