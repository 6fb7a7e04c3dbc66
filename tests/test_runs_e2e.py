"""Runs with real worker processes: a worker killed mid-batch, two workers sharing a Page's
rate, a 10 000-contact run. Redis, the simulator and the webhook are all real."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from rq.job import Job
from rq.registry import FinishedJobRegistry

from tests.conftest import service_env, wait_until
from tests.run_fixtures import connect_page_with_people
from tests.workers import WorkerProcesses

pytestmark = pytest.mark.slow


@pytest.fixture
def workers(redis_server, sandbox_server, tmp_path, settings):
    def make(**overrides: str) -> WorkerProcesses:
        env = service_env(redis_server.url, sandbox_server.url, LOG_LEVEL="INFO", **overrides)
        made = WorkerProcesses(env, tmp_path)
        created.append(made)
        return made

    created: list[WorkerProcesses] = []
    yield make
    for pool in created:
        pool.stop_all()


@pytest.fixture
def page_with_people(fb, store, api, live_app):
    """A connected Page and `n` opted-in contacts c00000.. inside the 24-hour window."""

    def make(n: int) -> tuple[dict, dict, list[str]]:
        contacts = [f"c{i:05d}" for i in range(n)]
        page, profile = connect_page_with_people(fb, store, api, contacts, "Busy Page", "Busy")
        node = {
            "id": "n1",
            "type": "messenger",
            "profile_id": profile["id"],
            "tag": "ACCOUNT_UPDATE",
            "message": "Your account was updated.",
        }
        assert (
            api(
                "put", "/programs/p1", json={"name": "P", "status": "active", "nodes": [node]}
            ).status_code
            == 201
        )
        return page, profile, contacts

    return make


def run_state(api, run_id) -> dict:
    return api("get", f"/runs/{run_id}").get_json()


def all_outcomes(api, run_id, show: str = "outcome") -> dict[str, object]:
    result, cursor = {}, "0"
    while cursor is not None:
        page = api("get", f"/runs/{run_id}?cursor={cursor}&limit=1000").get_json()
        result.update({c["id"]: c[show] for c in page["contacts"]})
        cursor = page["next_cursor"]
    return result


KILL = {
    "SEND_RATE_PER_PAGE": "400",
    "RUN_BATCH_SIZE": "250",
    "RUN_LEASE_SECONDS": "3",
    "UNKNOWN_DEADLINE_SECONDS": "5",
}
SHARED_RATE = {"SEND_RATE_PER_PAGE": "20", "RUN_BATCH_SIZE": "20", "RUN_PARALLEL_BATCHES": "2"}
BIG = {"SEND_RATE_PER_PAGE": "5000", "RUN_BATCH_SIZE": "500"}


@pytest.mark.parametrize("settings_overrides", [KILL])
def test_worker_killed_mid_batch_no_duplicates_every_contact_has_an_outcome(
    api, fb, workers, page_with_people, settings_overrides
):
    page, _, contacts = page_with_people(2000)
    pool = workers(**settings_overrides)
    first = pool.start()
    answer = api(
        "post", "/programs/p1/nodes/n1/runs", json={"contacts": [{"id": c} for c in contacts]}
    )
    run_id = answer.get_json()["run_id"]
    # in the middle of the third batch; counted from the simulator's per-second table, which
    # stays small (the list of every send grew with the run and slowed this poll by itself)
    wait_until(lambda: sum(fb.rates().values()) >= 600, timeout=30)
    pool.kill(first)
    killed_at = len(fb.sends())
    pool.start()
    wait_until(lambda: run_state(api, run_id)["state"] == "done", timeout=90)

    per_recipient = Counter(s["recipient"]["id"] for s in fb.sends())
    assert max(per_recipient.values()) == 1, "someone got the message twice"
    outcomes = all_outcomes(api, run_id)
    assert set(outcomes) == set(contacts) and set(outcomes.values()) <= {"sent", "failed"}
    # sends settled by Facebook's echo (answers lost with the worker) say what went out too
    sent_as = all_outcomes(api, run_id, "sent_as")
    assert {cid: sent_as[cid] for cid, o in outcomes.items() if o == "sent"} == {
        cid: {"kind": "text"} for cid, o in outcomes.items() if o == "sent"
    }
    assert {sent_as[cid] is None for cid, o in outcomes.items() if o == "failed"} <= {True}
    counts = run_state(api, run_id)["counts"]
    assert counts["sent"] + counts["failed"] == 2000 and counts["pending"] == 0
    assert (
        counts["sent"] >= len(fb.sends(status="accepted")) - 16
    )  # at most those in flight were lost
    assert killed_at < 750, "the kill came after the third batch"
    assert "resumed 1 stalled batches" in pool.logs()


@pytest.mark.parametrize("settings_overrides", [SHARED_RATE])
def test_two_workers_share_one_pages_rate(
    api, app, fb, workers, page_with_people, settings_overrides
):
    page, _, contacts = page_with_people(120)
    pool = workers(**settings_overrides)
    pool.start()
    pool.start()
    started = time.monotonic()
    run_id = api(
        "post", "/programs/p1/nodes/n1/runs", json={"contacts": [{"id": c} for c in contacts]}
    ).get_json()["run_id"]
    wait_until(lambda: run_state(api, run_id)["state"] == "done", timeout=60)
    elapsed = time.monotonic() - started
    per_second = fb.rates(page["id"])
    assert sum(per_second.values()) == 120
    assert max(per_second.values()) <= 20, per_second
    assert elapsed >= 120 / 20 - 1.5  # the pace held: about 6 s, not a burst
    arrivals = sorted(s["received_ms"] for s in fb.sends(page_id=page["id"]))
    sustained = (len(arrivals) - 1) / ((arrivals[-1] - arrivals[0]) / 1000)
    assert 0.95 * 20 <= sustained <= 20, sustained
    registry = FinishedJobRegistry("messenger", connection=app.extensions["rq_queue"].connection)
    names = {
        Job.fetch(j, connection=registry.connection).worker_name for j in registry.get_job_ids()
    }
    assert len(names) == 2, "both workers sent for the Page"


@pytest.mark.parametrize("settings_overrides", [BIG])
def test_ten_thousand_contact_run_completes(api, fb, workers, page_with_people, settings_overrides):
    fb.configure(
        echo=False, delivery_delay_ms=None, read_delay_ms=None
    )  # spare the webhook 30 000 posts
    page, _, contacts = page_with_people(10_000)
    pool = workers(**settings_overrides)
    pool.start()
    started = time.monotonic()
    answer = api(
        "post", "/programs/p1/nodes/n1/runs", json={"contacts": [{"id": c} for c in contacts]}
    )
    assert answer.status_code == 202
    assert time.monotonic() - started < 5  # accepted at once
    run_id = answer.get_json()["run_id"]
    wait_until(lambda: run_state(api, run_id)["state"] == "done", timeout=180, interval=0.5)
    assert run_state(api, run_id)["counts"] == {
        "sent": 10_000,
        "warning": 0,
        "failed": 0,
        "pending": 0,
    }
    assert len({s["recipient"]["id"] for s in fb.sends(status="accepted")}) == 10_000
    print(f"10 000 contacts in {time.monotonic() - started:.1f} s")


def test_an_idle_worker_stops_at_once_on_sigterm(workers, app):
    """SIGTERM stops the worker; it does not take it for a Redis failure and start again."""
    import signal

    from rq import Worker

    pool = workers()
    process = pool.start()
    connection = app.extensions["rq_queue"].connection
    # "idle" once it waits for jobs: its signal handlers are in place by then
    wait_until(
        lambda: [w.get_state() for w in Worker.all(connection=connection)] == ["idle"], timeout=60
    )
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(10) == 0
    assert "listening" in pool.logs() and pool.logs().count("listening on messenger") == 1
