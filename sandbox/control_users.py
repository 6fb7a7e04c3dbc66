"""Control API for Facebook Login: users, their roles and sessions, auto-login, callbacks."""

from __future__ import annotations

from typing import Any

import requests
from flask import Blueprint, Response, jsonify

from sandbox import events, users
from sandbox.control import ControlError, body, control_error, runtime
from sandbox.webhooks import BAD_SECRET

bp = Blueprint("control_users", __name__, url_prefix="/_sandbox")
bp.register_error_handler(ControlError, control_error)
SIGNATURE_MODES = (None, "bad", "missing")


def live_user(user_id: str) -> dict[str, Any]:
    """Return the user record or answer 404."""
    user = runtime().state.users.get(user_id)
    if user is None:
        raise ControlError(f"unknown user {user_id}", 404)
    return user


@bp.post("/users")
def create_user() -> tuple[Response, int]:
    """Create a user with roles on Pages (new Pages are created); answer ids and tokens."""
    try:
        return jsonify(users.add_user(runtime().state, body())), 201
    except KeyError as exc:
        raise ControlError(str(exc.args[0]), 409) from exc
    except ValueError as exc:
        raise ControlError(str(exc)) from exc


@bp.get("/users")
def list_users() -> Response:
    """List users with their Pages, tasks, grants and whether the app is authorised."""
    state = runtime().state
    with state.lock:
        return jsonify(users=[users.public_user(state, u) for u in state.users.values()])


@bp.get("/users/<user_id>")
def show_user(user_id: str) -> Response:
    """Show one user."""
    return jsonify(users.public_user(runtime().state, live_user(user_id)))


@bp.post("/users/<user_id>/invalidate")
def invalidate_user(user_id: str) -> Response:
    """End the user's sessions (a password change): 190/460, Page tokens got through them too."""
    live_user(user_id)
    pages = bool(body().get("pages", True))
    killed = users.end_sessions(runtime().state, user_id, 460, pages=pages)
    return jsonify(ok=True, pages_invalidated=killed)


@bp.post("/users/<user_id>/pages/<page_id>")
def set_page_tasks(user_id: str, page_id: str) -> Response:
    """Set the user's tasks on a Page (`tasks` or `role`; empty tasks: no role any more)."""
    live_user(user_id)
    data = body()
    if "tasks" not in data and "role" not in data:
        raise ControlError("tasks (a list, empty for no role) or role is required")
    try:
        tasks = users.tasks_of(data)
    except ValueError as exc:
        raise ControlError(str(exc)) from exc
    state = runtime().state
    killed = users.set_tasks(state, user_id, page_id, tasks, data.get("name"))
    return jsonify(
        ok=True, pages_invalidated=killed, user=users.public_user(state, live_user(user_id))
    )


@bp.post("/users/<user_id>/permissions")
def decline_permissions(user_id: str) -> Response:
    """Make the user decline these scopes at login (and revoke them if granted)."""
    live_user(user_id)
    declined = body().get("declined")
    if not isinstance(declined, list):
        raise ControlError("declined must be a list of permission names")
    users.set_declined(runtime().state, user_id, [str(p) for p in declined])
    return jsonify(users.public_user(runtime().state, live_user(user_id)))


@bp.post("/users/<user_id>/remove_app")
def remove_app(user_id: str) -> Response:
    """The user removes the app: tokens answer 190/458, deauthorize callback posted if asked."""
    live_user(user_id)
    url = body().get("deauthorize_url")
    killed = users.end_sessions(runtime().state, user_id, 458)
    callback = post_callback(user_id, url, None) if url else None
    return jsonify(ok=True, pages_invalidated=killed, deauthorize=callback)


@bp.post("/login/auto")
def auto_login() -> Response:
    """Make the OAuth dialog log in as this user at once (null: show the page again)."""
    user_id = body().get("user_id")
    if user_id is not None:
        live_user(str(user_id))
    with runtime().state.lock:
        runtime().state.auto_login = None if user_id is None else str(user_id)
    return jsonify(user_id=runtime().state.auto_login)


@bp.post("/callbacks/<kind>")
def post_login_callback(kind: str) -> Response:
    """POST a signed deauthorize or data-deletion request to a URL; answer its response."""
    if kind not in ("deauthorize", "data_deletion"):
        raise ControlError(f"unknown callback {kind}", 404)
    data = body()
    if not data.get("user_id") or not data.get("url"):
        raise ControlError("user_id and url are required")
    if data.get("signature") not in SIGNATURE_MODES:
        raise ControlError("signature must be bad, missing or absent")
    return jsonify(post_callback(str(data["user_id"]), str(data["url"]), data.get("signature")))


def post_callback(user_id: str, url: str, signature: str | None) -> dict[str, Any]:
    """Sign (or mis-sign) a callback for the user, POST it, and report the target's answer."""
    state = runtime().state
    secret = BAD_SECRET if signature == "bad" else state.cfg("app_secret")
    signed = events.signed_request(events.login_payload(user_id, state.now_ms() // 1000), secret)
    try:
        response = events.post_signed_request(
            url, None if signature == "missing" else signed, float(state.cfg("webhook_timeout_s"))
        )
    except requests.RequestException as exc:
        return {
            "status": None,
            "body": None,
            "signed_request": signed,
            "error": f"{type(exc).__name__}: {exc}",
        }
    try:
        answer: Any = response.json()
    except ValueError:
        answer = response.text
    return {"status": response.status_code, "body": answer, "signed_request": signed}
