"""Bad input at the webhook, generated: never a 5xx, never a change without a valid signature
and a well-formed page event; and a recorded burst replayed three times counts once."""
from __future__ import annotations

import json
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.stats import day_of
from tests.test_webhook import snapshot

PAGE = "104857600000001"
CASES: list[str] = []

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64), st.floats(allow_nan=False),
                    st.text(max_size=30))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                           max_leaves=20)
kinds = st.sampled_from(["optin", "message", "delivery", "read", "postback", "referral", "reaction",
                         "policy_enforcement", "standby", "game_play"])
events = st.fixed_dictionaries({"sender": st.one_of(st.fixed_dictionaries({"id": st.one_of(st.text(max_size=20), st.integers())}),
                                                    json_values),
                                "timestamp": st.one_of(st.integers(0, 2**45), json_values)},
                               optional={"recipient": json_values}).flatmap(
    lambda base: st.tuples(kinds, json_values).map(lambda kv: {**base, kv[0]: kv[1]}))
envelopes = st.fixed_dictionaries({
    "object": st.one_of(st.just("page"), st.text(max_size=10), json_values),
    "entry": st.one_of(st.lists(st.fixed_dictionaries({"id": st.one_of(st.just(PAGE), st.text(max_size=16), st.integers()),
                                                       "time": st.integers(0, 2**45),
                                                       "messaging": st.one_of(st.lists(events, max_size=5), json_values)}),
                                max_size=4), json_values)})
bodies = st.one_of(envelopes.map(lambda e: json.dumps(e).encode()), json_values.map(lambda v: json.dumps(v).encode()),
                   st.binary(max_size=300))


@pytest.fixture
def profile(store):
    return store.profiles.create(name="Fuzz", page_id=PAGE, page_name="Fuzz", page_token="t")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(body=bodies, signing=st.sampled_from(["valid", "forged", "missing", "other-body"]))
def test_webhook_never_fails_and_changes_nothing_unless_signed_and_well_formed(client, signer, redis_client,
                                                                              profile, body, signing):
    CASES.append(signing)
    header = {"valid": signer.sign(body), "forged": "sha256=" + "ab" * 32, "missing": None,
              "other-body": signer.sign(body + b" ")}[signing]
    before = snapshot(redis_client)
    answer = client.post("/webhook", data=body, headers={"X-Hub-Signature-256": header} if header else {})
    assert answer.status_code in (200, 400, 403, 413)
    if signing != "valid":
        assert answer.status_code == 403 and snapshot(redis_client) == before
    elif answer.status_code != 200:
        assert snapshot(redis_client) == before


def test_fuzz_case_count_is_reported():
    """The number of generated webhook cases of the test above (printed with -s, kept in the note)."""
    print(f"\nwebhook fuzz: {len(CASES)} cases ({', '.join(f'{k} {CASES.count(k)}' for k in sorted(set(CASES)))})")
    assert len(CASES) >= 300


def test_huge_bodies_are_refused_before_parsing(client, signer, redis_client, profile):
    body = b'{"object":"page","entry":[' + b'{"id":"1"},' * 200_000 + b'{"id":"1"}]}'
    before = snapshot(redis_client)
    assert client.post("/webhook", data=body, headers={"X-Hub-Signature-256": signer.sign(body)}).status_code == 413
    assert snapshot(redis_client) == before


def test_a_recorded_burst_replayed_three_times_in_random_order_counts_each_event_once(client, signer, store, refs,
                                                                                      profile):
    now = int(time.time() * 1000)
    for i in range(40):
        store.messages.record_sent(profile.id, f"c{i}", f"p{i}", f"m_{i}", now - 10_000)
    unique: list[dict] = []
    for i in range(40):
        unique.append({"sender": {"id": f"p{i}"}, "recipient": {"id": PAGE}, "timestamp": now + i,
                       "delivery": {"watermark": now, **({"mids": [f"m_{i}"]} if i % 2 else {})}})
    for i in range(20):
        unique.append({"sender": {"id": f"p{i}"}, "recipient": {"id": PAGE}, "timestamp": now + 100 + i,
                       "read": {"watermark": now}})
    for i in range(15):
        unique.append({"sender": {"id": f"new{i}"}, "recipient": {"id": PAGE}, "timestamp": now + 200 + i,
                       "optin": {"ref": refs.sign(profile.id, f"o{i}")}})
    for i in range(25):
        unique.append({"sender": {"id": f"chat{i}"}, "recipient": {"id": PAGE}, "timestamp": now + 300 + i,
                       "message": {"mid": f"m_in{i}", "text": "hello"}})
    bodies = [json.dumps({"object": "page", "entry": [{"id": PAGE, "time": now, "messaging": [e]}]}).encode()
              for e in unique]
    bodies += [json.dumps({"object": "page", "entry": [{"id": PAGE, "time": now, "messaging": unique[i:i + 10]}]}).encode()
               for i in range(0, len(unique), 10)]  # Facebook also batches the same events differently
    replay = bodies * 3
    random.Random(7).shuffle(replay)
    for body in replay:
        assert client.post("/webhook", data=body, headers={"X-Hub-Signature-256": signer.sign(body)}).status_code == 200
    counts = store.stats.day(profile.id, day_of(now - 10_000, store.tz))
    assert (counts["sent"], counts["delivered"], counts["read"]) == (40, 40, 20)
    assert len(store.stats.rows(profile.id, day_of(now - 10_000, store.tz), "delivered", count=1000)) == 40
    assert all(store.contacts.get(f"o{i}") == {profile.optin_field: f"new{i}"} for i in range(15))
    assert [store.inbound.last_seen(profile.id, f"chat{i}") for i in range(25)] == [now + 300 + i for i in range(25)]
    assert store.inbound.unmatched(profile.id) == []
