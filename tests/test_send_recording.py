"""Less Redis work per send (issue 16, item 3), with the same outcomes: a claim sets no
deadline (only a send whose answer was lost gets one), the outcomes of earlier sends ride on the
next claim's round trip, and a call carrying many outcomes writes what they share once, exactly
as one call per outcome would."""

from __future__ import annotations

import re
import threading
from contextlib import ExitStack

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bot import policy
from jobs.sender import Recorder
from storage import keys, scripts
from storage.errors import SendingPaused
from storage.programs import Node
from storage.stats import day_of

DEADLINE = 2_000_000_000_000
AT = 1_765_000_000_000  # every outcome's time, so that two recordings can be compared


@pytest.fixture
def rules(settings):
    return policy.sending_rules(settings)


def new_profile(store, page_id: str) -> str:
    return store.profiles.create(
        name=f"Page {page_id}", page_id=page_id, page_name="Page", page_token="token"
    ).id


def new_run(store, pid: str, run_id: str, contacts: list[str]) -> None:
    node = Node("n1", pid, "ACCOUNT_UPDATE", "Hi")
    store.runs.create(run_id, "prog", node, {cid: {} for cid in contacts}, 10)
    for cid in contacts:
        store.runs.claim(run_id, cid, deadline_ms=DEADLINE)


def state_of(store, run_id: str, contact: str) -> tuple[str, str] | None:
    outcome = store.runs.outcomes(run_id, [contact])[contact]
    return (outcome.state, outcome.reason) if outcome else None


def test_a_deadline_is_set_only_for_a_send_that_became_unknown(store, redis_client):
    pid = new_profile(store, "1090000000001")
    new_run(store, pid, "r1", ["c1", "c2", "c3"])
    assert redis_client.zcard(keys.deadlines()) == 0  # in flight: no deadline to keep
    store.runs.finish("r1", "c1", "sent", message_id="m.1", recipient="psid1")
    store.runs.mark_unknown("r1", ["c2", "c3"])  # their answers were lost
    assert redis_client.zrange(keys.deadlines(), 0, -1, withscores=True) == [
        ("r1\x1fc2", DEADLINE),  # the deadline their claims were given
        ("r1\x1fc3", DEADLINE),
    ]
    store.runs.finish("r1", "c2", "sent", message_id="m.2", recipient="psid2")  # its echo came
    assert redis_client.zrange(keys.deadlines(), 0, -1) == ["r1\x1fc3"]
    assert store.runs.expire_unknown(now_ms=DEADLINE - 1) == 0
    assert store.runs.expire_unknown(now_ms=DEADLINE) == 1
    assert state_of(store, "r1", "c3") == ("failed", "interrupted")
    assert redis_client.zcard(keys.deadlines()) == 0


# Outcomes of two runs of one profile: sends with and without receipts (a checkbox user_ref),
# one recipient twice, warnings and refusals; run "a" ends, run "b" keeps one contact open.
OUTCOMES = [
    ("a", "c0", "sent", {"message_id": "m.0", "recipient": "psid0"}),
    ("b", "c0", "sent", {"message_id": "m.1", "recipient": "user_ref:u1"}),
    ("a", "c1", "warning", {"reason": "no_optin"}),
    ("a", "c2", "failed", {"reason": "recipient_unavailable", "recipient": "psid2"}),
    ("b", "c1", "failed", {"reason": "recipient_unavailable", "recipient": "psid3"}),
    ("a", "c3", "sent", {"message_id": "m.3", "recipient": "psid0"}),
    ("b", "c2", "warning", {"reason": "no_optin"}),
    ("a", "c4", "sent", {"message_id": "m.4", "recipient": "psid4"}),
]


def recorded(store, redis_client, pid: str, prefix: str) -> dict:
    """What recording OUTCOMES left for the profile and its runs `prefix`a and `prefix`b. The
    rows of one call may be in another order (grouped), so each list is sorted, and a message
    awaiting receipts shows the sent row it points at rather than the row's index."""
    day = day_of(AT, store.tz)
    kinds = ["sent", "warning", "failed", "warning:no_optin", "failed:recipient_unavailable"]
    rows = {k: redis_client.lrange(keys.day_rows(pid, day, k), 0, -1) for k in kinds}

    def awaited(packed: str) -> list[list[str]]:
        entries = [entry.split("\x1f") for entry in packed.split("\x1e")]
        return [[mid, d, rows["sent"][int(index)], *rest] for mid, d, index, *rest in entries]

    return {
        "day": store.stats.day(pid, day),
        "days": redis_client.zrange(keys.stat_days(pid), 0, -1),
        "rows": {k: sorted(v) for k, v in rows.items()},
        "awaiting": {r: awaited(p) for r, p in redis_client.hgetall(keys.awaiting(pid)).items()},
        "window": redis_client.hgetall(keys.send_window(pid)),
        "unreachable": redis_client.zrange(keys.unreachable(pid), 0, -1),
        "runs": [  # their counts and state, what recording outcomes writes in them
            {
                k: v
                for k, v in redis_client.hgetall(keys.run(prefix + r)).items()
                if k.startswith(("sent", "warning", "failed", "state", "done_at"))
            }
            for r in ("a", "b")
        ],
    }


def test_outcomes_recorded_together_count_as_they_would_one_by_one(store, redis_client, rules):
    """One call carrying many outcomes (the recorder's own writes, expire_unknown) writes the
    very counters, rows, receipts awaited, breaker window and run counts that one call per
    outcome writes (a claim carries about one)."""
    metric = []
    for prefix, page_id in (("one-", "1090000000001"), ("all-", "1090000000002")):
        pid = new_profile(store, page_id)
        for r in ("a", "b"):
            new_run(store, pid, prefix + r, [f"c{i}" for i in range(5 if r == "a" else 4)])
        outcomes = [
            store.runs.outcome(prefix + r, cid, state, at_ms=AT, called=True, **details)
            for r, cid, state, details in OUTCOMES
        ]
        before = redis_client.hgetall(keys.metric("sends"))
        if prefix == "one-":
            assert sum(store.runs.finish_many([o], rules) for o in outcomes) == len(OUTCOMES)
        else:
            assert store.runs.finish_many(outcomes, rules) == len(OUTCOMES)
        after = redis_client.hgetall(keys.metric("sends"))
        metric.append({k: int(v) - int(before.get(k, 0)) for k, v in after.items()})
        if prefix == "one-":
            one_by_one = recorded(store, redis_client, pid, prefix)
        else:
            together = recorded(store, redis_client, pid, prefix)

    assert together == one_by_one
    assert (
        metric[0]
        == metric[1]
        == {"sent|": 4, "warning|no_optin": 2, "failed|recipient_unavailable": 2}
    )
    assert one_by_one["day"]["sent"] == 4 and one_by_one["day"]["no_receipts"] == 1
    sent_to_psid0 = [entry[2] for entry in together["awaiting"]["psid0"]]
    assert sent_to_psid0 == [f"{AT}\x1fc0\x1fm.0", f"{AT}\x1fc3\x1fm.3"]
    assert [run["state"] for run in one_by_one["runs"]] == ["done", "queued"]
    assert one_by_one["unreachable"] == ["psid2", "psid3"]


def test_a_claim_records_the_outcomes_it_carries_before_it_claims(store, rules):
    """A refusal carried by the next claim pauses the profile's sending in that same call, so
    the claim is refused (no request leaves for a restricted Page)."""
    pid = new_profile(store, "1090000000001")
    new_run(store, pid, "r1", ["c1"])
    store.runs.create("r2", "prog", Node("n1", pid, "ACCOUNT_UPDATE", "Hi"), {"c2": {}}, 10)
    refused = store.runs.outcome(
        "r1", "c1", "failed", reason="page_blocked", recipient="psid1", called=True
    )
    with pytest.raises(SendingPaused):
        store.runs.claim(
            "r2",
            "c2",
            DEADLINE,
            sending=(pid, rules.probe_timeout_ms),
            outcomes=[refused],
            rules=rules,
        )
    assert state_of(store, "r1", "c1") == ("failed", "page_blocked")
    assert store.sending.state(pid).reason == "page_blocked"
    assert state_of(store, "r2", "c2") is None  # not claimed


def test_outcomes_lent_to_a_claim_that_failed_are_written_by_the_recorder(store, rules):
    pid = new_profile(store, "1090000000001")
    new_run(store, pid, "r1", ["c1"])
    recorder = Recorder(store, rules)
    try:
        # The recorder's lock (re-entrant) held: its own thread cannot take the outcome first.
        with recorder._changed:
            recorder.finish("r1", "c1", "sent", message_id="m.1", recipient="psid1", called=True)
            with pytest.raises(RedisConnectionError), recorder.lend() as carried:
                assert len(carried) == 1
                raise RedisConnectionError("the claim's connection broke")
            with recorder.lend() as carried:
                assert carried == []  # no claim carries it again: the recorder's thread writes it
        recorder.sync()
        assert state_of(store, "r1", "c1") == ("sent", "")
    finally:
        recorder.close()


def test_sync_waits_for_the_outcomes_a_claim_carries(store, rules):
    """A batch's end (Shift._end) reads its outcomes after `sync`: those still on their way
    with a claim must be written by then."""
    pid = new_profile(store, "1090000000001")
    new_run(store, pid, "r1", ["c1"])
    recorder = Recorder(store, rules)
    synced = threading.Event()
    try:
        with ExitStack() as claim:
            with recorder._changed:  # as above: the claim, not the recorder's thread, takes it
                recorder.finish("r1", "c1", "warning", reason="no_optin")
                carried = claim.enter_context(recorder.lend())
            waiter = threading.Thread(target=lambda: (recorder.sync(), synced.set()))
            waiter.start()
            assert not synced.wait(0.2)  # out with the claim, not written yet
            store.runs.finish_many(carried, rules)  # the claim's round trip
        assert synced.wait(10)
        assert state_of(store, "r1", "c1") == ("warning", "no_optin")
    finally:
        recorder.close()


def test_each_script_holds_only_the_lib_functions_it_uses(redis_client):
    """A script defines all it holds again on every call: _lib.lua's functions go only to the
    scripts that use them, directly or through each other."""
    for name in sorted(scripts._USES_LIB):
        redis_client.script_load(scripts.source(name))  # each one compiles
    held = {
        name: set(re.findall(r"^local function (\w+)\(", scripts.source(name), re.M))
        for name in ("claim", "rate_reserve", "opt_out")
    }
    assert {"settle", "learn", "reserve_slot", "withdraw_consent"} <= held["claim"]
    assert held["rate_reserve"] == {"key", "reserve_slot", "server_now_us"}  # key: templates'
    assert "withdraw_consent" in held["opt_out"] and "settle" not in held["opt_out"]


def test_each_script_holds_only_the_key_templates_it_names(redis_client):
    """The templates table is built on every call too: a script gets the templates it names,
    and a name it lacks fails with that name rather than in string.format."""

    def templates_of(name: str) -> set[str]:
        return set(re.findall(r"(\w+) = \"", scripts.source(name).split("\n", 1)[0]))

    assert templates_of("take_ready") == {"ready", "run_lease"}
    # forget_recipient loops over a list of names: those count as named
    assert {"recipients", "seen", "await", "marketing"} <= templates_of("forget_recipient")
    assert "consent" not in templates_of("forget_recipient")
    lacking = scripts.templates_table("") + "return key('nothing_like_it')"
    with pytest.raises(ResponseError, match="no key template nothing_like_it"):
        redis_client.eval(lacking, 0)
