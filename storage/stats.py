"""Per-profile, per-day statistics: counters and the rows behind each number.

Keys: p:{pid}:days, p:{pid}:day:{day}, p:{pid}:day:{day}:{kind}. Days are calendar days in
STATS_TIMEZONE; a message counts on the day it was sent, and so do its delivery and read.
Pages read these counters; they never scan messages.
"""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from storage import keys

KINDS = ("sent", "delivered", "read", "warning", "failed")
US = "\x1f"


def day_of(ms: int, tz: ZoneInfo) -> str:
    """The calendar day (YYYY-MM-DD) of an epoch-ms instant in the stats time zone."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).astimezone(tz).strftime("%Y-%m-%d")


def day_score(day: str) -> int:
    return int(day.replace("-", ""))


class Stats:
    """Read the per-day counters and rows."""

    def __init__(self, redis, tz: ZoneInfo):
        self.redis = redis
        self.tz = tz

    def day(self, pid: str, day: str) -> dict[str, int]:
        """Counters of one day: sent, delivered, read, warning, failed and <kind>:<reason>."""
        raw = self.redis.hgetall(keys.day_counters(pid, day))
        counts = {kind: 0 for kind in KINDS}
        counts.update({k: int(v) for k, v in raw.items()})
        return counts

    def days(self, pid: str, first: str, last: str) -> list[tuple[str, dict[str, int]]]:
        """(day, counters) for every day with statistics between first and last, oldest first."""
        days = self.redis.zrangebyscore(keys.stat_days(pid), day_score(first), day_score(last))
        pipe = self.redis.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(keys.day_counters(pid, day))
        result = []
        for day, raw in zip(days, pipe.execute()):
            counts = {kind: 0 for kind in KINDS}
            counts.update({k: int(v) for k, v in raw.items()})
            result.append((day, counts))
        return result

    def rows(self, pid: str, day: str, kind: str, start: int = 0, count: int = 100) -> list[dict]:
        """The contacts behind one number, in the order they were recorded."""
        raw = self.redis.lrange(keys.day_rows(pid, day, kind), start, start + count - 1)
        rows = []
        for line in raw:
            at_ms, contact, message_id, reason, detail = (line.split(US) + [""])[:5]
            rows.append({"at_ms": int(at_ms), "contact_id": contact, "message_id": message_id,
                         "reason_code": reason, "detail": detail})
        return rows
