"""Usage statistics as JSON: the same counters and rows the pages and CSV show."""

from __future__ import annotations

from datetime import datetime

from flask import request

from bot import stats_view
from bot.api import bp, load_args
from bot.api.profiles import get_profile_or_404
from bot.api.schemas import StatsContactsArgs
from bot.errors import invalid
from bot.reasons import reason_text
from storage import get_storage


@bp.get("/profiles/<profile_id>/stats")
def profile_stats(profile_id: str):
    """Per-day counters (default: the last 30 days), kind filter, and delivered in 7 days."""
    profile = get_profile_or_404(profile_id)
    store = get_storage()
    filters, problems = stats_view.parse_filters(store, request.args)
    if problems:
        raise invalid({}, " ".join(problems))
    rows = stats_view.day_rows(store, profile.id, filters)
    _, week = stats_view.last_week(store, profile.id)
    return {
        "profile_id": profile.id,
        "from": filters.first.isoformat(),
        "to": filters.last.isoformat(),
        "kind": filters.kind,
        "timezone": str(store.tz),
        "delivered_last_7_days": stats_view.totals(week).delivered,
        "totals": stats_view.day_json(stats_view.totals(rows)) | {"date": None},
        "days": [stats_view.day_json(row) for row in rows],
    }


@bp.get("/profiles/<profile_id>/stats/<day>/contacts")
def stats_contacts(profile_id: str, day: str):
    """The contacts behind one number: kind (and reason) on a day, paged with `cursor`."""
    profile = get_profile_or_404(profile_id)
    if not stats_view.is_day(day):
        raise invalid({"fields": {"date": [stats_view.not_a_date(day)]}})
    args = load_args(StatsContactsArgs())
    kind, reason, cursor, limit = args["kind"], args["reason"], args["cursor"], args["limit"]
    store = get_storage()
    total = store.stats.row_count(profile.id, day, kind, reason)
    rows = store.stats.rows(profile.id, day, kind, cursor, limit, reason)
    fields = store.contacts.get_many(list({r["contact_id"] for r in rows if r["contact_id"]}))
    at = lambda ms: datetime.fromtimestamp(ms / 1000, store.tz).isoformat() if ms else None  # noqa: E731
    contacts = [
        {
            "contact_id": r["contact_id"],
            "fields": fields.get(r["contact_id"], {}),
            "at": at(r["at_ms"]),
            "sent_at": at(r.get("sent_ms", 0)),
            "reason_code": r["reason_code"],
            "reason": reason_text(r["reason_code"]) if r["reason_code"] else "",
            "message_id": r["message_id"],
            "detail": r["detail"],
        }
        for r in rows
    ]
    next_cursor = cursor + len(rows) if cursor + len(rows) < total else None
    return {
        "profile_id": profile.id,
        "date": day,
        "kind": kind,
        "reason": reason,
        "total": total,
        "contacts": contacts,
        "next_cursor": None if next_cursor is None else str(next_cursor),
    }
