"""Messages Facebook accepted, and those still awaiting delivery/read receipts.

Keys: p:{pid}:await (recipient -> packed entries "mid US day US sent-row index US sent_ms US state",
entries separated by RS; state s = sent, d = delivered) plus the day counters and rows of
storage/stats.py. Receipts (storage/inbound.py) consume the awaiting entries, which is what
makes a receipt count once however often Facebook repeats it.
"""

from __future__ import annotations

from typing import TypedDict
from zoneinfo import ZoneInfo

from redis import Redis
from redis.client import Pipeline

from storage import keys, scripts
from storage.redis_types import text
from storage.stats import day_of, day_score

US, RS = "\x1f", "\x1e"


def expects_receipts(rcpt: str) -> bool:
    """Facebook sends no receipts (nor echoes) for sends to a checkbox user_ref."""
    return not rcpt.startswith("user_ref:")


class AwaitingMessage(TypedDict):
    """A sent message still awaiting a receipt."""

    message_id: str
    day: str  # the stats day it counts on
    row: int  # its index in that day's sent rows
    sent_ms: int
    delivered: bool  # delivered, awaiting only its read receipt


class Messages:
    """Record sent messages and inspect what awaits receipts."""

    def __init__(self, redis: Redis, tz: ZoneInfo) -> None:
        self.redis = redis
        self.tz = tz
        self._record_sent = scripts.register(redis, "record_sent")
        self._age = scripts.register(redis, "age_receipts")

    def record_sent(
        self,
        pid: str,
        contact: str,
        rcpt: str,
        message_id: str,
        sent_ms: int,
        pipeline: Pipeline | None = None,
    ) -> None:
        """Count a message Facebook accepted and keep it awaiting receipts when they can come."""
        day = day_of(sent_ms, self.tz)
        self._record_sent(
            args=[
                pid,
                rcpt,
                message_id,
                day,
                day_score(day),
                contact,
                sent_ms,
                "1" if expects_receipts(rcpt) else "0",
            ],
            client=pipeline,
        )

    def stop_awaiting(self, pid: str, sent_before_ms: int, page: int = 500) -> tuple[int, int]:
        """Messages sent before `sent_before_ms` stop awaiting receipts; the undelivered ones
        count as "no receipt" on their send day. Returns (undelivered, dropped)."""
        undelivered = dropped = 0
        cursor = 0
        while True:
            cursor, found = self.redis.hscan(keys.awaiting(pid), cursor, count=page)
            if found:
                counted = self._age(args=[pid, sent_before_ms, *found])
                undelivered, dropped = undelivered + int(counted[0]), dropped + int(counted[1])
            if cursor == 0:
                return undelivered, dropped

    def awaiting(self, pid: str, rcpt: str) -> list[AwaitingMessage]:
        """Messages to one recipient still awaiting a delivery or read receipt."""
        packed = text(self.redis.hget(keys.awaiting(pid), rcpt))
        if not packed:
            return []
        entries: list[AwaitingMessage] = []
        for entry in packed.split(RS):
            mid, day, index, sent_ms, state = entry.split(US)
            entries.append(
                {
                    "message_id": mid,
                    "day": day,
                    "row": int(index),
                    "sent_ms": int(sent_ms),
                    "delivered": state == "d",
                }
            )
        return entries
