"""What the statistics pages, their CSV and the JSON API show, built from the day counters.

Never scans messages: a period of N days costs N hash reads, whatever the volume. Honest
accounting on every row: sent = delivered + awaiting receipt (+ sent to checkbox opt-ins,
which get no receipts); read never exceeds delivered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TypedDict

from bot.reasons import REASONS, Reason
from storage import Storage
from storage.stats import DELIVERY_BUCKETS_S

FILTER_KINDS = ("all", "sent", "delivered", "read", "warning", "failed")
LIST_KINDS = FILTER_KINDS[1:]  # the contacts behind one number: one kind of it
REASON_KINDS = ("warning", "failed")  # the kinds whose lists filter by reason
MAX_DAYS = 366
DEFAULT_DAYS = 30
DATE_NAMES = {"from": "start date", "to": "end date"}


@dataclass(frozen=True)
class Filters:
    first: date
    last: date
    kind: str = "all"

    def query(self, **changes: str) -> dict[str, str]:
        """The filters as URL query arguments (so a view can be bookmarked)."""
        values = {
            "from": self.first.isoformat(),
            "to": self.last.isoformat(),
            "kind": self.kind,
            **changes,
        }
        return {k: v for k, v in values.items() if v and not (k == "kind" and v == "all")}


def today(store: Storage) -> date:
    return datetime.now(store.tz).date()


def parse_filters(store: Storage, args: Mapping[str, str]) -> tuple[Filters, list[str]]:
    """Filters from query arguments; bad values fall back to defaults with a message each."""
    problems: list[str] = []
    last = _date(args.get("to"), today(store), "to", problems)
    first = _date(args.get("from"), last - timedelta(days=DEFAULT_DAYS - 1), "from", problems)
    kind = args.get("kind") or "all"
    if kind not in FILTER_KINDS:
        problems.append(f"Unknown kind “{kind[:30]}”: showing all kinds.")
        kind = "all"
    if first > last:
        problems.append("The start date is after the end date: they were swapped.")
        first, last = last, first
    if (last - first).days >= MAX_DAYS:
        problems.append(
            f"At most {MAX_DAYS} days at once: showing the last {MAX_DAYS} days of the period."
        )
        first = last - timedelta(days=MAX_DAYS - 1)
    return Filters(first, last, kind), problems


def is_day(text: str) -> bool:
    """A date as the keys write it (2026-11-25), not another ISO form (20261125, 2026-W48-3)."""
    try:
        return date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def list_reason_ok(kind: str, reason: str | None) -> bool:
    """A list's reason filter: none, or a reason code of warnings or failures."""
    return not reason or (reason in REASONS and kind in REASON_KINDS)


def not_a_date(text: str) -> str:
    """The one message for a date we cannot read (the stats page, its lists and the API)."""
    shown = text if len(text) <= 30 else text[:30] + "…"
    return f"“{shown}” is not a date like 2026-11-25."


def _date(text: str | None, default: date, name: str, problems: list[str]) -> date:
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        problems.append(
            f"{not_a_date(text)} The {DATE_NAMES[name]} is {default.isoformat()} instead."
        )
        return default


@dataclass
class DayRow:
    date: str
    sent: int
    delivered: int
    read: int
    warning: int
    failed: int
    no_receipts: int
    reasons: dict[str, int] = field(default_factory=dict)  # "warning:no_optin" -> n
    recovered: int = 0  # of the failed: sent again by a recovery (counted on its own day)
    unconfirmed: int = 0  # sends whose answer was lost, until Facebook's echo or the deadline
    latency: dict[str, int] = field(default_factory=dict)  # time-to-delivery histogram: dl_* -> n

    @property
    def delivery_latency(self) -> DeliveryLatency:
        return delivery_latency(self.latency)

    @property
    def awaiting(self) -> int:
        """Sent, but no delivery receipt yet (and one can still come)."""
        return max(0, self.sent - self.delivered - self.no_receipts)

    @property
    def not_sent(self) -> int:
        return self.warning + self.failed

    def count(self, kind: str) -> int:
        value: int = getattr(self, kind)  # kind is one of the counters (LIST_KINDS)
        return value


def day_rows(store: Storage, profile_id: str, filters: Filters) -> list[DayRow]:
    """One row per date with statistics in the period, newest first, filtered by kind."""
    rows = []
    for day, counts in store.stats.days(
        profile_id, filters.first.isoformat(), filters.last.isoformat()
    ):
        row = DayRow(
            date=day,
            sent=counts["sent"],
            delivered=counts["delivered"],
            read=counts["read"],
            warning=counts["warning"],
            failed=counts["failed"],
            no_receipts=counts.get("no_receipts", 0),
            reasons={k: v for k, v in counts.items() if ":" in k and v},
            recovered=counts.get("recovered", 0),
            unconfirmed=counts.get("unconfirmed", 0),
            latency={k: v for k, v in counts.items() if k.startswith("dl_") and v},
        )
        if filters.kind == "all" or row.count(filters.kind):
            rows.append(row)
    return rows[::-1]


@dataclass(frozen=True)
class Problem:
    kind: str  # warning / failed
    code: str
    count: int
    reason: Reason


def problems(rows: list[DayRow]) -> list[Problem]:
    """Why contacts were not sent, over the rows: reason, count, what to do; biggest first."""
    totals: dict[str, int] = {}
    for row in rows:
        for key, count in row.reasons.items():
            totals[key] = totals.get(key, 0) + count
    found = []
    for key, count in totals.items():
        kind, code = key.split(":", 1)
        reason = REASONS.get(code, Reason(kind, code, ""))
        found.append(Problem(kind, code, count, reason))
    return sorted(found, key=lambda p: (-p.count, p.code))


def last_week(store: Storage, profile_id: str) -> tuple[Filters, list[DayRow]]:
    end = today(store)
    filters = Filters(end - timedelta(days=6), end)
    return filters, day_rows(store, profile_id, filters)


COUNTED = (
    "sent",
    "delivered",
    "read",
    "warning",
    "failed",
    "no_receipts",
    "recovered",
    "unconfirmed",
)


def totals(rows: list[DayRow]) -> DayRow:
    total = DayRow("total", 0, 0, 0, 0, 0, 0)
    for row in rows:
        for name in COUNTED:
            setattr(total, name, getattr(total, name) + getattr(row, name))
        for key, count in row.reasons.items():
            total.reasons[key] = total.reasons.get(key, 0) + count
        for key, count in row.latency.items():
            total.latency[key] = total.latency.get(key, 0) + count
    return total


class DeliveryLatency(TypedDict):
    """Time from our send to the delivery receipt's watermark, over a row's delivered messages:
    median and 90th percentile (interpolated within the histogram's bucket), and how many were
    delivered within a minute, within an hour (after the first minute), within a day, later."""

    p50_s: float | None
    p90_s: float | None
    within_1m: int
    within_1h: int
    within_1d: int
    later: int


_BOUNDS = [(f"dl_{b}", float(b)) for b in DELIVERY_BUCKETS_S] + [("dl_inf", float("inf"))]


def delivery_latency(histogram: dict[str, int]) -> DeliveryLatency:
    counts = [(bound, histogram.get(field, 0)) for field, bound in _BOUNDS]
    return {
        "p50_s": _quantile(counts, 0.5),
        "p90_s": _quantile(counts, 0.9),
        "within_1m": sum(n for bound, n in counts if bound <= 60),
        "within_1h": sum(n for bound, n in counts if 60 < bound <= 3600),
        "within_1d": sum(n for bound, n in counts if 3600 < bound <= 86400),
        "later": sum(n for bound, n in counts if bound > 86400),
    }


def _quantile(counts: list[tuple[float, int]], q: float) -> float | None:
    """The q-quantile of a histogram, linear within the bucket it falls in (as Prometheus'
    histogram_quantile); the last bucket has no upper bound, so its lower bound is the answer."""
    total = sum(n for _, n in counts)
    if not total:
        return None
    rank, seen, lower = q * total, 0, 0.0
    for upper, n in counts:
        if n and seen + n >= rank:
            if upper == float("inf"):
                return lower
            return round(lower + (upper - lower) * (rank - seen) / n, 1)
        seen, lower = seen + n, upper
    return lower


class DayJson(TypedDict):
    """A row as the JSON API answers it (the totals row has no date)."""

    date: str | None
    sent: int
    delivered: int
    read: int
    awaiting_receipt: int
    no_receipts: int
    warning: int
    failed: int
    recovered: int  # of the failed, sent again by a recovery: that send counts on its own day
    unconfirmed: int  # sends whose answer was lost, not settled yet (sent or failed later)
    delivery_latency: DeliveryLatency
    reasons: dict[str, int]  # reason code -> n


def day_json(row: DayRow) -> DayJson:
    return {
        "date": row.date,
        "sent": row.sent,
        "delivered": row.delivered,
        "read": row.read,
        "awaiting_receipt": row.awaiting,
        "no_receipts": row.no_receipts,
        "warning": row.warning,
        "failed": row.failed,
        "recovered": row.recovered,
        "unconfirmed": row.unconfirmed,
        "delivery_latency": row.delivery_latency,
        "reasons": {k.split(":", 1)[1]: v for k, v in row.reasons.items()},
    }
