"""Usage statistics of a profile as JSON (the pages of a later issue read the same counters)."""
from __future__ import annotations

from datetime import date, datetime, timedelta

from flask import request

from bot.api import bp
from bot.api.profiles import get_profile_or_404
from bot.errors import ApiError
from storage import get_storage

MAX_DAYS = 366


def today_in(tz) -> date:
    return datetime.now(tz).date()


def _day_arg(name: str, default: date) -> date:
    text = request.args.get(name)
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ApiError(422, "validation_failed", f"{name} must be a date like 2026-11-25",
                       {name: text[:40]}) from None


def split_reasons(counts: dict[str, int]) -> dict:
    """Counters as the API shows them: kinds, plus reasons of warnings and failures."""
    reasons = {k.split(":", 1)[1]: v for k, v in counts.items() if ":" in k}
    return {kind: counts.get(kind, 0) for kind in ("sent", "delivered", "read", "warning", "failed")} | {
        "reasons": reasons}


@bp.get("/profiles/<profile_id>/stats")
def profile_stats(profile_id: str):
    """Per-day counters between `from` and `to` (default: the last 30 days), and delivered in 7 days."""
    profile = get_profile_or_404(profile_id)
    store = get_storage()
    today = today_in(store.tz)
    last = _day_arg("to", today)
    first = _day_arg("from", last - timedelta(days=29))
    if first > last or (last - first).days >= MAX_DAYS:
        raise ApiError(422, "validation_failed", f"from must be on or before to, at most {MAX_DAYS} days apart")
    week = store.stats.days(profile.id, (today - timedelta(days=6)).isoformat(), today.isoformat())
    days = store.stats.days(profile.id, first.isoformat(), last.isoformat())
    return {"profile_id": profile.id, "from": first.isoformat(), "to": last.isoformat(),
            "delivered_last_7_days": sum(counts["delivered"] for _, counts in week),
            "days": [{"date": day, **split_reasons(counts)} for day, counts in days]}
