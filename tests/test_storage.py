"""Storage invariants under concurrency: atomic creation, receipts counted once, opt-ins kept."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import storage
from bot.crypto import TokenCipher
from storage import keys
from storage.errors import PageTaken
from storage.inbound import Event
from storage.stats import day_of
from tests.conftest import wait_until

KEY = "q8d5wH4bPZ0bV1N6oQ0m0c2u4nJkK9m1XG2b4B2l3bA="


@pytest.fixture
def stores(redis_server, redis_client):
    """Several independent Storage objects (as separate processes would have) on one Redis."""
    made = [storage.Storage(storage.connect(redis_server.url), cipher=TokenCipher([KEY])) for _ in range(8)]
    yield made
    for s in made:
        s.redis.close()


def race(functions):
    """Run callables at the same moment on separate threads; return results or exceptions."""
    barrier = threading.Barrier(len(functions))

    def run(fn):
        barrier.wait()
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the test inspects what each racer got
            return exc
    with ThreadPoolExecutor(len(functions)) as pool:
        return list(pool.map(run, functions))


def test_racing_creations_of_one_page_make_exactly_one_profile(stores, redis_client):
    results = race([lambda s=s, i=i: s.profiles.create(name=f"P{i}", page_id="42", page_name="x", page_token="t")
                    for i, s in enumerate(stores)])
    created = [r for r in results if not isinstance(r, Exception)]
    assert len(created) == 1
    assert all(isinstance(r, PageTaken) and r.owner_id == created[0].id for r in results if r not in created)
    assert redis_client.zcard(keys.profiles()) == 1
    assert redis_client.get(keys.page_owner("42")) == created[0].id


def test_profile_ids_and_optin_fields_never_repeat(stores):
    made = race([lambda s=s, i=i: s.profiles.create(name="P", page_id=str(1000 + i), page_name="x", page_token="t")
                 for i, s in enumerate(stores)])
    assert len({p.optin_field for p in made}) == len(stores)
    assert sorted(int(p.id) for p in made) == list(range(1, len(stores) + 1))


def test_token_is_encrypted_at_rest_and_decrypts(stores, redis_client):
    profile = stores[0].profiles.create(name="P", page_id="1", page_name="x", page_token="sbx-secret-token")
    stored = redis_client.hget(keys.profile(profile.id), "token")
    assert "sbx-secret-token" not in stored
    assert stores[1].profiles.page_token(profile.id) == "sbx-secret-token"


def test_concurrent_duplicate_receipts_count_once(stores):
    profile = stores[0].profiles.create(name="P", page_id="7", page_name="x", page_token="t")
    now = int(time.time() * 1000)
    for i in range(20):
        stores[0].messages.record_sent(profile.id, f"c{i}", f"psid{i % 4}", f"m{i}", now - 1000)
    events = [Event("read", "7", f"psid{i}", now, wm=now) for i in range(4)]
    race([lambda s=s: s.inbound.apply(events) for s in stores])
    counts = stores[0].stats.day(profile.id, day_of(now, stores[0].tz))
    assert (counts["sent"], counts["delivered"], counts["read"]) == (20, 20, 20)
    assert len(stores[0].stats.rows(profile.id, day_of(now, stores[0].tz), "read", count=100)) == 20


def test_checkbox_sends_expect_no_receipts(stores):
    profile = stores[0].profiles.create(name="P", page_id="7", page_name="x", page_token="t")
    now = int(time.time() * 1000)
    stores[0].messages.record_sent(profile.id, "c1", "user_ref:u1", "m1", now)
    assert stores[0].messages.awaiting(profile.id, "user_ref:u1") == []
    assert stores[0].stats.day(profile.id, day_of(now, stores[0].tz))["sent"] == 1


def test_contact_update_racing_an_optin_keeps_the_optin(stores):
    profile = stores[0].profiles.create(name="P", page_id="9", page_name="x", page_token="t")
    optin = Event("optin", "9", "555", int(time.time() * 1000), profile=profile.id, contact="c1")
    for _ in range(20):
        race([lambda: stores[0].contacts.replace("c1", {"FIRSTNAME": "Ann"}),
              lambda: stores[1].inbound.apply([optin])])
        assert stores[2].contacts.get("c1") == {"FIRSTNAME": "Ann", profile.optin_field: "555"}


def test_days_follow_the_stats_timezone():
    from zoneinfo import ZoneInfo
    instant = 1764027000000  # 2025-11-24T23:30:00Z
    assert day_of(instant, ZoneInfo("UTC")) == "2025-11-24"
    assert day_of(instant, ZoneInfo("Europe/Paris")) == "2025-11-25"
    assert day_of(instant, ZoneInfo("America/New_York")) == "2025-11-24"


# -- the webhook's direct script call -------------------------------------------------------------

def test_direct_script_survives_a_script_flush_and_a_killed_connection(redis_client):
    from storage.scripts import DirectScript
    apply = DirectScript(redis_client, "apply_events")
    call = lambda: apply(args=["[]", 1000, 10, '{"delivery": 2}'])  # noqa: E731
    assert call() == [0, 0, 0]
    redis_client.script_flush()  # as after a Redis restart without persistence
    assert call() == [0, 0, 0]
    mine = apply._local.connection
    redis_client.client_kill_filter(_type="normal", skipme=True)  # every other connection, mine too
    assert call() == [0, 0, 0]  # the kept connection broke: made again once, on a new one
    assert apply._local.connection is not mine
    assert redis_client.hget(keys.metric("webhook_events"), "delivery") == "6"


def test_direct_script_keeps_its_connection_after_a_script_error(redis_client):
    import redis
    from storage.scripts import DirectScript
    apply = DirectScript(redis_client, "apply_events")
    apply(args=["[]", 1000, 10, "{}"])
    kept = apply._local.connection
    with pytest.raises(redis.exceptions.ResponseError):
        apply(args=["not json", 1000, 10, "{}"])
    assert apply._local.connection is kept and apply(args=["[]", 1000, 10, "{}"]) == [0, 0, 0]


def test_direct_script_under_a_thread_per_request_server_leaks_no_connection(redis_client):
    """Werkzeug's server (tests, `make run`) starts a thread per connection: each thread's
    connection closes when it ends, and more threads than the pool's cap of 100 are fine."""
    from storage.scripts import DirectScript
    apply = DirectScript(redis_client, "apply_events")
    clients_before = len(redis_client.client_list())
    for _ in range(150):
        thread = threading.Thread(target=apply, kwargs={"args": ["[]", 1000, 10, '{"read": 1}']})
        thread.start()
        thread.join()
    assert redis_client.hget(keys.metric("webhook_events"), "read") == "150"
    # Each closed with its thread (other tests' clients may come and go meanwhile: allow a few).
    wait_until(lambda: len(redis_client.client_list()) <= clients_before + 10)
