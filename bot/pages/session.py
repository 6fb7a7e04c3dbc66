"""Who is signed in, what they may see, and CSRF tokens for every form.

The session is Flask's signed cookie (HttpOnly, SameSite=Lax, Secure outside sandbox mode).
It holds who you are, never a token: Page tokens of a Facebook login wait in Redis, encrypted.

A page owner's roles on Pages are Facebook's answer at sign-in, kept in Redis with their login
token (encrypted) and asked again with it once older than ROLE_RECHECK_SECONDS, so pages read
within the interval cost no Graph call; a change to a profile always asks first (`confirm`).
A role removed or lowered below Moderator loses access at once: 403 naming the Page. A login
Facebook no longer accepts ends the session (the login page says why). While Facebook cannot be
reached the last answer serves one interval more (asked again at most every RETRY_AFTER_MS),
then pages answer 503; a change to a profile is refused at once: it fails closed.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, NotRequired, TypedDict

from flask import abort, current_app, flash, redirect, request, session, url_for

from bot import graph, policy
from bot.crypto import TokenDecryptError
from storage import get_storage
from storage.profiles import Profile
from storage.users import LostPage, User

log = logging.getLogger(__name__)

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
    return _managed(_owner_roles(user)[0])


def visible_profiles(user: SessionUser) -> list[Profile]:
    allowed = manageable_page_ids(user)
    return [p for p in get_storage().profiles.list() if allowed is None or p.page_id in allowed]


def visible_profile_or_404(user: SessionUser, profile_id: str, *, confirm: bool = False) -> Profile:
    """The profile if it exists and the user may manage it; 404 otherwise (no hint it exists),
    403 when Facebook took away the role they had. `confirm` (before a change): an owner's role
    is asked of Facebook now, and the change refused if Facebook cannot be reached."""
    profile = get_storage().profiles.get(profile_id) if profile_id.isdigit() else None
    if profile is None:
        abort(404, description="No such profile.")
    if user["kind"] == OPERATOR:
        return profile
    roles, answered_now = _owner_roles(user)
    if confirm and not answered_now and profile.page_id in _managed(roles):
        fresh = _ask_facebook(user, roles)
        if fresh is None:
            abort(503, description=_unconfirmed(profile))
        roles = fresh
    if profile.page_id not in _managed(roles):
        _refuse(roles, profile)
    return profile


# -- a page owner's roles, as Facebook last said ------------------------------------------------

RETRY_AFTER_MS = 30_000  # Facebook unreachable: one request in this long asks it again
ROLE_FIELDS = "id,name,tasks"  # a re-check needs no Page tokens
LOG_IN_AGAIN = "Please log in with Facebook again to confirm which Pages you manage."
LOGIN_REFUSED = (
    "Facebook no longer accepts your login (it expired, your password changed or the app was "
    "removed). Please log in with Facebook again."
)
ROLES_UNCONFIRMED = (
    "Facebook could not be reached for a while to confirm your roles on your Pages, so your "
    "profiles cannot be shown now. Try again in a few minutes."
)


def remember_pages(
    user_id: str, name: str, pages: Iterable[Mapping[str, Any]], *, login_token: str | None = None
) -> User:
    """Keep Facebook's list of the user's Pages (and the login token to ask again with), noting
    the Pages on which they have just lost a managing role."""
    store = get_storage().users
    before = store.get(user_id)
    lost = _lost(before, pages) if before else []
    for page in lost:
        log.info("user %s no longer manages page %s (role: %s)", user_id, page["id"], page["role"])
    return store.save(user_id, name, pages, lost=lost, login_token=login_token)


def _owner_roles(user: SessionUser) -> tuple[User, bool]:
    """The owner's roles, asked of Facebook again when older than the interval (and whether
    Facebook answered just now)."""
    roles = get_storage().users.get(user["id"])
    if roles is None:  # forgotten (a data deletion request) since they signed in
        _log_in_again(LOG_IN_AGAIN)
    now_ms = int(time.time() * 1000)
    interval_ms = current_app.config["SETTINGS"].role_recheck_seconds * 1000
    age_ms = now_ms - roles["checked_ms"]
    if age_ms < interval_ms:
        return roles, False
    in_grace = age_ms < 2 * interval_ms
    if in_grace and now_ms - roles["failed_ms"] < RETRY_AFTER_MS:
        return roles, False  # Facebook failed a moment ago: do not make every request wait on it
    fresh = _ask_facebook(user, roles)
    if fresh is None and not in_grace:
        abort(503, description=ROLES_UNCONFIRMED)
    return (roles, False) if fresh is None else (fresh, True)


def _ask_facebook(user: SessionUser, roles: User) -> User | None:
    """Facebook's list of the owner's Pages now, kept; None if Facebook cannot be reached."""
    client: graph.GraphClient = current_app.extensions["graph"]
    try:
        pages = client.accounts(_login_token(user), fields=ROLE_FIELDS)
    except (graph.RetryableError, graph.AmbiguousError) as error:
        log.warning("roles of user %s not re-checked: %s", user["id"], error.summary())
        get_storage().users.recheck_failed(user["id"])
        return None
    except graph.GraphError as error:  # 190 and the like: this login is over
        log.info("roles of user %s: Facebook refused the login: %s", user["id"], error.summary())
        _log_in_again(LOGIN_REFUSED)
    return remember_pages(user["id"], roles["name"], pages)


def _login_token(user: SessionUser) -> str:
    try:
        token = get_storage().users.login_token(user["id"])
    except TokenDecryptError:  # its key was retired: a new login keeps it under the newest one
        token = None
    if not token:  # signed in before tokens were kept, or the record was saved without one
        _log_in_again(LOG_IN_AGAIN)
    return token


def _managed(roles: User) -> set[str]:
    return {p["id"] for p in roles["pages"] if policy.can_connect(p.get("tasks"))}


def _lost(before: User, pages: Iterable[Mapping[str, Any]]) -> list[LostPage]:
    """Pages managed before (or lost already) on which Facebook now gives less than Moderator,
    with the role it gives now (a role given back drops the Page from the list)."""
    tasks_now = {str(p["id"]): p.get("tasks") for p in pages}
    managed_now = {pid for pid, tasks in tasks_now.items() if policy.can_connect(tasks)}
    lost: dict[str, LostPage] = {}
    for page_id, name in [
        *((p["id"], p["name"]) for p in before["lost"]),
        *((p["id"], p["name"]) for p in before["pages"] if policy.can_connect(p["tasks"])),
    ]:
        if page_id not in managed_now:
            role = policy.role_from_tasks(tasks_now.get(page_id))
            lost[page_id] = {"id": page_id, "name": name, "role": role}
    return list(lost.values())


def _refuse(roles: User, profile: Profile) -> NoReturn:
    """403 naming the Page if they lost their role on it; 404 if they never had one."""
    lost = next((p for p in roles["lost"] if p["id"] == profile.page_id), None)
    if lost is None:
        abort(404, description="No such profile.")
    page = lost["name"] or profile.page_name or profile.page_id
    if lost["role"] == "none":
        message = (
            f"Facebook says you no longer have a role on the Page “{page}”, so you can no "
            "longer see or manage its profile. One of the Page's admins can give you the "
            "Admin, Editor or Moderator role again."
        )
    else:
        message = (
            f"On Facebook you are now {lost['role']} on the Page “{page}”: seeing or managing "
            "its profile needs the Admin, Editor or Moderator role."
        )
    abort(403, description=message)


def _unconfirmed(profile: Profile) -> str:
    return (
        "Facebook could not be reached to confirm that you still manage the Page "
        f"“{profile.page_name or profile.page_id}”, so nothing was changed. "
        "Try again in a few minutes."
    )


def _log_in_again(message: str) -> NoReturn:
    """End the session and send them to the login page, saying why."""
    sign_out()
    flash(message, "error")
    target = request.full_path.rstrip("?") if request.method == "GET" else None
    abort(redirect(url_for("pages.login", next=target)))
