"""What Facebook tells us, applied atomically, one script call per webhook at most.

bot/events.py turns a webhook body into `Event`s; `Inbound.apply` hands them all to one Lua
script (storage/lua/apply_events.lua), which finds each Page's profile and updates opt-ins,
interaction times, unmatched opt-ins and receipts. Every kind is idempotent. The webhook uses
`Inbound.apply_shared`: webhooks arriving together in one process share a call (SharedWrites),
and while they crowd in, small writes are parked in the inbox and applied many per call, from
every process (Drainer).
Keys touched: page, contact, p:{pid}:recipients/seen/unmatched/marketing/await/day...
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple, Required, TypedDict, Unpack
from zoneinfo import ZoneInfo

import orjson
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ResponseError

from storage import keys, scripts
from storage.redis_types import scored, text
from storage.stats import day_of, day_score
from storage.transactions import optimistic

log = logging.getLogger(__name__)

UNMATCHED_KEPT = 1000  # per profile, newest first; the operator reviews them
EVENTS_PER_SHARED_CALL = 500  # a shared write takes waiting callers up to this many events

# Parking (SharedWrites): while webhooks crowd in, small writes are parked in the inbox with a
# plain RPUSH and applied a moment later, many in one script call. A script call costs Redis
# about as much before its first event as a few events do (bench/redis_cpu.py), and under load
# most webhooks carry one event.
PARK_BELOW_EVENTS = 50  # a write this big or bigger already spreads that cost: applied at once
PARKED_EVENTS_PER_CALL = 500  # a call stops taking parked writes past this many events
PARKED_PER_CALL = 200  # and takes at most this many writes
# A crowd lasts this long after this process last parked a write; the process parking the first
# write of an empty inbox applies it this long afterwards, with what every process parked
# meanwhile. Parked events are applied about this much later than they would be otherwise.
DRAIN_DELAY_S = 0.005
# A process whose write makes the inbox a multiple of this long wakes its own drainer too, in
# case the process due to apply the inbox has stopped.
WAKE_EVERY_PARKED = 20
DRAIN_RETRY_S = 0.5  # a drain that failed (Redis away) is tried again after this long
INBOX_FAILED_KEPT = 1000  # parked writes that failed to apply, newest kept
INBOX_FAILED_TTL_S = 7 * 86400  # the set-aside writes name people: kept a week after the last
KINDS = frozenset(
    {
        "seen",
        "optin",
        "unmatched",
        "marketing",
        "link",
        "delivery",
        "read",
        "echo",
        "block",
        "unblock",
    }
)


# What an event may carry besides kind, page, recipient and time.
EVENT_FIELDS = {
    "profile": "optin: the profile the ref was signed for",
    "contact": "optin: the contact the ref names",
    "ref": "unmatched: the ref as received",
    "source": "unmatched: optin / referral / postback / checkbox / other_profile; optin: the"
    " consent ledger's source (plugin / checkbox / m.me / postback)",
    "opens_window": "unmatched: whether it opens the 24-hour window",
    "fp": "optin: the contact's erasure fingerprint (storage/erasure.py)",
    "wm": "delivery/read: the watermark (epoch ms)",
    "mids": "delivery: message ids (tuple)",
    "user_ref": "link: the checkbox user_ref a PSID now replaces",
    "status": "marketing: opt-in status",
    "expiry": "marketing: token expiry",
    "stop": "marketing: the person stopped messages (consent withdrawn)",
    "reason": "block: Facebook's reason",
    "mid": "echo: the message id Facebook gave our send",
    "run": "echo: the run our metadata named (and `contact` the contact)",
    "day": "echo: the stats day of the send (filled in by Inbound.apply)",
    "score": "echo: that day as YYYYMMDD",
}


_FIELD_NAMES = frozenset(EVENT_FIELDS)


class EventFields(TypedDict, total=False):
    """EVENT_FIELDS with their types."""

    profile: str
    contact: str
    ref: str
    source: str
    opens_window: bool
    fp: str
    wm: int
    mids: tuple[str, ...]
    user_ref: str
    status: str
    expiry: str
    stop: bool
    reason: str
    mid: str
    run: str
    day: str
    score: int


class EventData(EventFields, total=False):
    """An event as the script receives it: the fields given, and only those."""

    k: Required[str]  # kind
    page: Required[str]
    ts: Required[int]
    rcpt: str


# An event as a parked write holds it (EventData, read back as JSON).
ParkedEvent = dict[str, object]


class Event:
    """One normalised event for the Lua script: kind, Page, recipient (a PSID or
    "user_ref:<ref>"), time (epoch ms), and what that kind needs (EVENT_FIELDS).

    It is kept as the very dict the script receives, with only the fields given, so a
    100-event webhook builds 100 small dicts and encodes them, nothing more
    (bench/webhook_ingest.py)."""

    __slots__ = ("data",)

    def __init__(
        self, kind: str, page: str, rcpt: str = "", ts: int = 0, **fields: Unpack[EventFields]
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        if not _FIELD_NAMES.issuperset(fields):
            raise TypeError(
                f"unknown event fields: {', '.join(sorted(set(fields) - _FIELD_NAMES))}"
            )
        data: EventData = {"k": kind, "page": page, "ts": ts}
        if rcpt:
            data["rcpt"] = rcpt
        for name, value in fields.items():
            if value:  # "", 0, (), False, None: not sent
                data[name] = value  # type: ignore[literal-required]  # a name of EventFields
        self.data = data

    @property
    def kind(self) -> str:
        return self.data["k"]

    @property
    def page(self) -> str:
        return self.data["page"]

    @property
    def rcpt(self) -> str:
        return self.data.get("rcpt", "")

    @property
    def ts(self) -> int:
        return self.data["ts"]

    @property
    def fields(self) -> EventFields:
        fields = {name: value for name, value in self.data.items() if name in _FIELD_NAMES}
        return fields  # type: ignore[return-value]  # names of EventFields only, as __init__ keeps

    def __getattr__(self, name: str) -> object:
        if name in _FIELD_NAMES:
            return self.data.get(name, "")
        raise AttributeError(name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and self.data == other.data

    def __repr__(self) -> str:
        return f"Event({self.kind!r}, {self.page!r}, {self.rcpt!r}, {self.ts!r}, **{self.fields!r})"

    def with_fields(self, **fields: Unpack[EventFields]) -> Event:
        merged: EventFields = {**self.fields, **fields}
        return Event(self.kind, self.page, self.rcpt, self.ts, **merged)

    def to_lua(self) -> EventData:
        """The script's form of the event (not a copy: do not change it)."""
        return self.data


class Applied(NamedTuple):
    applied: int
    unknown_page: int
    foreign_ref: int
    erased: int  # opt-ins older than the erasure of their contact (replays): not applied


class ApplyEvents:
    """One call of the apply_events script: all events atomically; duplicates change nothing.
    `kinds` (webhook event kinds seen) are counted for /metrics in the same call.

    Writes can also be parked (`park`: one RPUSH onto the inbox, no script) and applied later
    by any call, `drain` or an ordinary one, which first takes up to PARKED_PER_CALL of them,
    oldest first. A parked write that fails to apply is set aside in inbox_failed."""

    def __init__(self, redis: Redis, clock_skew_ms: int, tz: ZoneInfo) -> None:
        self.script = scripts.DirectScript(redis, "apply_events")  # the webhook's one call
        self.clock_skew_ms, self.tz = clock_skew_ms, tz
        self.set_aside = 0  # parked writes this process's calls set aside

    def __call__(self, events: list[Event], kinds: dict[str, int] | None = None) -> Applied:
        if not events and not kinds:
            return Applied(0, 0, 0, 0)
        return Applied(*self._apply(events, kinds or {}, take_parked=0)[:4])

    def with_parked(self, events: list[Event], kinds: dict[str, int]) -> int:
        """Apply the oldest parked writes (up to PARKED_EVENTS_PER_CALL events), then these
        events; returns how many writes are still parked."""
        return self._apply(events, kinds, take_parked=PARKED_PER_CALL)[5]

    def drain(self) -> int:
        """Apply the oldest parked writes; returns how many are still parked."""
        return self.with_parked([], {})

    def park(self, events: list[Event], kinds: dict[str, int]) -> int:
        """Park a write in the inbox (in Redis, with the replica wait if set, not yet applied);
        returns how many writes are parked."""
        write = orjson.dumps([[e.data for e in self._dated(events)], kinds])
        return int(self.script.command("RPUSH", keys.inbox(), write))

    def _apply(self, events: list[Event], kinds: dict[str, int], take_parked: int) -> list[int]:
        payload = orjson.dumps([e.data for e in self._dated(events)])
        reply = self.script(
            args=[
                payload,
                self.clock_skew_ms,
                UNMATCHED_KEPT,
                orjson.dumps(kinds),
                take_parked,
                PARKED_EVENTS_PER_CALL,
                INBOX_FAILED_KEPT,
                INBOX_FAILED_TTL_S,
            ]
        )
        counts = [int(n) for n in reply]
        if counts[4]:
            self.set_aside += counts[4]
            log.error(
                "%d parked webhook write(s) failed to apply: set aside in %s",
                counts[4],
                keys.inbox_failed(),
            )
        return counts

    def _dated(self, events: list[Event]) -> list[Event]:
        """Echoes carry their send's statistics day (the script has no time zone)."""
        return [self._dated_echo(e) if e.kind == "echo" else e for e in events]

    def _dated_echo(self, event: Event) -> Event:
        day = day_of(event.ts, self.tz)
        return event.with_fields(day=day, score=day_score(day))


class UnmatchedOptin(TypedDict):
    """An opt-in whose ref we could not trust (`Inbound.unmatched`)."""

    recipient: str
    ref: str
    source: str  # see EVENT_FIELDS
    at_ms: int


class Inbound:
    """Apply webhook events."""

    def __init__(self, redis: Redis, clock_skew_ms: int, tz: ZoneInfo) -> None:
        self.redis = redis
        self.apply = ApplyEvents(redis, clock_skew_ms, tz)
        self.drainer = Drainer(self.drain_inbox)
        self._shared = SharedWrites(self.apply.with_parked, park=self._park)

    def apply_shared(self, events: list[Event], kinds: dict[str, int] | None = None) -> None:
        """Record a webhook's events (its path): applied at once when this process has no
        other webhook being written, else parked with the others waiting and applied within
        DRAIN_DELAY_S (see SharedWrites). Raises what the write raised."""
        if events or kinds:
            self._shared.write(events, kinds or {})

    def requeue_set_aside(self) -> int:
        """Park again, after the others, every write set aside as failed (once the fault that
        failed them is fixed: bot/reapply_webhooks.py); returns how many. Applying them twice
        is harmless: every event is idempotent."""
        failed = keys.inbox_failed()

        def requeue(pipe: Pipeline) -> int:  # again if a write is set aside meanwhile
            writes = pipe.lrange(failed, 0, -1)
            if writes:
                pipe.multi()
                pipe.rpush(keys.inbox(), *writes)
                pipe.delete(failed)
            return len(writes)

        return optimistic(self.redis, failed, requeue, "the writes set aside")[0]

    def drain_inbox(self) -> None:
        """Apply every parked write (the Drainer, and the periodic task for writes a stopped
        process had parked)."""
        while self.apply.drain():
            pass

    def _park(self, events: list[Event], kinds: dict[str, int]) -> None:
        """Park a write; wake this process's drainer if the inbox was empty, or now and then
        (a process that was to apply the inbox may have stopped)."""
        parked = self.apply.park(events, kinds)
        if parked == 1 or parked % WAKE_EVERY_PARKED == 0:
            self.drainer.wake()

    def unmatched(self, pid: str, limit: int = 100) -> list[UnmatchedOptin]:
        """Newest unmatched opt-ins of a profile."""
        rows = scored(self.redis.zrevrange(keys.unmatched(pid), 0, limit - 1, withscores=True))
        result: list[UnmatchedOptin] = []
        for member, score in rows:
            rcpt, ref, source = member.split("\x1f")
            result.append({"recipient": rcpt, "ref": ref, "source": source, "at_ms": int(score)})
        return result

    def last_seen(self, pid: str, rcpt: str) -> int | None:
        """Last inbound interaction with the Page (epoch ms), None if never."""
        value = self.redis.hget(keys.seen(pid), rcpt)
        return int(value) if value else None

    def last_seen_many(self, pid: str, rcpts: list[str]) -> dict[str, int]:
        """Last inbound interaction of each recipient that has one."""
        if not rcpts:
            return {}
        values = self.redis.hmget(keys.seen(pid), rcpts)
        return {r: int(v) for r, v in zip(rcpts, values, strict=True) if v}

    def contact_of(self, pid: str, rcpt: str) -> str | None:
        return text(self.redis.hget(keys.recipients(pid), rcpt))


class _Caller:
    """One thread's events waiting in SharedWrites."""

    __slots__ = ("events", "kinds", "done", "error", "leads")

    def __init__(self, events: list[Event], kinds: dict[str, int]):
        self.events, self.kinds = events, kinds
        self.done: threading.Event | None = None  # made only for a caller that has to wait
        self.error: BaseException | None = None
        self.leads = False  # woken to make the next write, not because its own is done


class SharedWrites:
    """Group commit for the webhook: threads that call while a write is in flight wait, and the
    next write carries all of them, made by the first of them (no extra thread or hop).

    Each call costs a round trip (~35 us of client CPU and ~30 us of Redis CPU here, beside
    the script's own work), so under a burst a gunicorn worker's threads share them; a lone
    caller writes at once. bench/webhook_ingest.py measures it. A shared write that fails
    on a script error is made again per caller, so one bad webhook cannot fail the others
    (the script is idempotent); a connection error fails them all (Redis is down: 503).

    With `park`, a small write made in a crowd (callers waited for it, or this process parked
    one within DRAIN_DELAY_S) is parked instead: one plain RPUSH, no script, applied a moment
    later together with what every process parked meanwhile. A webhook that comes alone is
    applied at once, so its effects are there when it is answered."""

    def __init__(
        self,
        apply: Callable[[list[Event], dict[str, int]], object],
        park: Callable[[list[Event], dict[str, int]], object] | None = None,
    ) -> None:
        self._apply, self._park = apply, park
        self._lock = threading.Lock()
        self._waiting: list[_Caller] = []
        self._writing = False
        self._pid = os.getpid()
        self._parked_at = 0.0

    @property
    def waiting(self) -> int:
        """Callers waiting for a write (the one in flight not counted)."""
        return len(self._waiting)

    def write(self, events: list[Event], kinds: dict[str, int]) -> None:
        caller = _Caller(events, kinds)
        with self._lock:
            if self._pid != os.getpid():  # a forked child inherits no writer thread
                self._waiting, self._writing, self._pid = [], False, os.getpid()
            self._waiting.append(caller)
            leads = not self._writing
            self._writing = True
            if not leads:
                caller.done = threading.Event()
        if caller.done is not None:  # made above exactly when another caller leads
            caller.done.wait()
            leads = caller.leads
        if leads:
            self._write_next()
        if caller.error is not None:
            raise caller.error

    def _write_next(self) -> None:
        """Write the oldest waiting callers, then hand the next write to the first left waiting."""
        with self._lock:
            batch: list[_Caller] = []
            size = 0
            while self._waiting and (
                not batch or size + len(self._waiting[0].events) <= EVENTS_PER_SHARED_CALL
            ):
                batch.append(self._waiting.pop(0))
                size += len(batch[-1].events)
        try:
            self._write(batch)
        finally:
            with self._lock:
                successor = self._waiting[0] if self._waiting else None
                self._writing = successor is not None
                if successor is not None:
                    successor.leads = True
            for caller in batch:
                if caller.done is not None:
                    caller.done.set()
            if successor is not None:
                assert successor.done is not None  # queued behind a write: it waits
                successor.done.set()

    def _write(self, batch: list[_Caller]) -> None:
        events = [event for caller in batch for event in caller.events]
        park = self._park if self._parks(batch, events) else None
        if park is None and len(batch) == 1:
            self._write_one(batch[0])
            return
        kinds: Counter[str] = Counter()
        for caller in batch:
            kinds.update(caller.kinds)
        try:
            (park or self._apply)(events, kinds)
        except ResponseError:
            for caller in batch:
                self._write_one(caller)
        except BaseException as exc:  # noqa: BLE001 - every caller of the write learns it failed
            for caller in batch:
                caller.error = exc

    def _parks(self, batch: list[_Caller], events: list[Event]) -> bool:
        """Whether to park this write: a small one, in a crowd (callers waited for it, or this
        process parked a write within DRAIN_DELAY_S). A lone webhook is applied at once."""
        if self._park is None or len(events) >= PARK_BELOW_EVENTS:
            return False
        now = time.monotonic()
        if len(batch) == 1 and now - self._parked_at >= DRAIN_DELAY_S:
            return False
        self._parked_at = now
        return True

    def _write_one(self, caller: _Caller) -> None:
        try:
            self._apply(caller.events, caller.kinds)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's own thread
            caller.error = exc


class Drainer:
    """Applies parked writes: a thread of this process, started by the first `wake`, that
    waits DRAIN_DELAY_S after being woken, so that one call carries what every process parked
    meanwhile, then applies the inbox (`drain`, Inbound.drain_inbox). A drain that fails
    (Redis away) is tried again every DRAIN_RETRY_S until one succeeds; the periodic task
    applies what a stopped process left."""

    def __init__(self, drain: Callable[[], object], delay_s: float = DRAIN_DELAY_S) -> None:
        self._drain, self._delay_s = drain, delay_s
        self._lock = threading.Lock()
        self._woken = threading.Event()
        self._pid: int | None = None  # the process whose thread runs: none runs in a fork

    def wake(self) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._woken = threading.Event()
                    threading.Thread(target=self._run, name="inbox-drainer", daemon=True).start()
                    atexit.register(self._drain_all)  # a process stopping applies what it parked
                    self._pid = os.getpid()
        self._woken.set()

    def _run(self) -> None:
        woken, failing = self._woken, False
        while True:
            woken.wait()
            time.sleep(self._delay_s)  # gather: what is parked meanwhile rides on the same call
            woken.clear()
            error = self._drain_all()
            if error is None:
                if failing:
                    log.warning("parked webhook writes are applied again")
                failing = False
                continue
            if not failing:  # once per outage, not every retry
                log.warning(
                    "parked webhook writes not applied yet (%s: %s); trying again every %s s",
                    type(error).__name__,
                    error,
                    DRAIN_RETRY_S,
                )
            failing = True
            time.sleep(DRAIN_RETRY_S)
            woken.set()

    def _drain_all(self) -> Exception | None:
        """Apply the inbox; what stopped it, if anything did."""
        try:
            self._drain()
        except Exception as exc:  # noqa: BLE001 - Redis away, mostly: the thread must live on
            return exc
        return None
