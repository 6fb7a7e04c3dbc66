"""The README's `make run`: embedded Redis, web, worker and simulator; one per checkout; Ctrl-C
stops all in order, the worker finishing its batch; data, and the simulator's logins, kept."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import requests

from bot.demo import PAGE
from bot.launch import AlreadyRunning, lock_var_dir
from sandbox.client import SandboxControl
from storage.embedded import EmbeddedRedis, free_port
from tests.conftest import wait_until
from tests.test_readme import abridged_match, walkthrough_steps
from tests.test_sandbox_login import DialogPage

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
AUTH = {"Authorization": "Bearer sandbox-api-token"}
DEMO_OWNER, DEMO_CAFE = (
    "900000000000001",
    "104857600000998",
)  # bot/demo.py's Login user and second Page


def start(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # its own process group, like a terminal's job


def interrupt(process: subprocess.Popen) -> str:
    """Ctrl-C: SIGINT to the whole foreground group, as a terminal does."""
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=90)
    return output


def healthy(url: str, process: subprocess.Popen):
    if process.poll() is not None:
        raise AssertionError(f"make run exited early:\n{process.stdout.read()}")
    try:
        answer = requests.get(f"{url}/healthz", timeout=1)
    except (requests.ConnectionError, requests.Timeout):  # refused, or still starting
        return None
    return answer.status_code == 200 and answer.json()


def follow_the_walkthrough(port: int) -> list[object]:
    """Each step of the README's walkthrough, typed into bash against this `make run`; a step
    that reads (no body sent) is run again until it prints what the README shows, as the README
    tells the reader to. Returns what each step printed."""
    printed = []
    for step in walkthrough_steps():
        command = step.command.replace("localhost:8000", f"127.0.0.1:{port}")
        script = f"export AUTH='Authorization: Bearer sandbox-api-token'\n{command}"

        def run(script=script):
            done = subprocess.run(
                ["bash", "-c", script], capture_output=True, text=True, timeout=10
            )
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout) if done.stdout.strip() else None

        def run_until_as_shown(run=run, expected=step.expected):
            output = run()
            return output if abridged_match(expected, output) else None

        output = run()
        if (
            step.expected is not None
            and " -d " not in command
            and not abridged_match(step.expected, output)
        ):
            output = wait_until(run_until_as_shown, timeout=30)
        assert step.expected is None or abridged_match(step.expected, output), (command, output)
        printed.append(output)
    return printed


def outcomes(url: str, run_id: str) -> dict:
    run = wait_until(
        lambda: (
            (r := requests.get(f"{url}/api/v1/runs/{run_id}", headers=AUTH, timeout=5).json())[
                "state"
            ]
            == "done"
            and r
        ),
        timeout=30,
    )
    return {c["id"]: (c["outcome"], c["reason_code"]) for c in run["contacts"]}


def csrf_token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def connect_demo_cafe(url: str, simulator_url: str) -> str:
    """A newcomer's New profile: operator sign-in, the simulator's Facebook Login, a Page picked."""
    with requests.Session() as browser:
        csrf = csrf_token(browser.get(f"{url}/login", timeout=5).text)
        assert browser.post(
            f"{url}/login", data={"password": "sandbox", "csrf_token": csrf}, timeout=5
        ).ok
        csrf = csrf_token(browser.get(f"{url}/profiles/new", timeout=5).text)
        to_facebook = browser.post(
            f"{url}/profiles/new",
            data={"name": "Café", "csrf_token": csrf},
            allow_redirects=False,
            timeout=5,
        )
        dialog_url = to_facebook.headers["Location"]
        assert dialog_url.startswith(simulator_url)
        dialog = DialogPage(browser.get(dialog_url, timeout=5).text)
        back = browser.post(
            f"{simulator_url}{dialog.action}",
            data={**dialog.hidden, "user_id": DEMO_OWNER},
            allow_redirects=False,
            timeout=5,
        )
        assert browser.get(back.headers["Location"], timeout=5).url.endswith("/profiles/new")
        saved = browser.post(
            f"{url}/profiles/new/save",
            data={"page_id": DEMO_CAFE, "name": "Café", "status": "enabled", "csrf_token": csrf},
            allow_redirects=False,
            timeout=5,
        )
        assert saved.status_code == 302 and "/profiles/" in saved.headers["Location"], saved.text
        return saved.headers["Location"].rsplit("/", 1)[1]


def profile(url: str, profile_id: str) -> dict:
    return requests.get(f"{url}/api/v1/profiles/{profile_id}", headers=AUTH, timeout=5).json()


def checked_since(url: str, profile_id: str, since: float) -> dict | None:
    """The profile once a health check has run after `since` (epoch seconds)."""
    found = profile(url, profile_id)
    checked = found["health_checked_at"]
    return found if checked and datetime.fromisoformat(checked).timestamp() >= int(since) else None


def test_make_run_serves_refuses_a_second_stops_in_order_and_keeps_data(tmp_path):
    port, sandbox_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "FB_APP_ID", "SANDBOX")}
    env.update(
        VAR_DIR=str(tmp_path / "var"),
        PORT=str(port),
        SANDBOX_PORT=str(sandbox_port),
        WEB_CONCURRENCY="1",
        ACCESS_LOG="",
        LOG_LEVEL="WARNING",
    )
    url, simulator_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sandbox_port}"
    socket_path = tmp_path / "var" / "redis" / "redis.sock"

    first = start(env)
    try:
        assert wait_until(lambda: healthy(url, first), timeout=60) == {
            "status": "ok",
            "redis": "ok",
        }
        follow_the_walkthrough(port)  # the README's steps print what it says they print
        assert outcomes(url, "demo-1") == {
            "ann": ("sent", ""),
            "ben": ("sent", ""),
            "cara": ("sent", ""),
            "dan": ("warning", "template_field_missing"),
            "eve": ("warning", "no_optin"),
        }
        assert (
            requests.put(
                f"{url}/api/v1/contacts/c-1",
                json={"fields": {"FIRSTNAME": "Ann"}},
                headers=AUTH,
                timeout=5,
            ).status_code
            == 200
        )

        # A second `make run` in the same checkout refuses at once and touches nothing.
        launcher = next(
            p for p in psutil.Process(first.pid).children() if "bot.launch" in " ".join(p.cmdline())
        )
        second = subprocess.run(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode != 0
        assert f"make run is already running (pid {launcher.pid})" in second.stderr, (
            second.stdout + second.stderr
        )
        assert "embedded Redis" not in second.stdout and socket_path.exists()
        assert (
            requests.get(f"{url}/api/v1/contacts/c-1", headers=AUTH, timeout=5).status_code == 200
        )

        cafe = connect_demo_cafe(url, simulator_url)
        assert profile(url, cafe)["health"] == "ok"

        # A send Facebook answers only after 7 s, in flight at Ctrl-C (honcho killed at 5 s).
        with SandboxControl(simulator_url) as control:
            control.configure(latency_ms=7000)
            requests.post(
                f"{url}/api/v1/programs/demo/nodes/welcome/runs",
                headers=AUTH,
                timeout=5,
                json={"run_id": "slow-1", "contacts": [{"id": "ann"}]},
            ).raise_for_status()
            wait_until(
                lambda: control.sends(page_id=PAGE["id"], recipient="6543210987600101")[1:],
                timeout=30,
            )
    finally:
        output = interrupt(first)
    assert "launch: stopping: worker finishing its batch (up to 15 s" in output, output
    assert output.index("worker finishing its batch") < output.index("stopping: web, sandbox")
    assert "make: ***" not in output, output  # no "Error 130" or "Interrupt" from make
    assert "embedded Redis stopped" in output, output
    assert not socket_path.exists()
    assert list((tmp_path / "var" / "redis").glob("appendonly*")), "no append-only data kept"
    assert (tmp_path / "var" / "sandbox-state.json").exists()

    restarted_at = time.time()
    again = start(env)
    try:
        wait_until(lambda: healthy(url, again), timeout=60)
        contact = requests.get(f"{url}/api/v1/contacts/c-1", headers=AUTH, timeout=5).json()
        assert contact["fields"] == {"FIRSTNAME": "Ann"}
        assert outcomes(url, "slow-1") == {
            "ann": ("sent", "")
        }  # its answer came before the worker stopped
        # The worker checks every token at start; the simulator still honours the Café's token.
        checked = wait_until(lambda: checked_since(url, cafe, restarted_at), timeout=60)
        assert (checked["health"], checked["health_reason"]) == ("ok", "")
    finally:
        interrupt(again)
    assert again.returncode is not None


def test_the_lock_refuses_a_second_holder_and_ignores_a_stale_file(tmp_path):
    (tmp_path / "make-run.pid").write_text("4194999\n")  # left by a run that was killed
    held = lock_var_dir(tmp_path)
    try:
        assert (tmp_path / "make-run.pid").read_text() == f"{os.getpid()}\n"
        with pytest.raises(
            AlreadyRunning, match=f"make run is already running \\(pid {os.getpid()}\\)"
        ):
            lock_var_dir(tmp_path)
    finally:
        held.close()
    lock_var_dir(tmp_path).close()  # free again once its holder is gone


def test_a_second_embedded_redis_on_the_same_data_refuses_and_leaves_the_first_alone(tmp_path):
    """It used to delete the running server's socket and open the same append-only file."""
    with EmbeddedRedis(tmp_path / "redis") as first:
        assert first.socket_path, "the path is too long for a unix socket"
        with pytest.raises(
            RuntimeError, match=f"a redis-server \\(pid {first.process.pid}\\) already serves"
        ):
            EmbeddedRedis(tmp_path / "redis").start()
        assert first.socket_path.exists()
        first.kill()  # as when its launcher was killed: the socket file stays, nobody answers
    assert first.socket_path.exists()
    second = EmbeddedRedis(tmp_path / "redis")
    second.start()
    second.stop()
