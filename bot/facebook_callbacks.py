"""Facebook's app callbacks: deauthorize and data deletion (signed requests, form POSTs).

Deauthorize: the person who connected Pages removed our app; their Page tokens stop working,
so those profiles become "disconnected" — never deleted (the product's rule).
Data deletion: delete what we hold about that Facebook user and answer with the status URL and
confirmation code Facebook shows them. `user_id` is the app-scoped id from Facebook Login, not
a PSID: Messenger contacts are not covered by it (MESSENGER.md).
"""
from __future__ import annotations

import logging
import secrets
import time

from flask import Blueprint, current_app, render_template, request, url_for

from bot.signed_request import parse_signed_request
from storage import get_storage

log = logging.getLogger(__name__)
bp = Blueprint("facebook", __name__, url_prefix="/facebook")


def _signed_user_id() -> str | None:
    payload = parse_signed_request(request.form.get("signed_request"), current_app.config["SETTINGS"].fb_app_secret)
    user_id = payload.get("user_id") if payload else None
    return str(user_id) if isinstance(user_id, (str, int)) and str(user_id) else None


@bp.post("/deauthorize")
def deauthorize():
    user_id = _signed_user_id()
    if user_id is None:
        return {"error": {"code": "invalid_signed_request", "message": "signed_request missing or not valid",
                          "details": {}}}, 400
    store = get_storage()
    profiles = store.profiles.connected_by_user(user_id)
    for profile in profiles:
        store.profiles.set_health(profile.id, "disconnected",
                                  "The person who connected the Page removed the app from Facebook.")
    log.info("deauthorized by a Facebook user: %d profiles disconnected", len(profiles))
    return {"ok": True, "profiles_disconnected": len(profiles)}


@bp.post("/data-deletion")
def data_deletion():
    user_id = _signed_user_id()
    if user_id is None:
        return {"error": {"code": "invalid_signed_request", "message": "signed_request missing or not valid",
                          "details": {}}}, 400
    store = get_storage()
    forgot_user = store.users.forget(user_id)
    disconnected = 0
    for profile in store.profiles.connected_by_user(user_id):
        store.profiles.forget_connector(profile.id)  # keep the profile, drop the link to the person
        disconnected += 1
    code = secrets.token_hex(10)
    store.users.record_deletion(code, {"status": "completed", "requested_at": int(time.time()),
                                       "deleted": {"account": forgot_user, "profile_links": disconnected}})
    public = current_app.config["SETTINGS"].public_url
    path = url_for("facebook.deletion_status", code=code)
    log.info("data deletion request %s completed", code)
    return {"url": public + path if public else url_for("facebook.deletion_status", code=code, _external=True),
            "confirmation_code": code}


@bp.get("/data-deletion/<code>")
def deletion_status(code: str):
    result = get_storage().users.deletion(code) if code.isalnum() and len(code) <= 64 else None
    return render_template("pages/deletion_status.html", code=code, result=result), 200 if result else 404
