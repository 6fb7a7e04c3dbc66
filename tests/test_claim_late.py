"""A contact is claimed only as its request leaves (after its Page's send slot came), so a worker
killed mid-run leaves `unknown` only the sends that may have reached Facebook; a run whose only
open contacts are `unknown` says so; a worker stopped the way process managers stop one (SIGTERM,
then SIGKILL, to its process group) leaves no work horse behind still sending."""

from __future__ import annotations

import os
import signal
from collections import Counter
from datetime import datetime

import psutil
import pytest

from storage import keys
from storage.inbound import Event
from tests.conftest import messenger_node, service_env, wait_until
from tests.run_fixtures import now_ms, outcomes, run_to_end
from tests.workers import WorkerProcesses

# -- the claim, in storage ---------------------------------------------------------------------


def claim(store, contact: str, *, slot_held: bool = False, longest_wait_ms: float = 60_000):
    return store.runs.claim(
        "r1",
        contact,
        deadline_ms=2**40,
        pace=(store.rates, "page1"),
        slot_held=slot_held,
        longest_wait_ms=longest_wait_ms,
    )


def claimed(store, contact: str) -> bool:
    return store.runs.outcomes("r1", [contact])[contact] is not None


def timeline(store) -> int:
    """page1's next free send slot (us): it moves on with every slot reserved."""
    return int(store.redis.get(keys.rate("page1")) or 0)


@pytest.mark.parametrize("settings_overrides", [{"SEND_RATE_PER_PAGE": "2"}])
def test_a_contact_waiting_for_its_slot_is_not_claimed_until_the_slot_comes(
    store, settings_overrides
):
    assert claim(store, "c1") == 0 and claimed(store, "c1")  # the Page's slot was free
    wait_ms = claim(store, "c2")
    assert 400 < wait_ms <= 521 and not claimed(store, "c2")  # 2/s: its slot is half a second off
    reserved = timeline(store)
    assert claim(store, "c2", slot_held=True) == 0 and claimed(store, "c2")
    assert timeline(store) == reserved  # claimed with the slot it held, no other taken


@pytest.mark.parametrize("settings_overrides", [{"SEND_RATE_PER_PAGE": "2"}])
def test_whoever_claims_first_sends_and_no_slot_goes_to_a_settled_contact(
    store, settings_overrides
):
    claim(store, "c0")  # the Page is busy from now on
    assert claim(store, "c1") > 0  # executor A holds a slot for c1 and waits for it...
    store.runs.claim("r1", "c1", deadline_ms=2**40)  # ... executor B (a lapsed lease) claims c1
    assert claim(store, "c1", slot_held=True) is None  # A's slot comes: c1 is not A's to send
    reserved = timeline(store)
    assert claim(store, "c1") is None  # settled or someone else's: no slot reserved for it
    assert timeline(store) == reserved


@pytest.mark.parametrize("settings_overrides", [{"SEND_RATE_PER_PAGE": "2"}])
def test_a_rest_voids_the_slot_and_a_wait_too_long_reserves_nothing(store, settings_overrides):
    claim(store, "c0")
    assert claim(store, "c1") > 0
    store.rates.rest("page1", 5_000)  # Facebook said: slow down
    wait_ms = claim(store, "c1", slot_held=True)  # its slot came during the rest: a new one
    assert 4_000 < wait_ms <= 5_600 and not claimed(store, "c1")
    reserved = timeline(store)
    assert claim(store, "c2", longest_wait_ms=1_000) > 5_000  # the batch pauses instead
    assert timeline(store) == reserved and not claimed(store, "c2")


# -- a run whose only open contacts are unknown ----------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"UNKNOWN_DEADLINE_SECONDS": "600"}])
def test_a_run_left_with_only_unknown_contacts_says_how_many_and_when_they_settle(
    api, fb, drain, app, store, program, opted_in, settings_overrides
):
    app.extensions["graph"].timeout = 0.3
    program()
    psids = {cid: opted_in(cid) for cid in ("c1", "c2", "c3")}
    fb.configure(echo=False)  # the test posts the echo itself
    for cid in ("c1", "c2"):  # Facebook takes them, but the answers come too late
        fb.add_fault(recipient=psids[cid], code=2, delay_ms=800, accept=True, times=1)
    before = now_ms()
    run_id, result = run_to_end(api, drain, ["c1", "c2", "c3"])
    after = now_ms()
    assert [result[c]["outcome"] for c in ("c1", "c2", "c3")] == ["unknown", "unknown", "sent"]
    status = api("get", f"/runs/{run_id}").get_json()
    assert (status["state"], status["counts"]["pending"]) == ("running", 2)
    assert status["unknown"]["count"] == 2
    settle_by = datetime.fromisoformat(status["unknown"]["settle_by"]).timestamp() * 1000
    assert before + 600_000 - 1000 <= settle_by <= after + 600_000 + 1000

    (accepted,) = wait_until(lambda: fb.sends(status="accepted", recipient=psids["c1"]))
    fb.post_event(
        "echo",
        page_id=accepted["page_id"],
        psid=psids["c1"],
        mid=accepted["message_id"],
        metadata=accepted["metadata"],
        text=accepted["text"],
    )
    assert api("get", f"/runs/{run_id}").get_json()["unknown"]["count"] == 1  # c1 is sent now
    store.runs.expire_unknown(now_ms=int(settle_by) + 1)
    status = api("get", f"/runs/{run_id}").get_json()
    assert (status["state"], status["unknown"]) == ("done", None)
    assert outcomes(api, run_id)["c2"]["reason_code"] == "interrupted"


def test_a_run_whose_last_send_is_on_its_way_is_not_said_to_wait_for_unknowns(
    api, store, program, opted_in
):
    program()
    opted_in("c1")
    answer = api("post", "/programs/p1/nodes/n1/runs", json={"contacts": [{"id": "c1"}]})
    run_id = answer.get_json()["run_id"]
    store.runs.claim(run_id, "c1", deadline_ms=2**40)  # in flight: its batch is being sent
    status = api("get", f"/runs/{run_id}").get_json()
    assert (status["counts"]["pending"], status["unknown"]) == (1, None)


# -- worker processes ------------------------------------------------------------------------


@pytest.fixture
def workers(redis_server, sandbox_server, tmp_path, settings_overrides):
    env = service_env(redis_server.url, sandbox_server.url, LOG_LEVEL="INFO", **settings_overrides)
    pool = WorkerProcesses(env, tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture
def pages_with_people(fb, api, store, live_app):
    """`pages` connected Pages, each with `n` opted-in contacts and an active program of its
    own (p0, p1, ...); returns the contacts and each contact's PSID."""

    def make(pages: int, n: int) -> tuple[list[list[str]], dict[str, str]]:
        psid_of, contacts = {}, []
        now = now_ms()
        for p in range(pages):
            page = fb.create_page(name=f"Page {p}")
            profile = api(
                "post",
                "/profiles",
                json={"name": f"P{p}", "page_id": page["id"], "page_access_token": page["token"]},
            ).get_json()
            psids = fb.add_people(page["id"], [{"last_interaction_ms": now} for _ in range(n)])
            ids = [f"p{p}-{i:03d}" for i in range(n)]
            store.inbound.apply(
                [
                    Event("optin", page["id"], psid, now, profile=profile["id"], contact=cid)
                    for cid, psid in zip(ids, psids, strict=True)
                ]
            )
            program = {"name": "P", "status": "active", "nodes": [messenger_node(profile["id"])]}
            assert api("put", f"/programs/p{p}", json=program).status_code == 201
            psid_of.update(zip(ids, psids, strict=True))
            contacts.append(ids)
        return contacts, psid_of

    return make


def start_runs(api, contacts: list[list[str]]) -> list[str]:
    return [
        api(
            "post", f"/programs/p{p}/nodes/n1/runs", json={"contacts": [{"id": c} for c in ids]}
        ).get_json()["run_id"]
        for p, ids in enumerate(contacts)
    ]


def all_outcomes(api, run_ids: list[str]) -> dict[str, str]:
    return {cid: o["outcome"] for run_id in run_ids for cid, o in outcomes(api, run_id).items()}


# Four slowly paced Pages: a worker's threads spend nearly all their time waiting for slots,
# which is when a claim made before the wait left contacts unknown that were never sent.
SLOW_PAGES = {
    "SEND_RATE_PER_PAGE": "5",
    "RUN_BATCH_SIZE": "25",
    "RUN_LEASE_SECONDS": "2",
    "UNKNOWN_DEADLINE_SECONDS": "600",
}
IN_FLIGHT_MS = 50  # a claim this close to the kill may not have been written to the socket yet


@pytest.mark.slow
@pytest.mark.parametrize("settings_overrides", [SLOW_PAGES])
def test_a_worker_killed_mid_run_leaves_unknown_only_sends_that_may_have_left(
    api, fb, store, workers, pages_with_people, settings_overrides
):
    contacts, psid_of = pages_with_people(4, 25)
    fb.configure(echo=False)  # unknown stays unknown, so it can be compared with what arrived
    first = workers.start()
    run_ids = start_runs(api, contacts)
    wait_until(lambda: len(fb.sends()) >= 16, timeout=30)
    killed_ms = now_ms()
    workers.kill(first)
    workers.start()  # takes the batches up once their leases lapse
    wait_until(lambda: "pending" not in all_outcomes(api, run_ids).values(), timeout=60)

    final = all_outcomes(api, run_ids)
    assert set(final.values()) <= {"sent", "unknown"} and len(final) == 100
    received = Counter(s["recipient"]["id"] for s in fb.sends())  # an unknown one is never resent
    assert max(received.values()) == 1, "someone got the message twice"
    unknown = [cid for cid, outcome in final.items() if outcome == "unknown"]
    never_arrived = [cid for cid in unknown if not received[psid_of[cid]]]
    claimed_ms = {
        cid: store.runs.outcomes(run_id, [cid])[cid].at_ms
        for run_id, ids in zip(run_ids, contacts, strict=True)
        for cid in ids
        if cid in never_arrived
    }
    # Only a request on its way when the worker died may be unknown without having arrived.
    assert all(killed_ms - IN_FLIGHT_MS <= at for at in claimed_ms.values()), (
        f"unknown though never sent, claimed {[killed_ms - at for at in claimed_ms.values()]} "
        "ms before the kill"
    )
    assert len(never_arrived) <= 1
    assert Counter(final.values())["sent"] == 100 - len(unknown)  # the rest were sent, once


def horse_of(worker) -> psutil.Process:
    """The work horse: the worker's child in a process group of its own."""
    return next(
        child
        for child in psutil.Process(worker.pid).children()
        if os.getpgid(child.pid) != worker.pid
    )


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


STOPPED = {"SEND_RATE_PER_PAGE": "40", "RUN_LEASE_SECONDS": "2"}  # a lease lapses in 2 s


@pytest.mark.slow
@pytest.mark.parametrize("settings_overrides", [STOPPED])
def test_sigterm_then_sigkill_to_the_workers_group_leaves_no_horse_sending(
    api, fb, store, workers, pages_with_people, settings_overrides
):
    contacts, _ = pages_with_people(1, 160)  # four seconds of sending, in one batch
    worker = workers.start()
    (run_id,) = start_runs(api, contacts)
    wait_until(lambda: len(fb.sends()) >= 10, timeout=30)
    horse = horse_of(worker)
    os.killpg(worker.pid, signal.SIGTERM)  # as honcho stops a process: its group, SIGTERM...
    wait_until(lambda: "warm shut down requested" in workers.logs(), timeout=10)
    still_sending = len(fb.sends())
    wait_until(lambda: len(fb.sends()) > still_sending + 2, timeout=10)  # the batch goes on
    killed_ms = now_ms()
    os.killpg(worker.pid, signal.SIGKILL)  # ... then SIGKILL once its stop timeout is over
    worker.wait(10)
    try:
        wait_until(lambda: gone(horse), timeout=2)  # it had seconds of sending left
    except AssertionError:
        horse.kill()
        raise AssertionError("the work horse outlived its worker and went on sending") from None

    wait_until(lambda: not store.runs.lease_held(run_id, 0), timeout=10)  # nobody renews it
    after_kill = [s for s in fb.sends() if s["received_ms"] > killed_ms]
    assert len(after_kill) <= 2  # at most the requests already on their way (one Page's pace)
    assert len(fb.sends()) < len(contacts[0])  # the rest waits, unclaimed, for another worker
