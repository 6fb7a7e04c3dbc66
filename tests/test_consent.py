"""Consent you can prove and contacts you can erase (issue 18): the ledger of each opt-in
source, withdrawal by the API and by Messenger, the CSV, and an erasure that leaves no trace
of the person in Redis while the counters keep their numbers."""

from __future__ import annotations

import contextlib
import csv
import io
import zlib
from datetime import UTC, datetime

import orjson
import pytest
import redis as redis_lib

from storage import keys
from storage.inbound import Event
from tests.conftest import load_webhook
from tests.run_fixtures import now_ms, outcomes, run_to_end, start_run
from tests.test_lifecycle import signed


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def consent_of(api, contact_id: str, profile_id: str) -> dict:
    answer = api("get", f"/contacts/{contact_id}/consent")
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["contact_id"] == contact_id
    return next(p for p in body["profiles"] if p["profile_id"] == profile_id)


@pytest.fixture
def contact(api):
    def make(contact_id: str, **fields: str) -> str:
        answer = api(
            "put", f"/contacts/{contact_id}", json={"fields": fields or {"FIRSTNAME": "A"}}
        )
        assert answer.status_code == 200
        return contact_id

    return make


@pytest.fixture
def click_optin(post_webhook, refs, page, profile):
    """The person clicks the profile's Send to Messenger button for a contact (the webhook)."""

    def click(contact_id: str, psid: str, ts: int) -> None:
        ref = refs.sign(profile["id"], contact_id)
        payload = load_webhook(
            "optin_send_to_messenger", page_id=page["id"], psid=psid, ref=ref, ts=ts
        )
        assert post_webhook(payload).status_code == 200

    return click


SOURCES = [  # webhook fixture, its placeholders, the ledger's source, the recipient recorded
    ("optin_send_to_messenger", {}, "plugin", "{psid}"),
    ("optin_checkbox", {"user_ref": "ur-77"}, "checkbox", "user_ref:ur-77"),
    ("referral_shortlink", {}, "m.me", "{psid}"),
    ("postback_get_started", {}, "postback", "{psid}"),
]


@pytest.mark.parametrize(("fixture", "extra", "source", "recipient"), SOURCES)
def test_each_optin_source_records_its_ledger_event_once(
    api, post_webhook, refs, page, profile, contact, fixture, extra, source, recipient
):
    contact("c-1")
    ts = now_ms() - 5000
    payload = load_webhook(
        fixture,
        page_id=page["id"],
        psid="70001",
        ref=refs.sign(profile["id"], "c-1"),
        ts=ts,
        **extra,
    )
    assert post_webhook(payload).status_code == 200
    assert post_webhook(payload).status_code == 200  # Facebook's retry adds nothing

    ledger = consent_of(api, "c-1", profile["id"])
    assert ledger["state"] == "opted_in"
    assert ledger["events"] == [
        {
            "at": iso(ts),
            "type": "opt_in",
            "source": source,
            "verified": True,
            "recipient": recipient.format(psid="70001"),
            "page_id": page["id"],
        }
    ]


def test_a_forged_ref_records_no_consent(api, post_webhook, refs, page, profile, contact):
    contact("c-1")
    forged = refs.sign(profile["id"], "c-1")[:-2] + "AA"
    payload = load_webhook(
        "optin_send_to_messenger", page_id=page["id"], psid="70001", ref=forged, ts=now_ms()
    )
    assert post_webhook(payload).status_code == 200
    ledger = consent_of(api, "c-1", profile["id"])
    assert ledger == {"profile_id": profile["id"], "state": "never", "events": []}


def test_opt_out_by_api_stops_sending_until_a_new_optin(
    api, client, fb, store, drain, post_webhook, refs, page, profile, program, contact
):
    program()
    contact("c-1", FIRSTNAME="Ann")
    optin = lambda ts: load_webhook(  # noqa: E731
        "optin_send_to_messenger",
        page_id=page["id"],
        psid=psid,
        ref=refs.sign(profile["id"], "c-1"),
        ts=ts,
    )
    psid = fb.add_person(page["id"], last_interaction_ms=now_ms())
    first_optin = now_ms() - 60_000
    assert post_webhook(optin(first_optin)).status_code == 200

    answer = api("post", "/contacts/c-1/opt-out", json={"profile_id": profile["id"]})
    assert answer.status_code == 200
    assert answer.get_json() == {
        "contact_id": "c-1",
        "profile_id": profile["id"],
        "state": "opted_out",
        "withdrawn": True,
    }
    again = api("post", "/contacts/c-1/opt-out", json={"profile_id": profile["id"]})
    assert again.get_json()["withdrawn"] is False  # idempotent: nothing recorded twice
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'messenger_consent_withdrawn_total{source="api"} 1.0' in metrics
    assert profile["optin_field"] not in api("get", "/contacts/c-1").get_json()["fields"]

    _, result = run_to_end(api, drain, ["c-1"])
    assert (result["c-1"]["outcome"], result["c-1"]["reason_code"]) == ("warning", "opted_out")
    assert fb.sends(recipient=psid) == []  # Facebook was never called
    day = datetime.now(store.tz).date().isoformat()
    assert store.stats.day(profile["id"], day)["warning:opted_out"] == 1

    assert post_webhook(optin(first_optin)).status_code == 200  # a replay of the old opt-in
    assert consent_of(api, "c-1", profile["id"])["state"] == "opted_out"  # does not undo it

    assert post_webhook(optin(now_ms())).status_code == 200  # the person opts in again
    ledger = consent_of(api, "c-1", profile["id"])
    assert ledger["state"] == "opted_in"
    assert [(e["type"], e["source"]) for e in ledger["events"]] == [
        ("opt_in", "plugin"),
        ("opt_out", "api"),
        ("opt_in", "plugin"),
    ]
    assert ledger["events"][1]["recipient"] == psid  # the PSID the withdrawal cleared
    _, result = run_to_end(api, drain, ["c-1"], run_id="second")
    assert result["c-1"]["outcome"] == "sent"
    assert len(fb.sends(recipient=psid)) == 1


def test_a_messenger_stop_withdraws_consent(
    api, post_webhook, refs, page, profile, contact, store, click_optin
):
    contact("c-1")
    ts = now_ms() - 10_000
    click_optin("c-1", "70001", ts)
    stop = load_webhook("optin_marketing", page_id=page["id"], psid="70001", ts=ts + 1000)
    stop["entry"][0]["messaging"][0]["optin"]["notification_messages_status"] = "STOP NOTIFICATIONS"
    assert post_webhook(stop).status_code == 200
    ledger = consent_of(api, "c-1", profile["id"])
    assert ledger["state"] == "opted_out"
    assert ledger["events"][-1] == {
        "at": iso(ts + 1000),
        "type": "opt_out",
        "source": "messenger_stop",
        "verified": True,
        "recipient": "70001",
        "page_id": page["id"],
    }
    assert profile["optin_field"] not in store.contacts.get("c-1")


def test_consent_answers_and_refusals(api, profile, contact):
    contact("c-1")
    assert api("get", "/contacts/nobody/consent").status_code == 404
    assert (
        api("post", "/contacts/nobody/opt-out", json={"profile_id": profile["id"]}).status_code
        == 404
    )
    assert api("post", "/contacts/c-1/opt-out", json={"profile_id": "999"}).status_code == 404
    missing = api("post", "/contacts/c-1/opt-out", json={})
    assert (
        missing.status_code == 422
        and "profile_id" in missing.get_json()["error"]["details"]["fields"]
    )
    assert api("get", "/profiles/999/consent.csv").status_code == 404
    # a withdrawal of someone who never opted in is recorded: they are not messaged
    assert (
        api("post", "/contacts/c-1/opt-out", json={"profile_id": profile["id"]}).status_code == 200
    )
    assert consent_of(api, "c-1", profile["id"])["state"] == "opted_out"


def test_consent_csv_matches_the_api(
    api, client, post_webhook, refs, page, profile, contact, click_optin
):
    ts = now_ms() - 100_000
    for n, contact_id in enumerate(["c-1", "-c2", "c-3"]):
        contact(contact_id)
        click_optin(contact_id, f"7000{n}", ts + n)
    api("post", "/contacts/-c2/opt-out", json={"profile_id": profile["id"]})

    answer = api("get", f"/profiles/{profile['id']}/consent.csv")
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    expected = []
    for contact_id in ["c-1", "-c2", "c-3"]:
        ledger = consent_of(api, contact_id, profile["id"])
        for e in ledger["events"]:
            expected.append(
                {
                    "contact_id": "'" + contact_id if contact_id.startswith("-") else contact_id,
                    "profile_id": profile["id"],
                    "state": ledger["state"],
                    "at": e["at"],
                    "type": e["type"],
                    "source": e["source"],
                    "verified": "yes",
                    "recipient": e["recipient"] or "",
                    "page_id": e["page_id"],
                }
            )
    key = lambda r: (r["contact_id"], r["at"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(expected, key=key)
    assert len(rows) == 4  # three opt-ins and a withdrawal


# -- erasure ------------------------------------------------------------------------------------


def everything_in_redis(url: str) -> str:
    """Every key and value (RQ's compressed job data unpacked), as one text to search."""
    raw = redis_lib.Redis.from_url(url)
    parts: list[bytes] = []
    for key in raw.scan_iter(count=1000):
        parts.append(key)
        kind = raw.type(key)
        if kind == b"string":
            values = [raw.get(key) or b""]
        elif kind == b"hash":
            values = [b for pair in raw.hgetall(key).items() for b in pair]
        elif kind == b"list":
            values = raw.lrange(key, 0, -1)
        elif kind == b"set":
            values = list(raw.smembers(key))
        elif kind == b"zset":
            values = [m for m, _ in raw.zrange(key, 0, -1, withscores=True)]
        else:
            values = []
        for value in values:
            parts.append(value)
            with contextlib.suppress(zlib.error):
                parts.append(zlib.decompress(value))
    raw.close()
    return b"\n".join(parts).decode("utf-8", "replace")


def test_erasure_leaves_no_trace_of_the_person_and_keeps_the_counters(
    api,
    client,
    fb,
    store,
    drain,
    post_webhook,
    refs,
    page,
    profile,
    program,
    contact,
    settings,
    click_optin,
):
    program()
    person = "erase-me-7f3a"
    contact(person, FIRSTNAME="Zelda-unique-1", EMAIL="zelda-7f3a@example.com")
    contact("keep-me-c2", FIRSTNAME="Other")
    # no receipts of the simulator's own: the counters are then only what this test posts
    psid = fb.add_person(page["id"], last_interaction_ms=now_ms(), receipts="none")
    other = fb.add_person(page["id"], last_interaction_ms=now_ms(), receipts="none")
    ts = now_ms() - 30_000
    for contact_id, rcpt in ((person, psid), ("keep-me-c2", other)):
        click_optin(contact_id, rcpt, ts)
    post_webhook(  # a checkbox opt-in naming the person, and a forged ref naming them
        load_webhook(
            "optin_checkbox",
            page_id=page["id"],
            user_ref="ur-7f3a",
            ref=refs.sign("999", person),
            ts=ts,
        )
    )
    run_id, result = run_to_end(api, drain, [person, "keep-me-c2", "never-opted"])
    assert result[person]["outcome"] == "sent" and result["keep-me-c2"]["outcome"] == "sent"
    day = datetime.now(store.tz).date().isoformat()
    mid = fb.sends(recipient=psid)[0]["message_id"]
    post_webhook(
        load_webhook(
            "delivery", page_id=page["id"], psid=psid, mid=mid, watermark=now_ms(), ts=now_ms()
        )
    )
    counters = store.stats.day(profile["id"], day)
    run_counts = api("get", f"/runs/{run_id}").get_json()["counts"]
    assert counters["delivered"] == 1 and counters["sent"] == 2
    text = everything_in_redis(settings.redis_url)
    assert person in text and psid in text and "Zelda-unique-1" in text  # the scan sees them
    # the person wrote just now, in a crowd of webhooks: parked, not applied yet
    store.inbound.apply.park([Event("seen", page["id"], psid, now_ms())], {"message": 1})
    assert psid in str(store.redis.lrange(keys.inbox(), 0, -1))
    # and a crowd's parked write, naming them and someone else, fails to apply: it is set
    # aside for the operator (a kind no webhook of ours parks makes it fail)
    crowd = [
        Event("seen", page["id"], other, 1).data,
        Event("link", page["id"], "psid-new", 2, user_ref="ur-7f3a").data,
        Event("seen", page["id"], psid, 3).data,
        {"k": "no_such_kind", "page": page["id"], "rcpt": other, "ts": 4},
    ]
    store.redis.rpush(keys.inbox(), orjson.dumps([crowd, {"message": 3}]))

    answer = api("delete", f"/contacts/{person}")
    assert answer.status_code == 200, answer.get_json()
    erased = answer.get_json()["erased"]
    assert erased["contact"] == 1 and erased["run_outcomes"] == 1
    assert erased["statistics_rows"] >= 1 and erased["messenger_records"] >= 1
    assert erased["unmatched_optins"] == 1 and erased["consent_records"] >= 1

    text = everything_in_redis(settings.redis_url)
    for trace in (person, psid, "ur-7f3a", "Zelda-unique-1", "zelda-7f3a@example.com", mid):
        assert trace not in text, trace
    assert "keep-me-c2" in text and other in text  # nobody else is touched
    set_aside = [orjson.loads(w) for w in store.redis.lrange(keys.inbox_failed(), 0, -1)]
    assert set_aside == [[[crowd[0], crowd[3]], {"message": 3}]]  # the others' events stay
    assert store.stats.day(profile["id"], day) == counters  # the numbers stay
    assert api("get", f"/runs/{run_id}").get_json()["counts"] == run_counts
    assert store.erasure.count() == {"api": 1}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'messenger_erasures_total{cause="api"} 1.0' in metrics

    assert api("get", f"/contacts/{person}").status_code == 404
    assert api("get", f"/contacts/{person}/consent").status_code == 404
    assert api("delete", f"/contacts/{person}").status_code == 404  # nothing left to erase
    sent_rows = api("get", f"/profiles/{profile['id']}/stats/{day}/contacts?kind=sent").get_json()
    assert sorted(r["contact_id"] for r in sent_rows["contacts"]) == ["", "keep-me-c2"]

    # Facebook replays the old opt-in, and the person writes: their data does not come back
    replay = load_webhook(
        "optin_send_to_messenger",
        page_id=page["id"],
        psid=psid,
        ref=refs.sign(profile["id"], person),
        ts=ts,
    )
    assert post_webhook(replay).status_code == 200
    post_webhook(load_webhook("message_inbound", page_id=page["id"], psid=psid, ts=now_ms()))
    assert api("get", f"/contacts/{person}").status_code == 404
    assert store.inbound.contact_of(profile["id"], psid) is None


def test_erasure_waits_for_a_run_still_sending_to_the_person(
    api, fb, drain, store, page, profile, program, contact, opted_in
):
    program()
    contact("c-1")
    opted_in("c-1")
    assert start_run(api, ["c-1"], run_id="pending").status_code == 202
    refused = api("delete", "/contacts/c-1")
    assert refused.status_code == 409
    assert refused.get_json()["error"]["details"]["runs"] == ["pending"]
    assert api("get", "/contacts/c-1").status_code == 200  # nothing was erased
    drain()
    assert outcomes(api, "pending")["c-1"]["outcome"] == "sent"
    assert api("delete", "/contacts/c-1").status_code == 200
    assert api("get", "/contacts/c-1").status_code == 404


def test_an_erased_contact_can_opt_in_again_later(api, post_webhook, refs, page, profile, contact):
    contact("c-1")
    assert api("delete", "/contacts/c-1").status_code == 200
    later = now_ms() + 1000  # a new click on the button, after the erasure
    payload = load_webhook(
        "optin_send_to_messenger",
        page_id=page["id"],
        psid="70001",
        ref=refs.sign(profile["id"], "c-1"),
        ts=later,
    )
    assert post_webhook(payload).status_code == 200
    assert consent_of(api, "c-1", profile["id"])["state"] == "opted_in"


FAST_BREAKER = {"BREAKER_MIN_SENDS": "1000"}  # these tests are about consent, not the breaker


@pytest.mark.parametrize("settings_overrides", [FAST_BREAKER])
@pytest.mark.parametrize(
    ("refusal", "reason", "source"),
    [
        (
            {"code": 10, "subcode": 1893015, "message": "stopped notification messages"},
            "person_stopped",
            "messenger_stop",
        ),
        (
            {"code": 100, "subcode": 2018001, "message": "No matching user found"},
            "invalid_recipient",
            "unreachable",
        ),
    ],
)
def test_facebook_refusals_that_withdraw_consent(
    api,
    fb,
    drain,
    page,
    profile,
    program,
    contact,
    opted_in,
    refusal,
    reason,
    source,
    settings_overrides,
):
    program()
    contact("c-1")
    psid = opted_in("c-1")
    fb.add_fault(recipient=psid, times=1, **refusal)
    _, first = run_to_end(api, drain, ["c-1"], run_id="first")
    assert (first["c-1"]["outcome"], first["c-1"]["reason_code"]) == ("failed", reason)
    ledger = consent_of(api, "c-1", profile["id"])
    assert ledger["state"] == "opted_out"
    assert (ledger["events"][-1]["source"], ledger["events"][-1]["recipient"]) == (source, psid)
    calls = len(fb.sends())
    # The person writes to the Page: that lifts "unreachable", but consent needs a new opt-in.
    assert fb.post_event("message", page_id=page["id"], psid=psid, text="hi")["status"] == 200
    _, second = run_to_end(api, drain, ["c-1"], run_id="second")
    assert (second["c-1"]["outcome"], second["c-1"]["reason_code"]) == ("warning", "opted_out")
    assert len(fb.sends()) == calls


def test_removing_the_app_on_facebook_withdraws_the_persons_consent(
    api, client, fb, drain, store, page, profile, contact, post_webhook, refs, click_optin
):
    contact("c-1")
    contact("c-2")
    psid = fb.add_person(page["id"], user_id="u-1")  # the person who removes the app
    other = fb.add_person(page["id"])
    for contact_id, rcpt in (("c-1", psid), ("c-2", other)):
        click_optin(contact_id, rcpt, now_ms() - 1000)
    answer = client.post("/facebook/deauthorize", data={"signed_request": signed("u-1")})
    assert answer.status_code == 200
    drain()
    ledger = consent_of(api, "c-1", profile["id"])
    assert ledger["state"] == "opted_out"
    assert (ledger["events"][-1]["source"], ledger["events"][-1]["recipient"]) == (
        "deauthorize",
        psid,
    )
    assert consent_of(api, "c-2", profile["id"])["state"] == "opted_in"  # nobody else


def test_the_ledger_keeps_its_newest_events_and_late_ones_in_time_order(store, profile, page):
    store.contacts.merge_many({"c-1": {"FIRSTNAME": "A"}})
    base = now_ms() - 1_000_000
    for n in range(60):  # 120 events: opted in and out again and again
        at = base + n * 1000
        store.inbound.apply(
            [Event("optin", page["id"], "70001", at, profile=profile["id"], contact="c-1")]
        )
        store.consent.withdraw(
            profile["id"], "c-1", source="api", page_id=page["id"], at_ms=at + 500
        )
    history = store.consent.history(profile["id"], "c-1")
    assert len(history) == keys.CONSENT_EVENTS_KEPT
    assert history[-1]["at_ms"] == base + 59_500 and history[-1]["type"] == "opt_out"
    late = base + 58_700  # a webhook delayed by a second: history, in its place, not the state
    store.inbound.apply(
        [Event("optin", page["id"], "70001", late, profile=profile["id"], contact="c-1")]
    )
    times = [e["at_ms"] for e in store.consent.history(profile["id"], "c-1")]
    assert times == sorted(times) and late in times
    assert store.consent.state(profile["id"], "c-1") == "opted_out"
    assert store.consent.counts(profile["id"]) == {"opted_in": 0, "opted_out": 1}
