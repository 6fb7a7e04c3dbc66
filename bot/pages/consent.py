"""Consent from the profile page: a contact's history with the profile (linked from every
drill-down row), withdrawal by the operator, and the whole ledger as CSV (bot/consent.py)."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for

from bot import consent
from bot.csv_export import csv_response
from bot.pages import bp
from bot.pages import session as auth
from bot.validation import ID
from storage import get_storage

SOURCE_TEXTS = {
    "plugin": "Send to Messenger button",
    "checkbox": "checkbox on a form",
    "m.me": "m.me link",
    "postback": "Get Started from an m.me link",
    "api": "the platform (API)",
    "operator": "withdrawn on this page",
    "messenger_stop": "the person stopped messages in Messenger",
    "data_deletion": "Facebook data deletion",
    "deauthorize": "the person removed the app on Facebook",
    "unreachable": "Facebook says the person cannot be reached",
}


@bp.get("/profiles/<profile_id>/contacts/<contact_id>/consent")
def contact_consent(profile_id: str, contact_id: str):
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id)
    store = get_storage()
    fields = store.contacts.get(contact_id) if ID.fullmatch(contact_id) else None
    if fields is None:
        abort(404)
    events = store.consent.history(profile.id, contact_id)
    return render_template(
        "pages/consent.html",
        profile=profile,
        contact_id=contact_id,
        state=consent.state_of(events, fields.get(profile.optin_field)),
        events=events,
        source_texts=SOURCE_TEXTS,
    )


@bp.post("/profiles/<profile_id>/contacts/<contact_id>/opt-out")
def withdraw_consent(profile_id: str, contact_id: str):
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id, confirm=True)
    if not ID.fullmatch(contact_id):
        abort(404)
    answer = consent.withdraw(get_storage(), contact_id, profile.id, source="operator")
    flash(
        "Consent withdrawn: this contact gets no Messenger message from this profile until they "
        "opt in again."
        if answer["withdrawn"]
        else "This contact had already withdrawn consent.",
        "info",
    )
    return redirect(url_for("pages.contact_consent", profile_id=profile.id, contact_id=contact_id))


@bp.get("/profiles/<profile_id>/consent.csv")
def consent_csv(profile_id: str):
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id)
    rows = consent.csv_rows(get_storage(), profile.id)
    return csv_response(f"messenger-{profile.id}-consent.csv", consent.CSV_HEADER, rows)
