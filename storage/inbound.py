"""What Facebook tells us, applied in one atomic round trip per webhook.

bot/events.py turns a webhook body into `Event`s; `Inbound.apply` hands them all to one Lua
script (storage/lua/apply_events.lua), which finds each Page's profile and updates opt-ins,
interaction times, unmatched opt-ins and receipts. Every kind is idempotent.
Keys touched: page, contact, p:{pid}:recipients/seen/unmatched/marketing/await/day...
"""
from __future__ import annotations

import json
from zoneinfo import ZoneInfo
from typing import NamedTuple

from storage import keys, scripts
from storage.stats import day_of, day_score

UNMATCHED_KEPT = 1000  # per profile, newest first; the operator reviews them
KINDS = frozenset({"seen", "optin", "unmatched", "marketing", "link", "delivery", "read", "echo", "block", "unblock"})


# What an event may carry besides kind, page, recipient and time.
EVENT_FIELDS = {
    "profile": "optin: the profile the ref was signed for",
    "contact": "optin: the contact the ref names",
    "ref": "unmatched: the ref as received",
    "source": "unmatched: optin / referral / postback / checkbox / other_profile",
    "opens_window": "unmatched: whether it opens the 24-hour window",
    "wm": "delivery/read: the watermark (epoch ms)",
    "mids": "delivery: message ids (tuple)",
    "user_ref": "link: the checkbox user_ref a PSID now replaces",
    "status": "marketing: opt-in status", "expiry": "marketing: token expiry",
    "reason": "block: Facebook's reason",
    "mid": "echo: the message id Facebook gave our send",
    "run": "echo: the run our metadata named (and `contact` the contact)",
    "day": "echo: the stats day of the send (filled in by Inbound.apply)", "score": "echo: that day as YYYYMMDD",
}


_FIELD_NAMES = frozenset(EVENT_FIELDS)


class Event:
    """One normalised event for the Lua script: kind, Page, recipient (a PSID or
    "user_ref:<ref>"), time (epoch ms), and what that kind needs (EVENT_FIELDS).

    Only the fields given are kept, so encoding a batch of them costs little: a 100-event
    webhook makes 100 of these (bench/webhook_ingest.py)."""

    __slots__ = ("kind", "page", "rcpt", "ts", "fields")

    def __init__(self, kind: str, page: str, rcpt: str = "", ts: int = 0, **fields):
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        if not _FIELD_NAMES.issuperset(fields):
            raise TypeError(f"unknown event fields: {', '.join(sorted(set(fields) - _FIELD_NAMES))}")
        self.kind, self.page, self.rcpt, self.ts = kind, page, rcpt, ts
        self.fields = {k: v for k, v in fields.items() if v}  # "", 0, (), False, None: not sent

    def __getattr__(self, name: str):
        if name in EVENT_FIELDS:
            return self.fields.get(name, "")
        raise AttributeError(name)

    def __eq__(self, other) -> bool:
        return isinstance(other, Event) and self.to_lua() == other.to_lua()

    def __repr__(self) -> str:
        return f"Event({self.kind!r}, {self.page!r}, {self.rcpt!r}, {self.ts!r}, **{self.fields!r})"

    def with_fields(self, **fields) -> "Event":
        return Event(self.kind, self.page, self.rcpt, self.ts, **{**self.fields, **fields})

    def to_lua(self) -> dict:
        data = {"k": self.kind, "page": self.page, "ts": self.ts, **self.fields}
        if self.rcpt:
            data["rcpt"] = self.rcpt
        return data


class Applied(NamedTuple):
    applied: int
    unknown_page: int
    foreign_ref: int


class Inbound:
    """Apply webhook events."""

    def __init__(self, redis, clock_skew_ms: int, tz: ZoneInfo):
        self.redis = redis
        self.tz = tz
        self.clock_skew_ms = clock_skew_ms
        self._apply = scripts.DirectScript(redis, "apply_events")  # the webhook's one call
        self._forget = scripts.register(redis, "forget_recipient")

    def apply(self, events: list[Event], kinds: dict[str, int] | None = None) -> Applied:
        """Apply all events atomically (one script call); duplicates change nothing.
        `kinds` (webhook event kinds seen) are counted for /metrics in the same call."""
        if not events and not kinds:
            return Applied(0, 0, 0)
        events = [self._dated(e) if e.kind == "echo" else e for e in events]
        payload = json.dumps([e.to_lua() for e in events], separators=(",", ":"))
        counted = json.dumps(dict(kinds or {}), separators=(",", ":"))
        result = self._apply(args=[payload, self.clock_skew_ms, UNMATCHED_KEPT, counted])
        return Applied(*map(int, result))

    def _dated(self, event: Event) -> Event:
        day = day_of(event.ts, self.tz)
        return event.with_fields(day=day, score=day_score(day))

    def unmatched(self, pid: str, limit: int = 100) -> list[dict]:
        """Newest unmatched opt-ins of a profile."""
        rows = self.redis.zrevrange(keys.unmatched(pid), 0, limit - 1, withscores=True)
        result = []
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
        return {r: int(v) for r, v in zip(rcpts, values) if v}

    def forget_recipient(self, pid: str, rcpt: str) -> int:
        """Remove what a profile holds about one person (data deletion); returns records removed."""
        return int(self._forget(args=[pid, rcpt]))

    def contact_of(self, pid: str, rcpt: str) -> str | None:
        return self.redis.hget(keys.recipients(pid), rcpt)
