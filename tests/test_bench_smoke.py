"""The benchmarks run end to end at their smoke sizes and print their ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench._redis_cpu import RedisMeter

ROOT = Path(__file__).resolve().parent.parent
QUICK_BENCHES = ("send_throughput", "webhook_ingest", "redis_cpu")


@pytest.fixture(scope="module")
def quick_runs() -> dict[str, subprocess.CompletedProcess]:
    """The benchmarks' smoke runs, started together (each has its own Redis and servers): the
    suite waits for the longest instead of their sum."""
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"bench.{name}", "--quick"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in QUICK_BENCHES
    }
    done = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=150)
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done


@pytest.mark.slow
def test_send_throughput_benchmark_quick_run_prints_the_ratio(quick_runs):
    done = quick_runs["send_throughput"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ratio service/baseline: " in done.stdout, done.stdout[-3000:]
    assert "ratio service/ideal: " in done.stdout
    # a script shown by name proves the SHA -> name map still matches storage/lua/
    assert "Redis CPU per send: " in done.stdout
    assert "claim (script)" in done.stdout and "finish (script)" in done.stdout


@pytest.mark.slow
def test_webhook_ingest_benchmark_quick_run_prints_the_ratios(quick_runs):
    """wrk against the app and a bare Flask app under gunicorn.conf.py; every answer 2xx and the
    events landed in Redis (the benchmark exits 1 otherwise); targets are not asserted."""
    done = quick_runs["webhook_ingest"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ratio app/baseline requests/s, 1-event POSTs: " in done.stdout, done.stdout[-3000:]
    assert "ratio app events/s, 100-event / 1-event POSTs: " in done.stdout
    assert "p99 app 1-event at 32 connections: " in done.stdout
    assert "checks: webhook_events grew by " in done.stdout
    assert "Redis CPU per event: " in done.stdout
    assert "apply_events (script)" in done.stdout


@pytest.mark.slow
def test_redis_cpu_benchmark_quick_run_prints_cpu_per_call(quick_runs):
    """Each operation's row, and a claim costs Redis more than a bare round trip."""
    done = quick_runs["redis_cpu"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {
        line[:52].strip(): float(line[52:61])
        for line in done.stdout.splitlines()
        if line.startswith("  ") and len(line) > 61
    }
    claim = next(v for k, v in rows.items() if k.startswith("claim"))
    assert claim > rows["PING (a round trip that does nothing)"]
    assert "100 delivery receipts" in rows


def test_redis_meter_names_each_script_and_the_commands_it_ran(store, redis_client):
    """The slowlog trace charges a storage script's EVALSHA, by name, with what it ran."""
    store.runs.release_lease("run-x", 9, "token")  # loads the script (a NOSCRIPT try counts)
    meter = RedisMeter(store.redis, trace=True)
    meter.start()
    for n in range(3):
        store.runs.lease_held("run-x", n)  # EXISTS, a plain command
        store.runs.release_lease("run-x", n, "token")  # lease.lua: GET (not ours: no DEL)
    usage = meter.stop()
    lease = usage.trace.scripts["lease"]
    assert (lease.calls, dict(lease.inner)) == (3, {"get": 3})
    assert usage.trace.commands["exists"].calls == 3
    assert usage.calls("evalsha") == 3 and usage.cpu_s > 0
    assert "info" not in usage.trace.commands  # the meter's own commands are left out
    assert store.redis.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"] != "0"


def test_machine_speed_figures_are_measured():
    """`make bench` prints the day's speed: a Python loop's time and a process round trip."""
    from bench._harness import python_speed_s, wakeup_round_trip_us

    assert 0 < python_speed_s(additions=200_000, tries=2) < 10
    assert 0 < wakeup_round_trip_us(round_trips=200) < 100_000  # returns once its child has exited
