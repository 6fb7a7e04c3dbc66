"""Who is signed in, what they may see, and CSRF tokens for every form.

The session is Flask's signed cookie (HttpOnly, SameSite=Lax, Secure outside sandbox mode).
It holds who you are, never a token: Page tokens of a Facebook login wait in Redis, encrypted.
"""

from __future__ import annotations

import hmac
import secrets
from typing import NotRequired, TypedDict

from flask import abort, request, session

from bot import policy
from storage import get_storage
from storage.profiles import Profile

OPERATOR = "operator"
OWNER = "owner"


class SessionUser(TypedDict):
    """Who is signed in: the operator, or a Page owner."""

    kind: str  # OPERATOR or OWNER
    name: str
    id: NotRequired[str]  # an owner's app-scoped Facebook id


def current_user() -> SessionUser | None:
    return session.get("user")


def signed_in_user() -> SessionUser:
    """The user of a page that needs one (require_sign_in_and_csrf sent anyone else away)."""
    user = current_user()
    if user is None:
        abort(401)
    return user


def sign_in(user: SessionUser) -> None:
    """Start a fresh session (a new CSRF token too: no fixation from before sign-in)."""
    session.clear()
    session.permanent = True
    session["user"] = user
    session["csrf"] = secrets.token_urlsafe(32)


def sign_out() -> None:
    session.clear()


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf() -> None:
    """Every form POST carries the session's token (constant-time comparison)."""
    sent = request.form.get("csrf_token", "")
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(
            400,
            description="This form has expired or did not come from this site. "
            "Reload the page and try again.",
        )


def manageable_page_ids(user: SessionUser) -> set[str] | None:
    """Pages whose profiles the user may see and manage (None: all, for the operator)."""
    if user["kind"] == OPERATOR:
        return None
    record = get_storage().users.get(user["id"])
    pages = record["pages"] if record else []
    return {p["id"] for p in pages if policy.can_connect(p.get("tasks"))}


def visible_profiles(user: SessionUser) -> list[Profile]:
    allowed = manageable_page_ids(user)
    return [p for p in get_storage().profiles.list() if allowed is None or p.page_id in allowed]


def visible_profile_or_404(user: SessionUser, profile_id: str) -> Profile:
    """The profile if it exists and the user may manage it; 404 otherwise (no hint it exists)."""
    profile = get_storage().profiles.get(profile_id) if profile_id.isdigit() else None
    allowed = manageable_page_ids(user)
    if profile is None or (allowed is not None and profile.page_id not in allowed):
        abort(404, description="No such profile.")
    return profile
