"""Profile pages: list, connect a Page (Facebook Login), show with opt-in code, enable,
disable, delete, reauthorise. The rules live in bot/onboarding.py and bot/lifecycle.py; a page
owner's role is confirmed with Facebook before every change (bot/pages/session.py)."""

from __future__ import annotations

from datetime import datetime

from flask import (
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from bot import lifecycle, onboarding, policy, protection, stats_view
from bot.errors import DomainError
from bot.optin_code import generic_ref, optin_html, ref_field
from bot.pages import bp
from bot.pages import session as auth
from bot.pages.chart import bar_chart
from bot.pages.login import dialog_url
from storage import get_storage


@bp.get("/profiles")
def list_profiles():
    profiles = auth.visible_profiles(auth.signed_in_user())
    return render_template("pages/profiles.html", profiles=profiles)


@bp.get("/profiles/new")
def new_profile():
    """Step 1: a name and "Log in to Facebook"; step 2 (after the login): Page and status."""
    login = get_storage().users.login_pages(session.get("login", ""))
    pages = []
    for page in login[1] if login else []:
        role = policy.role_from_tasks(page.get("tasks"))
        pages.append({**page, "role": role, "allowed": role in policy.CONNECT_ROLES})
    return render_template(
        "pages/profile_new.html",
        name=session.get("new_profile_name", ""),
        pages=pages,
        logged_in=login is not None,
    )


@bp.post("/profiles/new")
def start_new_profile():
    name = request.form.get("name", "").strip()
    if not 1 <= len(name) <= 100:
        flash("Give the profile a name (1 to 100 characters).", "error")
        return redirect(url_for("pages.new_profile"))
    session["new_profile_name"] = name
    return redirect(dialog_url("connect"))


@bp.post("/profiles/new/save")
def save_new_profile():
    name = request.form.get("name", "").strip() or session.get("new_profile_name", "")
    status = request.form.get("status", "enabled")
    if status not in ("enabled", "disabled") or not 1 <= len(name) <= 100:
        flash("Choose a name (1 to 100 characters) and a status.", "error")
        return redirect(url_for("pages.new_profile"))
    try:
        profile = onboarding.connect_from_login(
            session.get("login", ""), request.form.get("page_id", ""), name=name, status=status
        )
    except DomainError as refusal:
        flash(refusal.message, "error")
        if refusal.code == "login_expired":
            session.pop("login", None)
        return redirect(url_for("pages.new_profile"))
    session.pop("login", None)
    session.pop("new_profile_name", None)
    flash("The profile is saved. Copy its opt-in code onto your landing page or website.", "info")
    return redirect(url_for("pages.show_profile", profile_id=profile.id))


@bp.get("/profiles/<profile_id>")
def show_profile(profile_id: str):
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id)
    settings = current_app.config["SETTINGS"]
    code = optin_html(
        profile_name=profile.name,
        page_name=profile.page_name,
        page_id=profile.page_id,
        app_id=settings.fb_app_id,
        version=settings.graph_api_version,
        ref=generic_ref(profile.id),
    )
    store = get_storage()
    programs = store.programs.using_profile(profile.id)
    week, rows = stats_view.last_week(store, profile.id)
    # Younger than the week and nothing in it: it never had a message (no need to read older days).
    never_sent = (
        not rows and datetime.fromtimestamp(profile.created_at, store.tz).date() >= week.first
    )
    return render_template(
        "pages/profile.html",
        profile=profile,
        optin_code=code,
        ref_field=ref_field(profile.id),
        programs=programs,
        week=week,
        week_rows=rows,
        week_total=stats_view.totals(rows),
        never_sent=never_sent,
        problems=stats_view.problems(rows),
        chart=bar_chart(rows, week.first, week.last) if rows else "",
        sending=protection.sending_status(profile.id),
        consent_counts=store.consent.counts(profile.id),
    )


@bp.post("/profiles/<profile_id>/resume")
def resume_sending(profile_id: str):
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id, confirm=True)
    if protection.resume(profile.id):
        flash(
            f"Sending is resumed for “{profile.name}”. If Facebook still refuses, it pauses again.",
            "info",
        )
    else:
        flash(f"“{profile.name}” was not paused: it is sending.", "info")
    return redirect(url_for("pages.show_profile", profile_id=profile.id))


@bp.post("/profiles/<profile_id>/status")
def change_status(profile_id: str):
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id, confirm=True)
    status = request.form.get("status")
    if status not in ("enabled", "disabled"):
        abort(400, description="Status must be enabled or disabled.")
    try:
        lifecycle.set_status(profile.id, status)
    except DomainError as refusal:
        flash(refusal.message, "error")
    else:
        flash(f"The profile “{profile.name}” is {status}.", "info")
    return redirect(url_for("pages.show_profile", profile_id=profile.id))


@bp.post("/profiles/<profile_id>/delete")
def delete_profile(profile_id: str):
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id, confirm=True)
    if request.form.get("confirm") != profile.name:
        flash(f"To delete, type the profile's name exactly: “{profile.name}”.", "error")
        return redirect(url_for("pages.show_profile", profile_id=profile.id))
    try:
        lifecycle.delete(profile.id)
    except DomainError as refusal:
        flash(refusal.message, "error")
        return redirect(url_for("pages.show_profile", profile_id=profile.id))
    flash(f"The profile “{profile.name}” and all its statistics are deleted.", "info")
    return redirect(url_for("pages.list_profiles"))


@bp.post("/profiles/<profile_id>/reauthorize")
def reauthorize(profile_id: str):
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id)
    return redirect(dialog_url(f"reauth:{profile.id}"))
