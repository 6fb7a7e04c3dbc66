"""Messages Facebook accepted, and those still awaiting delivery/read receipts.

Keys: p:{pid}:await (recipient -> packed entries "mid US day US contact US sent_ms US state",
entries separated by RS; state s = sent, d = delivered) plus the day counters and rows of
storage/stats.py. Receipts (storage/inbound.py) consume the awaiting entries, which is what
makes a receipt count once however often Facebook repeats it.
"""
from __future__ import annotations

from zoneinfo import ZoneInfo

from storage import keys, scripts
from storage.stats import day_of, day_score

US, RS = "\x1f", "\x1e"


class Messages:
    """Record sent messages and inspect what awaits receipts."""

    def __init__(self, redis, tz: ZoneInfo):
        self.redis = redis
        self.tz = tz
        self._record_sent = scripts.register(redis, "record_sent")

    def record_sent(self, pid: str, contact: str, rcpt: str, message_id: str, sent_ms: int,
                    pipeline=None) -> None:
        """Count a message Facebook accepted and keep it awaiting receipts when they can come."""
        day = day_of(sent_ms, self.tz)
        # Facebook sends no receipts for sends to a checkbox user_ref.
        expects_receipts = "0" if rcpt.startswith("user_ref:") else "1"
        self._record_sent(
            keys=[keys.awaiting(pid), keys.day_counters(pid, day), keys.day_rows(pid, day, "sent"),
                  keys.stat_days(pid)],
            args=[rcpt, message_id, day, contact, sent_ms, day_score(day), expects_receipts],
            client=pipeline)

    def awaiting(self, pid: str, rcpt: str) -> list[dict]:
        """Messages to one recipient still awaiting a delivery or read receipt."""
        packed = self.redis.hget(keys.awaiting(pid), rcpt)
        if not packed:
            return []
        entries = []
        for entry in packed.split(RS):
            mid, day, contact, sent_ms, state = entry.split(US)
            entries.append({"message_id": mid, "day": day, "contact_id": contact,
                            "sent_ms": int(sent_ms), "delivered": state == "d"})
        return entries
