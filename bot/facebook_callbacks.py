"""Facebook's app callbacks: deauthorize and data deletion (signed requests, form POSTs).

Deauthorize: the person who connected Pages removed our app; their Page tokens stop working,
so those profiles become "disconnected" — never deleted (the product's rule). If the person is
also a contact on our Pages, a job withdraws their consent (jobs/privacy.py).
Data deletion: answer at once with the status URL and confirmation code Facebook shows the
person; a job (jobs/privacy.py) deletes what we hold about them, matching their app-scoped id
to their PSIDs on our Pages through Facebook's ID matching API.
"""

from __future__ import annotations

import logging
import secrets
import time

from flask import Blueprint, current_app, render_template, request, url_for
from rq import Retry

from bot import tasks
from bot.errors import ApiError
from bot.signed_request import parse_signed_request
from storage import get_storage

log = logging.getLogger(__name__)
bp = Blueprint("facebook", __name__, url_prefix="/facebook")
DELETION_RETRY = Retry(max=8, interval=[60, 300, 900, 1800, 3600, 3600, 3600, 3600])


def _signed_user_id() -> str:
    """The app-scoped user id of a valid signed_request; 400 (ApiError) otherwise."""
    payload = parse_signed_request(
        request.form.get("signed_request"), current_app.config["SETTINGS"].fb_app_secret
    )
    user_id = payload.get("user_id") if payload else None
    if not isinstance(user_id, (str, int)) or not str(user_id):
        raise ApiError(400, "invalid_signed_request", "signed_request missing or not valid")
    return str(user_id)


@bp.post("/deauthorize")
def deauthorize():
    user_id = _signed_user_id()
    store = get_storage()
    profiles = store.profiles.connected_by_user(user_id)
    for profile in profiles:
        store.profiles.set_health(
            profile.id,
            "disconnected",
            "The person who connected the Page removed the app from Facebook.",
        )
    # The person may also be a contact on our Pages: their consent goes (Facebook's ID matching
    # finds their PSIDs, so it is a job).
    tasks.enqueue(
        tasks.WITHDRAW_CONSENT_OF_USER,
        user_id,
        queue_name="maintenance",
        retry=DELETION_RETRY,
        result_ttl=3600,
        failure_ttl=7 * 86400,
    )
    log.info("deauthorized by a Facebook user: %d profiles disconnected", len(profiles))
    return {"ok": True, "profiles_disconnected": len(profiles)}


@bp.post("/data-deletion")
def data_deletion():
    user_id = _signed_user_id()
    code = secrets.token_hex(10)
    get_storage().users.record_deletion(
        code, {"status": "in progress", "requested_at": int(time.time())}
    )
    tasks.enqueue(
        tasks.DELETE_USER_DATA,
        user_id,
        code,
        queue_name="maintenance",
        job_id=f"data-deletion-{code}",
        retry=DELETION_RETRY,  # a contact a run is still sending to is erased on a later try
        result_ttl=86400,
        failure_ttl=30 * 86400,
    )
    public = current_app.config["SETTINGS"].public_url
    path = url_for("facebook.deletion_status", code=code)
    log.info("data deletion request %s queued", code)
    return {
        "url": public + path
        if public
        else url_for("facebook.deletion_status", code=code, _external=True),
        "confirmation_code": code,
    }


@bp.get("/data-deletion/<code>")
def deletion_status(code: str):
    result = get_storage().users.deletion(code) if code.isalnum() and len(code) <= 64 else None
    return render_template(
        "pages/deletion_status.html", code=code, result=result
    ), 200 if result else 404
