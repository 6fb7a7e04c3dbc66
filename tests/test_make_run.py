"""The README's `make run`: embedded Redis, web, worker and simulator; Ctrl-C stops all; data kept."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from storage.embedded import free_port
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def start(env: dict) -> subprocess.Popen:
    return subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group, like a terminal's job


def interrupt(process: subprocess.Popen) -> str:
    """Ctrl-C: SIGINT to the whole foreground group, as a terminal does."""
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    return output


def healthy(url: str, process: subprocess.Popen):
    if process.poll() is not None:
        raise AssertionError(f"make run exited early:\n{process.stdout.read()}")
    try:
        answer = requests.get(f"{url}/healthz", timeout=1)
    except (requests.ConnectionError, requests.Timeout):  # refused, or still starting
        return None
    return answer.status_code == 200 and answer.json()


def demo_run(url: str, auth: dict) -> dict:
    """The README's sandbox walkthrough: hand the demo contacts to the demo node."""
    body = {"run_id": "demo-1", "contacts": [{"id": c} for c in ("ann", "ben", "cara", "dan", "eve")]}
    answer = requests.post(f"{url}/api/v1/programs/demo/nodes/welcome/runs", json=body, headers=auth, timeout=5)
    assert answer.status_code == 202, answer.text
    run = wait_until(lambda: (r := requests.get(f"{url}/api/v1/runs/demo-1", headers=auth, timeout=5).json())
                     ["state"] == "done" and r, timeout=30)
    return {c["id"]: (c["outcome"], c["reason_code"]) for c in run["contacts"]}


def test_make_run_serves_healthz_stops_cleanly_and_keeps_data(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "FB_APP_ID", "SANDBOX")}
    env.update(VAR_DIR=str(tmp_path / "var"), PORT=str(port), SANDBOX_PORT=str(free_port()),
               WEB_CONCURRENCY="1", ACCESS_LOG="")
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer sandbox-api-token"}

    first = start(env)
    try:
        assert wait_until(lambda: healthy(url, first), timeout=60) == {"status": "ok", "redis": "ok"}
        assert demo_run(url, auth) == {"ann": ("sent", ""), "ben": ("sent", ""), "cara": ("sent", ""),
                                       "dan": ("warning", "template_field_missing"), "eve": ("warning", "no_optin")}
        stats = wait_until(lambda: (s := requests.get(f"{url}/api/v1/profiles/1/stats", headers=auth, timeout=5)
                                    .json())["days"] and s["days"][0]["read"] == 3 and s, timeout=30)
        assert stats["delivered_last_7_days"] == 3
        assert requests.put(f"{url}/api/v1/contacts/c-1", json={"fields": {"FIRSTNAME": "Ann"}},
                            headers=auth, timeout=5).status_code == 200
    finally:
        output = interrupt(first)
    assert "embedded Redis stopped" in output, output
    assert not (tmp_path / "var" / "redis" / "redis.sock").exists()
    assert list((tmp_path / "var" / "redis").glob("appendonly*")), "no append-only data kept"

    second = start(env)
    try:
        wait_until(lambda: healthy(url, second), timeout=60)
        contact = requests.get(f"{url}/api/v1/contacts/c-1", headers=auth, timeout=5).json()
        assert contact["fields"] == {"FIRSTNAME": "Ann"}
    finally:
        interrupt(second)
    assert second.returncode is not None
