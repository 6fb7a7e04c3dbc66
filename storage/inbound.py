"""What Facebook tells us, applied in one atomic round trip per webhook.

bot/events.py turns a webhook body into `Event`s; `Inbound.apply` hands them all to one Lua
script (storage/lua/apply_events.lua), which finds each Page's profile and updates opt-ins,
interaction times, unmatched opt-ins and receipts. Every kind is idempotent.
Keys touched: page, contact, p:{pid}:recipients/seen/unmatched/marketing/await/day...
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo
from typing import NamedTuple

from storage import keys, scripts
from storage.stats import day_of, day_score

UNMATCHED_KEPT = 1000  # per profile, newest first; the operator reviews them
KINDS = frozenset({"seen", "optin", "unmatched", "marketing", "link", "delivery", "read", "echo", "block", "unblock"})


@dataclass(slots=True)
class Event:
    """One normalised event. `rcpt` is a PSID or "user_ref:<ref>"; times are epoch ms."""

    kind: str
    page: str
    rcpt: str = ""
    ts: int = 0
    profile: str = ""       # optin: the profile the ref was signed for
    contact: str = ""       # optin: the contact the ref names
    ref: str = ""           # unmatched: the ref as received
    source: str = ""        # unmatched: optin / referral / postback / checkbox
    opens_window: bool = False
    wm: int = 0             # delivery/read watermark
    mids: tuple[str, ...] = field(default_factory=tuple)
    user_ref: str = ""      # link: the checkbox user_ref a PSID now replaces
    status: str = ""        # marketing opt-in status
    expiry: str = ""
    reason: str = ""        # block
    mid: str = ""           # echo: the message id Facebook gave our send
    run: str = ""           # echo: the run and contact our metadata named
    day: str = ""           # echo: the stats day of the send (filled in by Inbound.apply)
    score: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")

    def to_lua(self) -> dict:
        # Plain attribute reads, not dataclasses.asdict(): asdict deep-copies every field and was
        # most of the web workers' CPU on 100-event webhooks (bench/webhook_ingest.py).
        data = {"k": self.kind, "ts": self.ts}
        for name, default in _LUA_DEFAULTS:
            value = getattr(self, name)
            if value != default:
                data[name] = value
        return data


# (field, default) of what to_lua sends when set; mids' default is the empty tuple.
_LUA_DEFAULTS = tuple((name, () if name == "mids" else f.default) for name, f in Event.__dataclass_fields__.items()
                      if name not in ("kind", "ts"))


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
        self._apply = scripts.register(redis, "apply_events")
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
        return replace(event, day=day, score=day_score(day))

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
