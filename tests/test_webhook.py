"""`/webhook`: verification, signatures, every event kind, duplicates, bad input (an unreadable
body too), Redis down."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time

import pytest
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData
from werkzeug.test import EnvironBuilder

from storage import keys
from storage.inbound import Event
from storage.stats import day_of
from tests.conftest import VERIFY_TOKEN, load_webhook, service_env

PAGE = "104857600000001"
PSID = "6543210987654321"


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def profile(store):
    return store.profiles.create(
        name="Shop", page_id=PAGE, page_name="Shop page", page_token="sbx-page-token"
    )


@pytest.fixture
def ref(refs, profile):
    return refs.sign(profile.id, "c-1")


def snapshot(redis_client) -> dict:
    """Every key and value, to prove a request changed nothing (operational counters for
    /metrics excepted: counting a rejected request is not a change of state)."""
    state = {}
    for key in sorted(k for k in redis_client.keys("*") if not k.startswith(keys.metric(""))):
        kind = redis_client.type(key)
        state[key] = {
            "hash": redis_client.hgetall,
            "string": redis_client.get,
            "zset": lambda k: redis_client.zrange(k, 0, -1, withscores=True),
            "list": lambda k: redis_client.lrange(k, 0, -1),
            "set": redis_client.smembers,
        }[kind](key)
    return state


# -- subscription check ----------------------------------------------------------------------


def test_subscription_check_echoes_the_challenge(client):
    answer = client.get(
        "/webhook",
        query_string={
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": "1158201444",
        },
    )
    assert answer.status_code == 200 and answer.get_data(as_text=True) == "1158201444"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.challenge": "1"},
    ],
)
def test_subscription_check_refuses_wrong_token_or_mode(client, params):
    answer = client.get("/webhook", query_string=params)
    assert answer.status_code == 403 and "1" not in answer.get_data(as_text=True)


# -- signature, size and shape -------------------------------------------------------------


@pytest.mark.parametrize("signature", ["", "sha256=" + "0" * 64, "sha1=abc", "garbage"])
def test_bad_or_missing_signature_is_403_and_changes_nothing(
    post_webhook, redis_client, ref, signature
):
    before = snapshot(redis_client)
    payload = load_webhook("optin_send_to_messenger", page_id=PAGE, psid=PSID, ref=ref, ts=now_ms())
    assert post_webhook(payload, signature=signature).status_code == 403
    assert snapshot(redis_client) == before


def test_signature_is_checked_on_the_raw_bytes_not_reparsed_json(
    post_webhook, store, signer, client, ref
):
    # Meta signs its ASCII-escaped body; the same JSON written differently must not verify.
    payload = load_webhook("message_inbound", page_id=PAGE, psid=PSID, ts=now_ms())
    raw = json.dumps(payload, ensure_ascii=True).encode()
    pretty = json.dumps(payload, ensure_ascii=False, indent=1).encode()
    assert (
        client.post(
            "/webhook", data=pretty, headers={"X-Hub-Signature-256": signer.sign(raw)}
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/webhook", data=raw, headers={"X-Hub-Signature-256": signer.sign(raw)}
        ).status_code
        == 200
    )


def test_body_over_the_limit_is_413(post_webhook, redis_client, profile):
    before = snapshot(redis_client)
    body = b'{"object":"page","entry":[],"pad":"' + b"x" * (1024 * 1024) + b'"}'
    assert post_webhook(body).status_code == 413
    assert snapshot(redis_client) == before


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1,2]",
        b'{"object":"instagram","entry":[]}',
        b"\xff\xfe",
        b'{"entry":[]}',
        b"[" * 100000,
    ],
)
def test_not_json_or_not_a_page_object_is_400(post_webhook, redis_client, profile, body):
    before = snapshot(redis_client)
    assert post_webhook(body).status_code == 400
    assert snapshot(redis_client) == before


class ServerResponse:
    """gunicorn's side of an answer, as the app sees it: start_response is a bound method of the
    server's response object, whose force_close makes it answer `Connection: close`."""

    def __init__(self):
        self.status, self.closes = "", False

    def start_response(self, status, headers, exc_info=None):
        self.status = status

    def force_close(self):
        self.closes = True


class UnreadableBody:
    """A gunicorn wsgi.input whose body cannot be read (as gunicorn raises from Body.read)."""

    def __init__(self, error: Exception):
        self.error = error

    def read(self, size=None):
        raise self.error


def answer_over_wsgi(
    app, wsgi_input, headers: dict, content_length: int | str | None = None
) -> tuple[ServerResponse, bytes]:
    environ = EnvironBuilder(path="/webhook", method="POST", headers=headers).get_environ()
    environ["wsgi.input"] = wsgi_input
    if content_length is not None:
        environ["CONTENT_LENGTH"] = str(content_length)
    server = ServerResponse()
    return server, b"".join(app.wsgi_app(environ, server.start_response))


@pytest.mark.parametrize(
    "error", [InvalidChunkSize(b"zz"), ChunkMissingTerminator(b"XY"), NoMoreData(b"")]
)
def test_a_body_the_server_cannot_read_is_400_and_closes_the_connection(
    app, redis_client, profile, caplog, error
):
    """gunicorn raises its parse errors from wsgi.input.read: not a 500 with a logged Traceback."""
    before = snapshot(redis_client)
    server, body = answer_over_wsgi(app, UnreadableBody(error), {"Transfer-Encoding": "chunked"})
    assert server.status == "400 Bad Request" and b"could not be read" in body and server.closes
    assert snapshot(redis_client) == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_only_an_answer_that_leaves_the_body_unread_closes_the_connection(app, signer, profile):
    body = json.dumps(
        load_webhook("message_inbound", page_id=PAGE, psid=PSID, ts=now_ms())
    ).encode()
    signed = {"X-Hub-Signature-256": signer.sign(body)}
    server, _ = answer_over_wsgi(app, io.BytesIO(body), signed, len(body))
    assert server.status == "200 OK" and not server.closes  # keep-alive, as the benchmark measures
    server, _ = answer_over_wsgi(app, io.BytesIO(b"[]"), {}, 2)
    assert server.status == "403 Forbidden" and not server.closes
    server, _ = answer_over_wsgi(
        app, io.BytesIO(body), {**signed, "Transfer-Encoding": "chunked"}
    )  # read to its end
    assert server.status == "200 OK" and not server.closes
    server, _ = answer_over_wsgi(app, io.BytesIO(body), {}, 10 * 1024 * 1024)
    assert server.status == "413 Request Entity Too Large" and server.closes
    server, _ = answer_over_wsgi(
        app, io.BytesIO(b"x" * (2 * 1024 * 1024)), {"Transfer-Encoding": "chunked"}
    )
    assert server.status == "413 Request Entity Too Large" and server.closes
    server, _ = answer_over_wsgi(
        app, io.BytesIO(b"[]"), {}, "\u00b2"
    )  # a digit to str.isdigit, not to int()
    assert server.status == "400 Bad Request" and server.closes


# -- opt-ins -----------------------------------------------------------------------------------


def test_send_to_messenger_optin_sets_the_profiles_field_and_opens_the_window(
    post_webhook, store, profile, ref
):
    ts = now_ms()
    answer = post_webhook(
        load_webhook("optin_send_to_messenger", page_id=PAGE, psid=PSID, ref=ref, ts=ts)
    )
    assert answer.status_code == 200
    assert store.contacts.get("c-1") == {profile.optin_field: PSID}
    assert store.inbound.contact_of(profile.id, PSID) == "c-1"
    assert store.inbound.last_seen(profile.id, PSID) == ts


def test_checkbox_optin_stores_the_user_ref_until_a_psid_is_known(
    post_webhook, store, profile, ref
):
    ts = now_ms()
    post_webhook(
        load_webhook("optin_checkbox", page_id=PAGE, ref=ref, user_ref="u-7c1e9b2a", ts=ts)
    )
    assert store.contacts.get("c-1") == {profile.optin_field: "user_ref:u-7c1e9b2a"}
    post_webhook(
        load_webhook(
            "message_checkbox_reply", page_id=PAGE, psid=PSID, user_ref="u-7c1e9b2a", ts=ts + 5
        )
    )
    assert store.contacts.get("c-1") == {profile.optin_field: PSID}
    assert store.inbound.contact_of(profile.id, PSID) == "c-1"
    assert store.inbound.contact_of(profile.id, "user_ref:u-7c1e9b2a") is None


@pytest.mark.parametrize("fixture", ["referral_shortlink", "postback_get_started"])
def test_mme_link_refs_opt_in_too(post_webhook, store, profile, ref, fixture):
    ts = now_ms()
    assert (
        post_webhook(load_webhook(fixture, page_id=PAGE, psid=PSID, ref=ref, ts=ts)).status_code
        == 200
    )
    assert store.contacts.get("c-1") == {profile.optin_field: PSID}
    assert store.inbound.last_seen(profile.id, PSID) == ts


@pytest.mark.parametrize("bad_ref", ["c-1", "contact_8f3a2c", "AAAA", ""])
def test_unsigned_or_forged_ref_is_kept_unmatched_and_attaches_to_no_one(
    post_webhook, store, redis_client, profile, ref, bad_ref
):
    forged = bad_ref or ref[:-3] + "abc"
    ts = now_ms()
    post_webhook(
        load_webhook("optin_send_to_messenger", page_id=PAGE, psid=PSID, ref=forged, ts=ts)
    )
    assert redis_client.keys(keys.contact("*")) == []
    assert store.inbound.contact_of(profile.id, PSID) is None
    assert store.inbound.unmatched(profile.id) == [
        {"recipient": PSID, "ref": forged, "source": "optin", "at_ms": ts}
    ]


def test_ref_signed_for_another_profile_is_not_attached(post_webhook, store, refs, profile):
    other = store.profiles.create(name="Other", page_id="999", page_name="Other", page_token="t")
    post_webhook(
        load_webhook(
            "optin_send_to_messenger",
            page_id=PAGE,
            psid=PSID,
            ref=refs.sign(other.id, "c-9"),
            ts=now_ms(),
        )
    )
    assert store.contacts.get("c-9") is None
    assert store.inbound.unmatched(profile.id)[0]["source"] == "other_profile"


def test_a_new_optin_for_the_same_contact_replaces_the_old_psid(post_webhook, store, profile, ref):
    post_webhook(
        load_webhook("optin_send_to_messenger", page_id=PAGE, psid="111", ref=ref, ts=now_ms())
    )
    post_webhook(
        load_webhook("optin_send_to_messenger", page_id=PAGE, psid="222", ref=ref, ts=now_ms())
    )
    assert store.contacts.get("c-1") == {profile.optin_field: "222"}
    assert store.inbound.contact_of(profile.id, "111") is None


def test_marketing_optin_is_kept_but_does_not_opt_in_or_open_the_window(
    post_webhook, store, redis_client, profile
):
    post_webhook(load_webhook("optin_marketing", page_id=PAGE, psid=PSID, ts=now_ms()))
    assert store.inbound.last_seen(profile.id, PSID) is None
    assert redis_client.hget(keys.marketing(profile.id), PSID).startswith(
        "OPTED_IN\x1f1779552000000"
    )


# -- interactions -------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["message_inbound", "standby_message", "reaction"])
def test_inbound_interactions_keep_only_the_time(
    post_webhook, store, redis_client, profile, fixture
):
    before = snapshot(redis_client)
    ts = now_ms()
    post_webhook(load_webhook(fixture, page_id=PAGE, psid=PSID, ts=ts))
    after = snapshot(redis_client)
    # The only change is the interaction time: no message text, no attachment, nothing else.
    assert {k: v for k, v in after.items() if k not in before} == {
        keys.seen(profile.id): {PSID: str(ts)}
    }
    assert {k: after[k] for k in before} == before


def test_interaction_time_never_goes_back_for_late_events(post_webhook, store, profile):
    ts = now_ms()
    post_webhook(load_webhook("message_inbound", page_id=PAGE, psid=PSID, ts=ts))
    post_webhook(load_webhook("message_inbound", page_id=PAGE, psid=PSID, ts=ts - 60_000))
    assert store.inbound.last_seen(profile.id, PSID) == ts


def test_echo_is_not_an_inbound_interaction(post_webhook, redis_client, profile):
    before = snapshot(redis_client)
    answer = post_webhook(
        load_webhook("message_echo", page_id=PAGE, psid=PSID, mid="m_1", ts=now_ms())
    )
    assert answer.status_code == 200 and snapshot(redis_client) == before


@pytest.mark.parametrize("fixture", ["changes_feed", "unknown_kind"])
def test_entries_without_messaging_and_unknown_kinds_are_ignored(
    post_webhook, redis_client, profile, fixture
):
    before = snapshot(redis_client)
    assert (
        post_webhook(load_webhook(fixture, page_id=PAGE, psid=PSID, ts=now_ms())).status_code == 200
    )
    assert snapshot(redis_client) == before


def test_unknown_page_is_ignored(post_webhook, redis_client, ref):
    before = snapshot(redis_client)
    payload = load_webhook(
        "optin_send_to_messenger", page_id="5550001", psid=PSID, ref=ref, ts=now_ms()
    )
    assert post_webhook(payload).status_code == 200
    assert snapshot(redis_client) == before


def test_policy_block_pauses_sending_until_facebook_lifts_it(post_webhook, store, profile):
    """A policy-enforcement block pauses the profile's sending at once, with no probe time (it
    waits for Facebook), once however often it is delivered; the unblock resumes it."""
    block = load_webhook("policy_block", page_id=PAGE, ts=now_ms())
    post_webhook(block)
    paused = store.sending.state(profile.id)
    assert (paused.state, paused.reason, paused.resume_at_ms) == ("paused", "policy_block", None)
    assert "Platform Policies" in paused.detail
    post_webhook(block)  # Facebook delivers it again: still one pause, counted once
    assert store.sending.state(profile.id) == paused
    assert store.metrics.read("breaker_trips") == {"policy_block": 1.0}
    unblock = load_webhook("policy_block", page_id=PAGE, ts=now_ms())
    unblock["entry"][0]["messaging"][0]["policy_enforcement"] = {"action": "unblock"}
    post_webhook(unblock)
    assert store.sending.state(profile.id).state == "open"


@pytest.mark.parametrize(
    "event",
    [
        {"sender": "not-a-dict", "optin": {"ref": "x"}},
        {"sender": {"id": ["list"]}, "message": {"text": "x"}},
        {"delivery": {"watermark": "soon"}, "sender": {"id": "1"}},
        {"read": None},
        "a string",
        {"sender": {"id": "1"}, "timestamp": True, "message": "text"},
    ],
)
def test_odd_shapes_are_ignored_without_error(post_webhook, redis_client, profile, event):
    before = snapshot(redis_client)
    payload = {
        "object": "page",
        "entry": [{"id": PAGE, "messaging": [event]}, "junk", {"messaging": "x"}],
    }
    assert post_webhook(payload).status_code == 200
    assert snapshot(redis_client) == before


# -- receipts -----------------------------------------------------------------------------------


def sent(store, profile, mid: str, at_ms: int, contact: str = "c-1", rcpt: str = PSID):
    store.messages.record_sent(profile.id, contact, rcpt, mid, at_ms)


def day_counts(store, profile, at_ms: int) -> dict:
    return store.stats.day(profile.id, day_of(at_ms, store.tz))


def test_delivery_watermark_delivers_every_earlier_message_once(post_webhook, store, profile):
    t = now_ms()
    sent(store, profile, "m_a", t - 3000)
    sent(store, profile, "m_b", t - 2000)
    sent(store, profile, "m_c", t + 60_000)  # after the watermark: still waiting
    payload = load_webhook("delivery_no_mids", page_id=PAGE, psid=PSID, ts=t, watermark=t)
    for _ in range(3):  # Facebook repeats itself
        assert post_webhook(payload).status_code == 200
    counts = day_counts(store, profile, t)
    assert (counts["sent"], counts["delivered"], counts["read"]) == (3, 2, 0)
    assert [
        m["message_id"] for m in store.messages.awaiting(profile.id, PSID) if not m["delivered"]
    ] == ["m_c"]


def test_delivery_mids_deliver_even_past_the_watermark(post_webhook, store, profile):
    t = now_ms()
    sent(store, profile, "m_late", t + 60_000)
    post_webhook(load_webhook("delivery", page_id=PAGE, psid=PSID, mid="m_late", ts=t, watermark=t))
    assert day_counts(store, profile, t + 60_000)["delivered"] == 1


def test_read_implies_delivered_and_counts_on_the_day_sent(post_webhook, store, profile):
    t = now_ms()
    yesterday = t - 86_400_000
    sent(store, profile, "m_old", yesterday)
    sent(store, profile, "m_new", t - 1000)
    payload = load_webhook("read", page_id=PAGE, psid=PSID, ts=t, watermark=t)
    post_webhook(payload)
    post_webhook(payload)
    for at in (yesterday, t - 1000):
        counts = day_counts(store, profile, at)
        assert (counts["sent"], counts["delivered"], counts["read"]) == (1, 1, 1)
    assert store.messages.awaiting(profile.id, PSID) == []
    rows = store.stats.rows(profile.id, day_of(yesterday, store.tz), "read")
    assert [(r["contact_id"], r["message_id"]) for r in rows] == [("c-1", "m_old")]


def test_delivery_then_read_counts_each_once(post_webhook, store, profile):
    t = now_ms()
    sent(store, profile, "m_a", t - 1000)
    post_webhook(load_webhook("delivery", page_id=PAGE, psid=PSID, mid="m_a", ts=t, watermark=t))
    post_webhook(load_webhook("read", page_id=PAGE, psid=PSID, ts=t + 1, watermark=t + 1))
    post_webhook(load_webhook("delivery", page_id=PAGE, psid=PSID, mid="m_a", ts=t, watermark=t))
    counts = day_counts(store, profile, t)
    assert (counts["delivered"], counts["read"]) == (1, 1)


def test_receipts_for_another_psid_or_page_change_nothing(post_webhook, store, profile):
    t = now_ms()
    sent(store, profile, "m_a", t - 1000)
    post_webhook(load_webhook("read", page_id=PAGE, psid="777", ts=t, watermark=t))
    post_webhook(load_webhook("read", page_id="5550001", psid=PSID, ts=t, watermark=t))
    assert day_counts(store, profile, t)["delivered"] == 0


def test_batch_with_many_entries_and_pages_is_applied_in_full(post_webhook, store, refs, profile):
    other = store.profiles.create(name="Other", page_id="200", page_name="Other", page_token="t")
    t = now_ms()
    entries = []
    for i in range(50):
        page, owner = (PAGE, profile) if i % 2 else ("200", other)
        entries.append(
            {
                "id": page,
                "time": t,
                "messaging": [
                    {
                        "sender": {"id": f"9{i}"},
                        "recipient": {"id": page},
                        "timestamp": t + i,
                        "optin": {"ref": refs.sign(owner.id, f"c-{i}")},
                    }
                ],
            }
        )
    assert post_webhook({"object": "page", "entry": entries}).status_code == 200
    for i in range(50):
        owner = profile if i % 2 else other
        assert store.contacts.get(f"c-{i}") == {owner.optin_field: f"9{i}"}


# -- Redis unavailable -----------------------------------------------------------------------------


def test_redis_down_answers_503_so_facebook_retries(app, settings, signer, ref, caplog):
    from bot.app import create_app
    from storage.embedded import free_port
    from tests.conftest import make_settings

    down = create_app(make_settings(f"redis://127.0.0.1:{free_port()}/0", settings.graph_api_url))
    body = json.dumps(
        load_webhook("optin_send_to_messenger", page_id=PAGE, psid=PSID, ref=ref, ts=now_ms())
    ).encode()
    started = time.monotonic()
    answer = down.test_client().post(
        "/webhook", data=body, headers={"X-Hub-Signature-256": signer.sign(body)}
    )
    assert answer.status_code == 503
    assert time.monotonic() - started < 4  # inside Facebook's 5 s
    assert [r.message for r in caplog.records if "503" in r.getMessage()]
    assert down.test_client().get("/healthz").status_code == 503


def test_writes_set_aside_are_applied_again_once_the_fault_is_fixed(
    store, redis_server, sandbox_server
):
    """`python -m bot.reapply_webhooks`, as the operator runs it (README, Operating it)."""
    profile = store.profiles.create(name="P", page_id="77", page_name="x", page_token="t")
    store.redis.set(keys.seen(profile.id), "not a hash")  # a fault: every seen event fails
    store.inbound.apply.park([Event("seen", "77", "psid-1", 1_000)], {"message": 1})
    store.inbound.apply.drain()
    assert store.metrics.gauges()["webhook_writes_set_aside"] == 1
    env = {**os.environ, **service_env(redis_server.url, sandbox_server.url)}

    def reapply() -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "bot.reapply_webhooks"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    still_failing = reapply()
    assert still_failing.returncode == 1, still_failing.stderr
    assert "applied again 1 webhook write(s) that had been set aside; 1 set aside now" in (
        still_failing.stdout
    )
    assert "failed to apply" in still_failing.stderr  # the log says why, as the web's does
    assert store.redis.get(keys.seen(profile.id)) == "not a hash"

    store.redis.delete(keys.seen(profile.id))  # the fault fixed
    fixed = reapply()
    assert fixed.returncode == 0, fixed.stderr
    assert "applied again 1 webhook write(s) that had been set aside; 0 set aside now" in (
        fixed.stdout
    )
    assert store.redis.hget(keys.seen(profile.id), "psid-1") == "1000"
    assert store.redis.llen(keys.inbox()) == 0
    assert store.metrics.gauges()["webhook_writes_set_aside"] == 0
