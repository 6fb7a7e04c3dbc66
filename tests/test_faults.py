"""Faults, with real processes: Redis restarted during a webhook burst and during a run, the
simulator failing mid-run, a worker stopped with SIGTERM mid-batch. Nothing acknowledged may be
lost, nobody may get a message twice, every contact ends with one outcome."""

from __future__ import annotations

import json
import re
import signal
import threading
from collections import Counter

import pytest

from bot.app import create_app
from storage.embedded import EmbeddedRedis
from tests.conftest import API_TOKEN, make_settings, messenger_node, service_env, wait_until
from tests.live import LiveServer
from tests.run_fixtures import connect_page_with_people
from tests.workers import WorkerProcesses

pytestmark = pytest.mark.slow


class Deployment:
    """An app served over HTTP and worker processes, on a Redis of the test's own (append-only)."""

    def __init__(self, redis: EmbeddedRedis, sandbox_url: str, fb, log_dir, **overrides: str):
        self.redis, self.fb, self.overrides = redis, fb, overrides
        self.app = create_app(make_settings(redis.url, sandbox_url, **overrides))
        self.store = self.app.extensions["storage"]
        self.client = self.app.test_client()
        self.live = LiveServer(self.app).__enter__()
        fb.configure(webhook_url=f"{self.live.url}/webhook")
        self.workers = WorkerProcesses(
            service_env(redis.url, sandbox_url, LOG_LEVEL="INFO", **overrides), log_dir
        )

    def api(self, method: str, path: str, **kwargs):
        return self.client.open(
            f"/api/v1{path}",
            method=method.upper(),
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            **kwargs,
        )

    def page_with_people(self, n: int, name: str = "Page") -> tuple[dict, dict, list[str]]:
        contacts = [f"{name}-{i:04d}" for i in range(n)]
        page, profile = connect_page_with_people(self.fb, self.store, self.api, contacts, name)
        node = messenger_node(profile["id"])
        assert (
            self.api(
                "put", f"/programs/{name}", json={"name": name, "status": "active", "nodes": [node]}
            ).status_code
            == 201
        )
        return page, profile, contacts

    def start_run(self, program: str, contacts: list[str]) -> str:
        answer = self.api(
            "post",
            f"/programs/{program}/nodes/n1/runs",
            json={"contacts": [{"id": c} for c in contacts]},
        )
        assert answer.status_code == 202, answer.get_json()
        return answer.get_json()["run_id"]

    def run(self, run_id: str) -> dict:
        return self.api("get", f"/runs/{run_id}?limit=1000").get_json()

    def outcomes(self, run_id: str) -> dict[str, str]:
        result, cursor = {}, "0"
        while cursor is not None:
            page = self.api("get", f"/runs/{run_id}?cursor={cursor}&limit=1000").get_json()
            result.update({c["id"]: c["outcome"] for c in page["contacts"]})
            cursor = page["next_cursor"]
        return result

    def close(self) -> None:
        self.workers.stop_all()
        self.fb.reset()
        self.live.__exit__(None, None, None)
        self.app.extensions["graph"].close()
        self.store.redis.close()


@pytest.fixture
def own_redis(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True, use_socket=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def deploy(own_redis, sandbox_server, fb, tmp_path):
    made = []

    def make(**overrides: str) -> Deployment:
        made.append(Deployment(own_redis, sandbox_server.url, fb, tmp_path, **overrides))
        return made[-1]

    yield make
    for deployment in made:
        deployment.close()


def test_webhooks_refused_while_redis_restarts_are_accepted_on_retry_and_none_is_lost(
    deploy, own_redis, fb
):
    d = deploy()
    fb.configure(webhook_retries=20, webhook_retry_delay_ms=100)
    page, profile, _ = d.page_with_people(1)
    psids = fb.add_people(page["id"], [{} for _ in range(40)])
    refs = d.app.extensions["refs"]
    results = {}

    def burst():
        for i, psid in enumerate(psids):
            results[i] = fb.post_event(
                "optin", page_id=page["id"], psid=psid, ref=refs.sign(profile["id"], f"b{i}")
            )

    poster = threading.Thread(target=burst)
    poster.start()
    wait_until(lambda: len(results) >= 10)
    own_redis.stop()  # clean shutdown: the append-only file is flushed
    wait_until(lambda: any(w["status"] == 503 for w in fb.webhooks()), timeout=10)
    own_redis.start()
    poster.join(60)
    assert len(results) == 40 and all(r["status"] == 200 for r in results.values())
    attempts = Counter(w["body"] for w in fb.webhooks())
    assert any(n > 1 for n in attempts.values()), "no webhook needed a retry"
    for i, psid in enumerate(psids):  # every opt-in acknowledged with 200 is there
        assert d.store.contacts.get(f"b{i}") == {profile["optin_field"]: psid}


def test_redis_restart_during_a_run_loses_no_outcome_and_sends_nobody_twice(deploy, own_redis, fb):
    d = deploy(
        SEND_RATE_PER_PAGE="50",
        RUN_BATCH_SIZE="100",
        RUN_LEASE_SECONDS="3",
        UNKNOWN_DEADLINE_SECONDS="5",
    )
    runs = []
    for name in ("A", "B", "C", "D"):
        _, _, contacts = d.page_with_people(100, name)
        runs.append((d.start_run(name, contacts), contacts))
    d.workers.start()
    wait_until(lambda: len(fb.sends()) >= 100, timeout=30)
    own_redis.restart()
    for run_id, contacts in runs:
        wait_until(lambda run_id=run_id: d.run(run_id)["state"] == "done", timeout=90)
        outcomes = d.outcomes(run_id)
        assert set(outcomes) == set(contacts) and set(outcomes.values()) <= {"sent", "failed"}
    per_recipient = Counter(s["recipient"]["id"] for s in fb.sends(status="accepted"))
    assert max(per_recipient.values()) == 1, "someone got the message twice"
    sent = sum(d.run(run_id)["counts"]["sent"] for run_id, _ in runs)
    assert sent == len(per_recipient)  # every message Facebook accepted is counted as sent


def test_facebook_failing_mid_run_retries_within_the_cap_keeps_the_pace_and_flips_health_once(
    deploy, fb
):
    d = deploy(
        SEND_RATE_PER_PAGE="50",
        RUN_BATCH_SIZE="100",
        GRAPH_TIMEOUT_SECONDS="1",
        UNKNOWN_DEADLINE_SECONDS="3",
        SEND_MAX_ATTEMPTS="3",
    )
    page, profile, contacts = d.page_with_people(200)
    fb.add_faults(
        [
            {
                "code": 2,
                "http_status": 500,
                "message": "An unexpected error has occurred.",
                "rate": 0.1,
            },
            {"code": 1, "delay_ms": 1500, "rate": 0.03},  # times out: ambiguous, never resent
            {
                "code": 613,
                "subcode": 2534040,
                "message": "(#613) Calls to this api have exceeded the rate limit.",
                "times": 3,
            },
        ]
    )
    run_id = d.start_run("Page", contacts)
    d.workers.start()
    wait_until(lambda: len(fb.sends(status="accepted")) >= 80, timeout=60)
    fb.invalidate_page(page["id"])  # the token dies mid-run (error 190)
    wait_until(lambda: d.run(run_id)["state"] == "done", timeout=120)
    sends = fb.sends()
    per_recipient = Counter(s["recipient"]["id"] for s in sends)
    assert max(per_recipient.values()) <= 3, "more attempts than SEND_MAX_ATTEMPTS"
    assert (
        max(Counter(s["recipient"]["id"] for s in sends if s["status"] == "accepted").values()) == 1
    )
    assert max(fb.rates(page["id"]).values()) <= 50
    outcomes = d.outcomes(run_id)
    assert set(outcomes.values()) <= {"sent", "failed"} and len(outcomes) == 200
    assert d.store.profiles.get(profile["id"]).health == "needs_reauth"
    flips = re.findall(r"profile \d+ marked needs_reauth", d.workers.logs())
    assert len(flips) == 1, flips
    reasons = Counter(
        c["reason_code"] for c in d.run(run_id)["contacts"] if c["outcome"] == "failed"
    )
    assert reasons["token_invalid"] > 0


def test_sigterm_lets_the_worker_finish_its_batch_and_nothing_is_lost(deploy, fb):
    d = deploy(SEND_RATE_PER_PAGE="40", RUN_BATCH_SIZE="100")
    _, _, contacts = d.page_with_people(250)
    run_id = d.start_run("Page", contacts)
    worker = d.workers.start()
    wait_until(lambda: len(fb.sends()) >= 30, timeout=30)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    states = Counter(d.outcomes(run_id).values())
    assert (
        states["sent"] == 100 and states.get("unknown", 0) == 0
    )  # its batch finished, the next not begun
    assert d.run(run_id)["state"] == "running"
    d.workers.start()
    wait_until(lambda: d.run(run_id)["state"] == "done", timeout=60)
    assert d.run(run_id)["counts"] == {"sent": 250, "warning": 0, "failed": 0, "pending": 0}
    assert len({s["recipient"]["id"] for s in fb.sends()}) == len(fb.sends()) == 250
    assert any(
        json.loads(line).get("id", "").startswith("run:")
        for line in d.workers.logs().splitlines()
        if line.startswith("{")
    )  # the job's log lines name the run
