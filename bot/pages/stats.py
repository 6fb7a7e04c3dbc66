"""Usage statistics pages: the per-date table with filters, drill-down lists, CSV downloads.

Numbers come from the day counters (bot/stats_view.py); each links to the contacts behind it.
"""

from __future__ import annotations

from datetime import datetime

from flask import abort, render_template, request, url_for

from bot import stats_view
from bot.csv_export import csv_response
from bot.pages import bp
from bot.pages import session as auth
from bot.reasons import reason_text
from storage import get_storage
from storage.stats import StatRow

PAGE_SIZE = 50
MAX_PAGE = 10**9  # Redis takes 64-bit offsets: a larger page number would be a 500
CSV_CHUNK = 1000
KIND_TITLES = {
    "sent": "Messages sent",
    "delivered": "Messages delivered",
    "read": "Messages read",
    "warning": "Contacts not sent (warnings)",
    "failed": "Contacts not sent (failed)",
}
RECOGNISE_FIELDS = ("FIRSTNAME", "LASTNAME", "FULLNAME", "EMAIL", "PHONE")


@bp.get("/profiles/<profile_id>/stats")
def stats(profile_id: str):
    profile, filters, notices, rows = _day_table(profile_id)
    return render_template(
        "pages/stats.html",
        profile=profile,
        filters=filters,
        notices=notices,
        rows=rows,
        total=stats_view.totals(rows),
        kinds=stats_view.FILTER_KINDS,
        reason_text=reason_text,
        timezone=str(get_storage().tz),
    )


@bp.get("/profiles/<profile_id>/stats.csv")
def stats_csv(profile_id: str):
    profile, filters, _notices, rows = _day_table(profile_id)
    header = [
        "date",
        "sent",
        "delivered",
        "read",
        "awaiting_receipt",
        "no_receipts",
        "warning",
        "failed",
        "recovered",
        "unconfirmed",
        "delivery_p50_s",
        "delivery_p90_s",
        "delivered_within_1m",
        "delivered_within_1h",
        "delivered_within_1d",
        "delivered_later",
        "reasons",
    ]
    lines = (
        [
            r.date,
            r.sent,
            r.delivered,
            r.read,
            r.awaiting,
            r.no_receipts,
            r.warning,
            r.failed,
            r.recovered,
            r.unconfirmed,
            *_latency_cells(r.delivery_latency),
            "; ".join(f"{k}={v}" for k, v in sorted(r.reasons.items())),
        ]
        for r in rows
    )
    return csv_response(f"messenger-{profile.id}-{filters.first}-{filters.last}.csv", header, lines)


def _latency_cells(latency: stats_view.DeliveryLatency) -> list[object]:
    return [
        "" if latency["p50_s"] is None else latency["p50_s"],
        "" if latency["p90_s"] is None else latency["p90_s"],
        latency["within_1m"],
        latency["within_1h"],
        latency["within_1d"],
        latency["later"],
    ]


def _day_table(profile_id: str):
    """The per-date table of a profile the user may see (404 otherwise), under the URL's filters."""
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id)
    store = get_storage()
    filters, notices = stats_view.parse_filters(store, request.args)
    return profile, filters, notices, stats_view.day_rows(store, profile.id, filters)


def _list_args(day: str, kind: str) -> tuple[str | None, str | None]:
    """(reason filter, what is wrong with it); a bad date or kind is a 400: nothing to list."""
    if not stats_view.is_day(day):
        abort(400, description=stats_view.not_a_date(day))
    if kind not in stats_view.LIST_KINDS:
        abort(
            400,
            description=f"There is no list of “{kind[:30]}”: "
            f"choose one of {', '.join(stats_view.LIST_KINDS)}.",
        )
    reason = request.args.get("reason") or None
    if reason and not stats_view.list_reason_ok(kind, reason):  # no reason is always fine
        return None, f"Unknown reason “{reason[:40]}” for {KIND_TITLES[kind].lower()}."
    return reason, None


class ShownRow(StatRow):
    """A row as the pages show it: with the contact's fields that help recognise them."""

    recognise: dict[str, str]


def _with_contact_data(rows: list[StatRow]) -> list[ShownRow]:
    fields = get_storage().contacts.get_many(
        list({r["contact_id"] for r in rows if r["contact_id"]})
    )
    shown: list[ShownRow] = []
    for row in rows:
        data = fields.get(row["contact_id"], {})
        recognise = {name: data[name] for name in RECOGNISE_FIELDS if data.get(name)}
        shown.append({**row, "recognise": recognise})
    return shown


def _when(ms: int) -> str:
    """A time in the stats time zone, to the second."""
    return (
        datetime.fromtimestamp(ms / 1000, get_storage().tz).strftime("%Y-%m-%d %H:%M:%S")
        if ms
        else ""
    )


@bp.get("/profiles/<profile_id>/stats/<day>/<kind>")
def stats_contacts(profile_id: str, day: str, kind: str):
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id)
    reason, bad_reason = _list_args(day, kind)
    notices = [f"{bad_reason} Showing every reason."] if bad_reason else []
    try:
        page = min(max(1, int(request.args.get("page", "1"))), MAX_PAGE)
    except ValueError:
        page = 1
        notices.append("The page number must be a whole number: showing the first page.")
    store = get_storage()
    total = store.stats.row_count(profile.id, day, kind, reason)
    rows = _with_contact_data(
        store.stats.rows(profile.id, day, kind, (page - 1) * PAGE_SIZE, PAGE_SIZE, reason)
    )
    return render_template(
        "pages/stats_contacts.html",
        profile=profile,
        day=day,
        kind=kind,
        reason=reason,
        title=KIND_TITLES[kind],
        rows=rows,
        total=total,
        page=page,
        page_size=PAGE_SIZE,
        notices=notices,
        when=_when,
        reason_text=reason_text,
        timezone=str(store.tz),
    )


@bp.get("/profiles/<profile_id>/stats/<day>/<kind>.csv")
def stats_contacts_csv(profile_id: str, day: str, kind: str):
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id)
    reason, bad_reason = _list_args(day, kind)
    if bad_reason:
        abort(400, description=bad_reason)
    store = get_storage()

    def lines():  # runs while the response streams, still inside the request (stream_with_context)
        start = 0
        while True:
            chunk = _with_contact_data(
                store.stats.rows(profile.id, day, kind, start, CSV_CHUNK, reason)
            )
            for row in chunk:
                yield [
                    row["contact_id"],
                    *(row["recognise"].get(name, "") for name in RECOGNISE_FIELDS),
                    _when(row["at_ms"]),
                    row["reason_code"],
                    reason_text(row["reason_code"]) if row["reason_code"] else "",
                    row["message_id"],
                    row["detail"],
                ]
            if len(chunk) < CSV_CHUNK:
                return
            start += CSV_CHUNK

    header = [
        "contact_id",
        *(name.lower() for name in RECOGNISE_FIELDS),
        "time",
        "reason_code",
        "reason",
        "message_id",
        "detail",
    ]
    suffix = f"-{reason}" if reason else ""
    return csv_response(f"messenger-{profile.id}-{day}-{kind}{suffix}.csv", header, lines())


def list_url(profile_id: str, day: str, kind: str, reason: str | None = None) -> str:
    return url_for(
        "pages.stats_contacts",
        profile_id=profile_id,
        day=day,
        kind=kind,
        reason=reason or None,  # None: no reason in the URL
    )


@bp.app_context_processor
def stats_helpers():
    return {"list_url": list_url}
