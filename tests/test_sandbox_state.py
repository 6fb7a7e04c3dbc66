"""The simulator keeps what it issued across restarts (`--state FILE`), as Facebook does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import requests

from sandbox import SandboxControl, State
from sandbox.__main__ import load_seed
from sandbox.persist import StateFile
from tests.test_sandbox_login import APP_ID, REDIRECT, SCOPES, SECRET, DialogPage

ROOT = Path(__file__).resolve().parent.parent
SEEDED, CREATED = "104857600000001", "104857600000002"  # a Page with a seed token, one without
OWNER = "900000000000001"
SEED = {
    "config": {"read_delay_ms": 3000},
    "pages": [
        {
            "id": SEEDED,
            "name": "Seeded",
            "token": "sbx-page-seeded",
            "templates": [{"name": "order_update", "language": "en", "param_count": 1}],
            "people": [{"psid": "6543210987600101", "last_interaction_ago_ms": 3_600_000}],
        }
    ],
    "users": [
        {
            "id": OWNER,
            "name": "Owner",
            "pages": [
                {"id": SEEDED, "role": "admin"},
                {"id": CREATED, "name": "Made by the seed", "role": "editor"},
            ],
        }
    ],
}


class Simulator(NamedTuple):
    process: subprocess.Popen
    url: str


def start(tmp_path: Path) -> Simulator:
    """`python -m sandbox --seed ... --state ...` on a free port, as `make run` starts it."""
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(SEED))
    env = {**os.environ, "FB_APP_ID": APP_ID, "FB_APP_SECRET": SECRET}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            "0",
            "--seed",
            str(seed),
            "--state",
            str(tmp_path / "state.json"),
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stderr:
        if " listening on " in line:
            return Simulator(process, line.split(" listening on ")[1].split()[0])
    raise AssertionError(f"the simulator did not start (exit code {process.wait(5)})")


def stop(simulator: Simulator) -> int:
    simulator.process.send_signal(signal.SIGTERM)
    code = simulator.process.wait(10)
    simulator.process.stderr.close()
    return code


@pytest.fixture
def simulators() -> Iterator[list[Simulator]]:
    """Started simulators, killed at the end if a test left one running."""
    started: list[Simulator] = []
    yield started
    for simulator in started:
        if simulator.process.poll() is None:
            simulator.process.kill()
            simulator.process.wait()
            simulator.process.stderr.close()


def graph(
    simulator: Simulator, path: str, token: str | None = None, **query: Any
) -> requests.Response:
    if token is not None:
        query["access_token"] = token
    return requests.get(f"{simulator.url}/v26.0{path}", params=query, timeout=5)


def log_in(simulator: Simulator, user_id: str) -> str:
    """The service's Facebook Login: dialog, the user's button, code exchange; a user token."""
    query = {
        "client_id": APP_ID,
        "redirect_uri": REDIRECT,
        "state": "s",
        "response_type": "code",
        "scope": SCOPES,
    }
    dialog = DialogPage(
        requests.get(f"{simulator.url}/v26.0/dialog/oauth", params=query, timeout=5).text
    )
    back = requests.post(
        f"{simulator.url}{dialog.action}",
        data={**dialog.hidden, "user_id": user_id},
        allow_redirects=False,
        timeout=5,
    )
    code = back.headers["Location"].split("code=")[1].split("&")[0]
    answer = graph(
        simulator,
        "/oauth/access_token",
        client_id=APP_ID,
        client_secret=SECRET,
        redirect_uri=REDIRECT,
        code=code,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def page_tokens(simulator: Simulator, user_token: str) -> dict[str, str]:
    answer = graph(simulator, "/me/accounts", user_token)
    assert answer.status_code == 200, answer.text
    return {page["id"]: page["access_token"] for page in answer.json()["data"]}


def token_is_valid(simulator: Simulator, token: str) -> bool:
    answer = graph(simulator, "/debug_token", f"{APP_ID}|{SECRET}", input_token=token)
    return answer.json()["data"]["is_valid"]


@pytest.mark.slow
def test_a_restarted_simulator_still_honours_the_tokens_its_login_issued(tmp_path, simulators):
    simulators.append(first := start(tmp_path))
    user_token = log_in(first, OWNER)
    tokens = page_tokens(first, user_token)
    with SandboxControl(first.url) as control:
        extra = control.create_page("Made by the control API")
        person = control.add_person(SEEDED)
    assert stop(first) == 0

    simulators.append(second := start(tmp_path))
    assert page_tokens(second, user_token) == tokens  # the same login, the same Page tokens
    assert token_is_valid(second, tokens[CREATED]) and token_is_valid(second, extra["token"])
    subscribed = graph(second, f"/{CREATED}/subscribed_apps", tokens[CREATED])
    assert subscribed.status_code == 200, subscribed.text  # was 190: a token the simulator forgot
    with SandboxControl(second.url) as control:
        assert control.create_page("Another")["id"] not in (
            SEEDED,
            CREATED,
            extra["id"],
        )  # counters kept
        assert control.add_person(SEEDED) != person
    assert stop(second) == 0
    assert not list(tmp_path.glob("*.tmp"))


def test_the_seed_over_a_kept_state_keeps_pages_users_and_templates():
    state = State()
    load_seed(state, SEED)
    page = state.page(SEEDED)
    page["subscribed_fields"] = ["messages"]  # the service subscribed meanwhile
    template_id = page["templates"][("order_update", "en")]["id"]
    created_token = state.page(CREATED)["token"]
    state.users[OWNER]["grants"]["pages_show_list"] = "granted"
    person = state.person(SEEDED, "6543210987600101")
    person["last_interaction_ms"] -= 86_400_000  # a day later

    load_seed(state, SEED)  # the next start
    assert state.page(SEEDED)["subscribed_fields"] == ["messages"]
    assert state.page(SEEDED)["templates"][("order_update", "en")]["id"] == template_id
    assert state.page(CREATED)["token"] == created_token
    assert state.users[OWNER]["grants"] == {"pages_show_list": "granted"}
    assert (
        state.now_ms() - state.person(SEEDED, "6543210987600101")["last_interaction_ms"] < 3_700_000
    )


def test_the_state_file_round_trips_and_a_failed_write_leaves_the_last_one(tmp_path, monkeypatch):
    state = State()
    load_seed(state, SEED)
    kept = StateFile(state, tmp_path / "state.json")
    assert kept.save() and not kept.save()  # nothing changed: nothing written
    before = (tmp_path / "state.json").read_text()

    state.add_page("Newer")

    def crash(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        kept.save()
    monkeypatch.undo()
    assert (tmp_path / "state.json").read_text() == before  # never half a file

    restored = State()
    assert StateFile(restored, tmp_path / "state.json").load()
    assert restored.page(CREATED)["token"] == state.page(CREATED)["token"]
    assert restored.page(SEEDED)["templates"].keys() == {("order_update", "en")}


def test_an_unreadable_state_file_is_ignored(tmp_path, caplog):
    (tmp_path / "state.json").write_text("{not json")
    state = State()
    assert not StateFile(state, tmp_path / "state.json").load()
    assert state.pages == {} and "ignoring" in caplog.text
