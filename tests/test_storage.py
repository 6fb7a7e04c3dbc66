"""Storage invariants under concurrency: atomic creation, receipts counted once, opt-ins kept."""

from __future__ import annotations

import gc
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
    made = [
        storage.Storage(storage.connect(redis_server.url), cipher=TokenCipher([KEY]))
        for _ in range(8)
    ]
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
    results = race(
        [
            lambda s=s, i=i: s.profiles.create(
                name=f"P{i}", page_id="42", page_name="x", page_token="t"
            )
            for i, s in enumerate(stores)
        ]
    )
    created = [r for r in results if not isinstance(r, Exception)]
    assert len(created) == 1
    assert all(
        isinstance(r, PageTaken) and r.owner_id == created[0].id
        for r in results
        if r not in created
    )
    assert redis_client.zcard(keys.profiles()) == 1
    assert redis_client.get(keys.page_owner("42")) == created[0].id


def test_profile_ids_and_optin_fields_never_repeat(stores):
    made = race(
        [
            lambda s=s, i=i: s.profiles.create(
                name="P", page_id=str(1000 + i), page_name="x", page_token="t"
            )
            for i, s in enumerate(stores)
        ]
    )
    assert len({p.optin_field for p in made}) == len(stores)
    assert sorted(int(p.id) for p in made) == list(range(1, len(stores) + 1))


def test_token_is_encrypted_at_rest_and_decrypts(stores, redis_client):
    profile = stores[0].profiles.create(
        name="P", page_id="1", page_name="x", page_token="sbx-secret-token"
    )
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
        race(
            [
                lambda: stores[0].contacts.replace("c1", {"FIRSTNAME": "Ann"}),
                lambda: stores[1].inbound.apply([optin]),
            ]
        )
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
    assert call() == [0, 0, 0, 0, 0, 0]
    redis_client.script_flush()  # as after a Redis restart without persistence
    assert call() == [0, 0, 0, 0, 0, 0]
    mine = apply._local.connection
    redis_client.client_kill_filter(_type="normal", skipme=True)  # every other connection, mine too
    assert call() == [0, 0, 0, 0, 0, 0]  # the kept connection broke: made again once, on a new one
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
    assert apply._local.connection is kept
    assert apply(args=["[]", 1000, 10, "{}"]) == [0, 0, 0, 0, 0, 0]


def test_direct_script_under_a_thread_per_request_server_leaks_no_connection(redis_client):
    """Werkzeug's server (tests, `make run`) starts a thread per connection: each thread's
    connection closes when it ends, and more threads than the pool's cap of 100 are fine."""
    from storage.scripts import DirectScript

    apply = DirectScript(redis_client, "apply_events")
    clients_before = len(redis_client.client_list())
    gc.disable()  # closed when the thread ends, not when the collector breaks redis-py's cycles
    try:
        for _ in range(150):
            thread = threading.Thread(
                target=apply, kwargs={"args": ["[]", 1000, 10, '{"read": 1}']}
            )
            thread.start()
            thread.join()
        assert redis_client.hget(keys.metric("webhook_events"), "read") == "150"
        # Each closed with its thread (other tests' clients may come and go meanwhile: allow a few).
        wait_until(lambda: len(redis_client.client_list()) <= clients_before + 10)
    finally:
        gc.enable()


# -- shared writes (the webhook's group commit) --------------------------------------------------


class GatedApply:
    """Stands in for the script call: records each write, holds the first until `open()`,
    and fails like Redis would for the events or kinds it is told to."""

    def __init__(self, poison: str = "", error: Exception | None = None):
        self.writes: list[tuple[list, dict]] = []
        self.first_started, self.gate = threading.Event(), threading.Event()
        self.poison, self.error = poison, error

    def __call__(self, events, kinds):
        self.writes.append(([e.rcpt for e in events], dict(kinds)))
        if len(self.writes) == 1:
            self.first_started.set()
            self.gate.wait(10)
        if self.error and any(e.rcpt == self.poison or not self.poison for e in events):
            raise self.error

    def open(self):
        self.gate.set()


def start_callers(shared, names, kinds=None):
    """One thread per name, each writing one event for recipient `name`; returns name -> outcome."""
    outcomes, threads = {}, []

    def call(name):
        try:
            shared.write([Event("seen", "7", name, 1)], kinds or {"message": 1})
            outcomes[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcomes[name] = exc

    for name in names:
        threads.append(threading.Thread(target=call, args=(name,)))
        threads[-1].start()
    return outcomes, threads


def hold_first_write(shared, apply, followers):
    """The first caller's write in flight (held), `followers` callers waiting behind it."""
    outcomes, threads = start_callers(shared, ["first"])
    assert apply.first_started.wait(10)
    more, more_threads = start_callers(shared, followers)
    wait_until(lambda: shared.waiting == len(followers))
    apply.open()
    for thread in threads + more_threads:
        thread.join(10)
    return {**outcomes, **more}


def test_callers_arriving_during_a_write_share_the_next_one():
    from storage.inbound import SharedWrites

    apply = GatedApply()
    shared = SharedWrites(apply)
    outcomes = hold_first_write(shared, apply, ["a", "b", "c"])
    assert outcomes == {"first": "ok", "a": "ok", "b": "ok", "c": "ok"}
    assert apply.writes[0] == (["first"], {"message": 1})
    assert len(apply.writes) == 2  # three callers, one round trip
    assert sorted(apply.writes[1][0]) == ["a", "b", "c"] and apply.writes[1][1] == {"message": 3}
    assert shared.waiting == 0


def test_a_lone_caller_writes_at_once_and_a_shared_write_respects_the_event_cap(monkeypatch):
    from storage import inbound

    monkeypatch.setattr(inbound, "EVENTS_PER_SHARED_CALL", 2)
    apply = GatedApply()
    shared = inbound.SharedWrites(apply)
    outcomes = hold_first_write(shared, apply, ["a", "b", "c"])
    assert set(outcomes.values()) == {"ok"}
    assert [len(events) for events, _ in apply.writes] == [1, 2, 1]
    shared.write([Event("seen", "7", "alone", 1)], {})
    assert apply.writes[-1] == (["alone"], {})


def test_a_script_error_in_a_shared_write_fails_only_its_own_caller():
    from redis.exceptions import ResponseError

    from storage.inbound import SharedWrites

    apply = GatedApply(poison="b", error=ResponseError("ERR user_script: bad event"))
    shared = SharedWrites(apply)
    outcomes = hold_first_write(shared, apply, ["a", "b", "c"])
    assert isinstance(outcomes.pop("b"), ResponseError)
    assert outcomes == {"first": "ok", "a": "ok", "c": "ok"}
    assert sorted(apply.writes[1][0]) == ["a", "b", "c"]  # tried together, then one by one
    assert sorted(events[0] for events, _ in apply.writes[2:]) == ["a", "b", "c"]


def test_a_connection_error_fails_every_caller_of_the_write():
    from redis.exceptions import ConnectionError as RedisConnectionError

    from storage.inbound import SharedWrites

    apply = GatedApply(error=RedisConnectionError("Connection refused"))
    shared = SharedWrites(apply)
    outcomes = hold_first_write(shared, apply, ["a", "b"])
    assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes.values())
    assert len(apply.writes) == 2  # no retry per caller: Redis is down for all of them


def test_concurrent_shared_writes_apply_every_event_and_count_every_kind(stores, redis_client):
    profile = stores[0].profiles.create(name="P", page_id="7", page_name="x", page_token="t")
    inbound = stores[0].inbound
    before = int(redis_client.hget(keys.metric("webhook_events"), "message") or 0)

    def post(thread):
        for i in range(40):
            inbound.apply_shared([Event("seen", "7", f"p{thread}-{i}", 1000 + i)], {"message": 1})

    race([lambda t=t: post(t) for t in range(12)])
    # what was parked while the threads crowded in: applied by the drainer on its own
    wait_until(lambda: not redis_client.llen(keys.inbox()))
    seen = redis_client.hgetall(keys.seen(profile.id))
    assert len(seen) == 12 * 40 and seen["p3-39"] == "1039"
    assert int(redis_client.hget(keys.metric("webhook_events"), "message")) - before == 12 * 40


# -- parked writes (the inbox) ---------------------------------------------------------------------


def parking(apply):
    """SharedWrites with a `park` that records the recipients of each write parked."""
    from storage.inbound import SharedWrites

    parked: list[list[str]] = []
    shared = SharedWrites(apply, park=lambda events, kinds: parked.append([e.rcpt for e in events]))
    return shared, parked


def test_a_crowded_small_write_is_parked_and_a_lone_one_applied_at_once(monkeypatch):
    from storage import inbound

    monkeypatch.setattr(inbound, "DRAIN_DELAY_S", 60.0)  # "just parked" lasts the whole test
    apply = GatedApply()
    shared, parked = parking(apply)
    outcomes = hold_first_write(shared, apply, ["a", "b"])
    assert set(outcomes.values()) == {"ok"}
    assert [events for events, _ in apply.writes] == [["first"]]  # alone: applied at once
    assert [sorted(names) for names in parked] == [["a", "b"]]  # waited together: parked
    shared.write([Event("seen", "7", "right-after", 1)], {})
    assert parked[-1] == ["right-after"]  # the crowd is still there: parked too
    big = [Event("seen", "7", f"big{i}", 1) for i in range(inbound.PARK_BELOW_EVENTS)]
    shared.write(big, {})
    assert len(apply.writes[-1][0]) == inbound.PARK_BELOW_EVENTS  # big enough: applied at once

    monkeypatch.setattr(inbound, "DRAIN_DELAY_S", 0.0)  # the crowd has gone
    shared.write([Event("seen", "7", "later", 1)], {})
    assert apply.writes[-1] == (["later"], {})


def seen_at(redis_client, pid, rcpt):
    return redis_client.hget(keys.seen(pid), rcpt)


def test_parked_writes_are_applied_oldest_first_by_the_next_call(stores, redis_client):
    store = stores[0]
    profile = store.profiles.create(name="P", page_id="7", page_name="x", page_token="t")
    apply = store.inbound.apply
    assert apply.park([Event("seen", "7", "ann", 1000)], {"message": 1}) == 1
    assert apply.park([Event("seen", "7", "ann", 2000), Event("seen", "7", "bob", 5)], {}) == 2
    assert seen_at(redis_client, profile.id, "ann") is None  # parked: in Redis, not applied
    # a webhook that comes alone applies what is parked first, then its own events
    store.inbound.apply_shared([Event("seen", "7", "cy", 7)], {"message": 2})
    assert seen_at(redis_client, profile.id, "ann") == "2000"
    assert seen_at(redis_client, profile.id, "bob") == "5"
    assert seen_at(redis_client, profile.id, "cy") == "7"
    assert redis_client.hget(keys.metric("webhook_events"), "message") == "3"
    assert redis_client.llen(keys.inbox()) == 0
    assert store.metrics.gauges()["webhook_writes_parked"] == 0


def test_a_call_takes_parked_writes_up_to_its_event_cap(stores, redis_client, monkeypatch):
    from storage import inbound

    monkeypatch.setattr(inbound, "PARKED_EVENTS_PER_CALL", 3)
    store = stores[0]
    profile = store.profiles.create(name="P", page_id="7", page_name="x", page_token="t")
    for i in range(4):
        store.inbound.apply.park([Event("seen", "7", f"p{i}", 1), Event("seen", "7", "z", i)], {})
    assert store.inbound.apply.drain() == 2  # 2 writes (4 events) taken, 2 left
    assert sorted(redis_client.hkeys(keys.seen(profile.id))) == ["p0", "p1", "z"]
    store.inbound.drain_inbox()
    assert sorted(redis_client.hkeys(keys.seen(profile.id))) == ["p0", "p1", "p2", "p3", "z"]
    assert seen_at(redis_client, profile.id, "z") == "3"


def test_a_parked_write_that_fails_is_set_aside_and_the_others_are_applied(
    stores, redis_client, caplog
):
    import orjson

    store = stores[0]
    profile = store.profiles.create(name="P", page_id="7", page_name="x", page_token="t")
    store.inbound.apply.park([Event("seen", "7", "before", 1)], {})
    poison = orjson.dumps([[{"k": "no_such_kind", "page": "7", "rcpt": "x", "ts": 1}], {}])
    redis_client.rpush(keys.inbox(), poison)  # what no webhook of ours parks
    store.inbound.apply.park([Event("seen", "7", "after", 2)], {"message": 1})
    assert store.inbound.apply.drain() == 0
    assert sorted(redis_client.hkeys(keys.seen(profile.id))) == ["after", "before"]
    assert redis_client.lrange(keys.inbox_failed(), 0, -1) == [poison.decode()]
    assert 0 < redis_client.ttl(keys.inbox_failed()) <= 7 * 86400  # it names people: not kept
    assert store.inbound.apply.set_aside == 1
    assert "1 parked webhook write(s) failed to apply" in caplog.text
    assert store.metrics.gauges()["webhook_writes_set_aside"] == 1


def test_erasing_events_from_writes_set_aside_keeps_the_rest_and_its_week(stores, redis_client):
    import orjson

    store = stores[0]
    mine, other = {"k": "seen", "page": "7", "rcpt": "me", "ts": 1}, {"k": "seen", "rcpt": "x"}
    writes = [[[mine], {"message": 1}], [[other, mine], {"message": 2}], [[other], {}]]
    redis_client.rpush(keys.inbox_failed(), *map(orjson.dumps, writes), b"not json: me")
    redis_client.expire(keys.inbox_failed(), 3600)
    assert store.erasure.set_aside_events(lambda event: event.get("rcpt") == "me") == 2
    left = redis_client.lrange(keys.inbox_failed(), 0, -1)
    assert [orjson.loads(w) for w in left[:3]] == [
        [[], {"message": 1}],  # its webhook's kinds are still counted when applied again
        [[other], {"message": 2}],
        [[other], {}],
    ]
    assert left[3] == "not json: me"  # no write of ours: left as it is
    assert 3590 < redis_client.ttl(keys.inbox_failed()) <= 3600
    assert store.erasure.set_aside_events(lambda event: event.get("rcpt") == "me") == 0


def test_the_drainer_applies_parked_writes_on_its_own_and_again_after_a_failure(
    stores, redis_client, monkeypatch
):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from storage import inbound

    store = stores[0]
    profile = store.profiles.create(name="P", page_id="7", page_name="x", page_token="t")
    store.inbound.apply.park([Event("seen", "7", "ann", 1000)], {})
    store.inbound.drainer.wake()  # as the write finding the inbox empty does
    wait_until(lambda: seen_at(redis_client, profile.id, "ann") == "1000")
    assert redis_client.llen(keys.inbox()) == 0

    monkeypatch.setattr(inbound, "DRAIN_RETRY_S", 0.01)
    calls = []

    def drain_once_redis_is_back():
        calls.append(len(calls))
        if len(calls) == 1:
            raise RedisConnectionError("Connection refused")
        return store.inbound.apply.drain()

    store.inbound.apply.park([Event("seen", "7", "bob", 2000)], {})
    inbound.Drainer(drain_once_redis_is_back, delay_s=0).wake()
    wait_until(lambda: seen_at(redis_client, profile.id, "bob") == "2000")
    assert len(calls) >= 2  # failed, then tried again by itself


def test_a_process_that_exits_applies_what_it_parked_first(redis_server, stores, redis_client):
    import subprocess
    import sys

    profile = stores[0].profiles.create(name="P", page_id="7", page_name="x", page_token="t")
    code = f"""
import storage
from bot.crypto import TokenCipher
from storage.inbound import Drainer, Event
store = storage.Storage(storage.connect({redis_server.url!r}), cipher=TokenCipher([{KEY!r}]))
store.inbound.apply.park([Event("seen", "7", "ann", 1000)], {{}})
Drainer(store.inbound.apply.drain, delay_s=3600).wake()  # its thread would wait an hour
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert seen_at(redis_client, profile.id, "ann") == "1000"
    assert redis_client.llen(keys.inbox()) == 0


def test_the_periodic_task_applies_writes_a_stopped_process_parked(app, store, redis_client):
    from jobs.ticker import apply_parked_webhooks, default_tasks

    profile = store.profiles.create(name="P", page_id="7", page_name="x", page_token="t")
    store.inbound.apply.park([Event("seen", "7", "ann", 1000)], {})  # nobody woken
    assert "apply_parked_webhooks" in {task.name for task in default_tasks(app)}
    with app.app_context():
        apply_parked_webhooks()
    assert seen_at(redis_client, profile.id, "ann") == "1000"


def test_a_script_error_mid_batch_still_counts_the_receipts_applied_before_it(stores, redis_client):
    """Receipts are counted at the end of the script; an error half-way must not lose the
    counts of receipts whose messages it already marked delivered (they are not redone)."""
    import json

    from redis.exceptions import ResponseError

    store = stores[0]
    profile = store.profiles.create(name="P", page_id="7", page_name="x", page_token="t")
    now = int(time.time() * 1000)
    store.messages.record_sent(profile.id, "c1", "psid1", "m1", now - 1000)
    good = Event("delivery", "7", "psid1", now, wm=now).to_lua()
    bad = {"k": "no_such_kind", "page": "7", "rcpt": "psid1", "ts": now}
    with pytest.raises(ResponseError):
        store.inbound.apply.script(args=[json.dumps([good, bad]), 0, 10, "{}"])
    day = day_of(now, store.tz)
    assert store.stats.day(profile.id, day)["delivered"] == 1
    assert len(store.stats.rows(profile.id, day, "delivered", count=10)) == 1
    store.inbound.apply([Event("delivery", "7", "psid1", now, wm=now)])  # Facebook's retry
    assert store.stats.day(profile.id, day)["delivered"] == 1


class ReplyDropper:
    """A TCP proxy to Redis that, while armed, closes the client's connection as soon as the
    server's reply arrives: the command ran but its caller never hears so (a lost reply)."""

    def __init__(self, host: str, port: int):
        import socket

        self.target = (host, port)
        self.armed = threading.Event()
        self.dropped = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source, sink, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if replies and self.armed.is_set():
                    self.armed.clear()
                    self.dropped += 1
                    break
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            end.close()

    def close(self) -> None:
        self.listener.close()


def test_a_claim_whose_reply_was_lost_is_still_its_own(redis_server, redis_client):
    """The claim is made again on a new connection after a lost reply; it must find the contact
    claimed by itself (and send it), not by someone else (which would leave it unsent)."""
    from urllib.parse import urlsplit

    where = urlsplit(redis_server.url)
    proxy = ReplyDropper(where.hostname, where.port)
    store = storage.Storage(storage.connect(proxy.url), cipher=TokenCipher([KEY]))
    try:
        assert store.runs.claim("r1", "c1", deadline_ms=10**13) == 0.0  # the connection is made
        proxy.armed.set()
        assert store.runs.claim("r1", "c2", deadline_ms=10**13) == 0.0
        assert proxy.dropped == 1
        assert (
            store.runs.claim("r1", "c2", deadline_ms=10**13) is None
        )  # a second claimant is refused
        assert redis_client.hlen(keys.run_outcomes("r1")) == 2
    finally:
        store.redis.close()
        proxy.close()


def test_an_optimistic_write_is_made_again_when_its_key_changes_and_given_up_if_it_never_stops(
    stores, redis_client
):
    from storage.errors import StorageError
    from storage.transactions import WATCH_ATTEMPTS, optimistic

    store, reads = stores[0], []

    def add_one(pipe, interfere: int):
        value = int(pipe.get("counter") or 0)
        reads.append(value)
        if len(reads) <= interfere:
            redis_client.incr("counter", 10)  # another process writes between read and write
        pipe.multi()
        pipe.set("counter", value + 1)
        return value

    assert optimistic(store.redis, "counter", lambda p: add_one(p, 2), "counter") == (20, [True])
    assert reads == [0, 10, 20] and redis_client.get("counter") == "21"  # no update lost

    reads.clear()
    with pytest.raises(StorageError, match="counter kept changing"):
        optimistic(store.redis, "counter", lambda p: add_one(p, 10**6), "counter")
    assert len(reads) == WATCH_ATTEMPTS

    assert optimistic(store.redis, "counter", lambda p: p.get("counter"), "counter") == (
        redis_client.get("counter"),
        [],  # read only: nothing queued, no MULTI
    )
