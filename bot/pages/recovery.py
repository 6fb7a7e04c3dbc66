"""Recovering failed sends from the profile page: pick a start time, see how many contacts would
be sent again, send them, watch the progress (the rules live in bot/recovery.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import abort, flash, redirect, render_template, request, url_for

from bot import recovery
from bot.pages import bp
from bot.pages import session as auth
from storage import get_storage

DEFAULT_HOURS = 24  # the window first offered: outages are usually noticed within a day


@bp.get("/profiles/<profile_id>/recover")
def recover_form(profile_id: str):
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id)
    since = _since(request.args.get("since"))
    interrupted = request.args.get("include_interrupted") == "1"
    count = None
    if since is not None and "count" in request.args:
        count = recovery.count_recoverable(profile.id, since, None, interrupted)
    return render_template(
        "pages/recover.html",
        profile=profile,
        since=(since or datetime.now(UTC) - timedelta(hours=DEFAULT_HOURS)),
        include_interrupted=interrupted,
        count=count,
        bad_since=since is None and bool(request.args.get("since")),
    )


@bp.post("/profiles/<profile_id>/recover")
def recover_start(profile_id: str):
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id, confirm=True)
    since = _since(request.form.get("since"))
    if since is None:
        flash("Choose when the failures started (a date and time in the past, UTC).", "error")
        return redirect(url_for("pages.recover_form", profile_id=profile.id))
    interrupted = request.form.get("include_interrupted") == "1"
    found, _created = recovery.recover(profile.id, since, None, interrupted)
    return redirect(
        url_for("pages.recovery_progress", profile_id=profile.id, recovery_id=found.recovery_id)
    )


@bp.get("/profiles/<profile_id>/recoveries/<recovery_id>")
def recovery_progress(profile_id: str, recovery_id: str):
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id)
    found = get_storage().recoveries.get(recovery_id)
    if found is None or found.profile_id != profile.id:
        abort(404, description="There is no such recovery for this profile.")
    return render_template(
        "pages/recovery.html", profile=profile, status=recovery.status(found), found=found
    )


def _since(text: str | None) -> datetime | None:
    """A `datetime-local` value (read as UTC) in the past, or None."""
    try:
        when = datetime.fromisoformat(text or "").replace(tzinfo=UTC)
    except ValueError:
        return None
    return when if when <= datetime.now(UTC) else None
