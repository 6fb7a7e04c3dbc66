"""Per-profile, per-day statistics: counters and the rows behind each number.

Keys: p:{pid}:days, p:{pid}:day:{day}, p:{pid}:day:{day}:{kind}. Days are calendar days in
STATS_TIMEZONE; a message counts on the day it was sent, and so do its delivery and read.
Pages read these counters; they never scan messages.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import NotRequired, TypedDict
from zoneinfo import ZoneInfo

from redis import Redis

from storage import keys
from storage.redis_types import members, text_map, texts

KINDS = ("sent", "delivered", "read", "warning", "failed")
# Upper bounds (s) of the time-to-delivery histogram kept per profile-day (fields dl_<bound>,
# and dl_inf): 1 minute, 1 hour and 1 day are bounds, so those counts are exact.
DELIVERY_BUCKETS_S = (
    1,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
    21600,
    43200,
    86400,
    172800,
    604800,
)
RECEIPTS = ("delivered", "read")
NOT_SENT = ("warning", "failed")
US = "\x1f"


class StatRow(TypedDict):
    """One contact behind a number (`Stats.rows`)."""

    at_ms: int  # when it was sent, refused or received
    contact_id: str
    message_id: str  # "" unless sent (or a receipt of a sent message)
    reason_code: str  # warning and failed rows
    detail: str
    sent_ms: NotRequired[int]  # delivered and read rows: when the message was sent


# A receipt whose sent row is gone: it still counts, naming no contact.
_NO_SENT_ROW: StatRow = {
    "at_ms": 0,
    "contact_id": "",
    "message_id": "",
    "reason_code": "",
    "detail": "",
}


def day_of(ms: int, tz: ZoneInfo) -> str:
    """The calendar day (YYYY-MM-DD) of an epoch-ms instant in the stats time zone."""
    return _day_of_minute(ms // 60_000, tz)


@lru_cache(maxsize=4096)
def _day_of_minute(minute: int, tz: ZoneInfo) -> str:
    # Zone offsets are whole minutes, so every instant of a minute has the same day; the cache
    # spares each recorded outcome a timezone conversion.
    return datetime.fromtimestamp(minute * 60, UTC).astimezone(tz).strftime("%Y-%m-%d")


def day_score(day: str) -> int:
    return int(day.replace("-", ""))


class Stats:
    """Read the per-day counters and rows."""

    def __init__(self, redis: Redis, tz: ZoneInfo) -> None:
        self.redis = redis
        self.tz = tz

    def day(self, pid: str, day: str) -> dict[str, int]:
        """Counters of one day: sent, delivered, read, warning, failed and <kind>:<reason>."""
        raw = text_map(self.redis.hgetall(keys.day_counters(pid, day)))
        counts = dict.fromkeys(KINDS, 0)
        counts.update({k: int(v) for k, v in raw.items()})
        return counts

    def days(self, pid: str, first: str, last: str) -> list[tuple[str, dict[str, int]]]:
        """(day, counters) for every day with statistics between first and last, oldest first."""
        days = members(
            self.redis.zrangebyscore(keys.stat_days(pid), day_score(first), day_score(last))
        )
        pipe = self.redis.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(keys.day_counters(pid, day))
        result = []
        for day, raw in zip(days, pipe.execute(), strict=True):
            counts = dict.fromkeys(KINDS, 0)
            counts.update({k: int(v) for k, v in raw.items()})
            result.append((day, counts))
        return result

    def trim_rows(self, pid: str, keep_days: int, today: str) -> int:
        """Drop the per-contact rows of days older than `keep_days` (counters stay). Returns days
        trimmed."""
        cutoff = _cutoff(today, keep_days)
        done_until = int(self.redis.get(keys.rows_trimmed_until(pid)) or 0)
        days = members(self.redis.zrangebyscore(keys.stat_days(pid), done_until + 1, cutoff))
        for day in days:
            self.redis.unlink(*self._row_keys(pid, day))
        self.redis.set(keys.rows_trimmed_until(pid), cutoff)
        return len(days)

    def trim_days(self, pid: str, keep_days: int, today: str) -> int:
        """Forget days older than `keep_days` altogether: counters, rows, the day itself.
        Returns days forgotten."""
        days = members(
            self.redis.zrangebyscore(keys.stat_days(pid), "-inf", _cutoff(today, keep_days))
        )
        for day in days:
            self.redis.unlink(keys.day_counters(pid, day), *self._row_keys(pid, day))
            self.redis.zrem(keys.stat_days(pid), day)  # after its keys: a crash leaves it listed
        return len(days)

    def _row_keys(self, pid: str, day: str) -> list[str]:
        """Every row list a day may have: one per kind, and per kind and reason counted."""
        counters = texts(self.redis.hkeys(keys.day_counters(pid, day)))
        kinds = set(KINDS) | {name for name in counters if ":" in name}
        return [keys.day_rows(pid, day, kind) for kind in kinds]

    def rows(
        self,
        pid: str,
        day: str,
        kind: str,
        start: int = 0,
        count: int = 100,
        reason: str | None = None,
    ) -> list[StatRow]:
        """The contacts behind one number (optionally one reason), in the order recorded."""
        list_kind = f"{kind}:{reason}" if reason and kind in NOT_SENT else kind
        raw = texts(self.redis.lrange(keys.day_rows(pid, day, list_kind), start, start + count - 1))
        if kind in RECEIPTS:
            return self._receipt_rows(pid, day, raw)
        return [_row(kind, line) for line in raw]

    def row_count(self, pid: str, day: str, kind: str, reason: str | None = None) -> int:
        list_kind = f"{kind}:{reason}" if reason and kind in NOT_SENT else kind
        return int(self.redis.llen(keys.day_rows(pid, day, list_kind)))

    def _receipt_rows(self, pid: str, day: str, raw: list[str]) -> list[StatRow]:
        """Delivered/read rows point at the sent row: fetch those in one round trip."""
        pairs = [line.split(US) for line in raw]
        pipe = self.redis.pipeline(transaction=False)
        for _, index in pairs:
            pipe.lindex(keys.day_rows(pid, day, "sent"), int(index))
        rows: list[StatRow] = []
        for (at_ms, _), sent in zip(pairs, pipe.execute(), strict=True):
            row = _row("sent", sent) if sent else _NO_SENT_ROW
            rows.append({**row, "at_ms": int(at_ms), "sent_ms": row["at_ms"]})
        return rows


def _row(kind: str, line: str) -> StatRow:
    parts = line.split(US)
    if kind == "sent":
        at_ms, contact, message_id = (parts + ["", ""])[:3]
        return {
            "at_ms": int(at_ms),
            "contact_id": contact,
            "message_id": message_id,
            "reason_code": "",
            "detail": "",
        }
    at_ms, contact, reason, detail = (parts + ["", "", ""])[:4]
    return {
        "at_ms": int(at_ms),
        "contact_id": contact,
        "message_id": "",
        "reason_code": reason,
        "detail": detail,
    }


def _cutoff(today: str, keep_days: int) -> int:
    """The YYYYMMDD score of the last day older than `keep_days` before `today`."""
    return day_score((date.fromisoformat(today) - timedelta(days=keep_days)).isoformat())
