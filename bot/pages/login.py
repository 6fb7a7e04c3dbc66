"""Sign-in: the operator's password, or Facebook Login for page owners; and the Login callback.

The same Facebook Login serves three purposes, carried in the session with the `state` nonce:
signing in, connecting a new Page (its Pages wait encrypted in Redis until one is chosen), and
reauthorising a profile whose token died.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from urllib.parse import urlencode, urlsplit

from flask import (
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from bot import graph, onboarding, policy
from bot.errors import DomainError
from bot.pages import bp
from bot.pages import session as auth
from storage import get_storage

log = logging.getLogger(__name__)


def _safe_next(target: str | None) -> str:
    """Only redirect within this site after sign-in."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and not urlsplit(target).netloc
    ):
        return target
    return url_for("pages.list_profiles")


@bp.get("/")
def home():
    return redirect(url_for("pages.list_profiles"))


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        password = request.form.get("password", "")
        expected = current_app.config["SETTINGS"].admin_password
        if hmac.compare_digest(password.encode(), expected.encode()):
            auth.sign_in({"kind": auth.OPERATOR, "name": "Operator"})
            return redirect(_safe_next(request.args.get("next")))
        log.warning("operator sign-in refused: wrong password")
        flash("That password is not right.", "error")
        return render_template("pages/login.html", next=request.args.get("next", "")), 401
    return render_template("pages/login.html", next=request.args.get("next", ""))


@bp.post("/logout")
def logout():
    auth.sign_out()
    flash("You are signed out.", "info")
    return redirect(url_for("pages.login"))


@bp.get("/login/facebook")
def login_with_facebook():
    return redirect(dialog_url("signin"))


def dialog_url(purpose: str) -> str:
    """Facebook Login's dialog, with a fresh `state` remembered in the session."""
    settings = current_app.config["SETTINGS"]
    state = secrets.token_urlsafe(24)
    session["oauth"] = {"state": state, "purpose": purpose}
    query = urlencode(
        {
            "client_id": settings.fb_app_id,
            "redirect_uri": callback_url(),
            "state": state,
            "response_type": "code",
            "scope": ",".join(policy.CONNECT_SCOPES),
        }
    )
    return f"{settings.fb_login_url}/{settings.graph_api_version}/dialog/oauth?{query}"


def callback_url() -> str:
    public = current_app.config["SETTINGS"].public_url
    return (
        public + url_for("pages.facebook_callback")
        if public
        else url_for("pages.facebook_callback", _external=True)
    )


@bp.get("/facebook/callback")
def facebook_callback():
    """Where Facebook Login sends the browser back: check state, exchange the code, go on."""
    pending = session.pop("oauth", None) or {}
    state = request.args.get("state", "")
    if not pending or not hmac.compare_digest(state.encode(), pending.get("state", "").encode()):
        return _back(
            "This Facebook login did not start here or has expired; please try again.", pending
        )
    if request.args.get("error"):
        return _back("Facebook login was cancelled.", pending)
    purpose = pending.get("purpose", "")
    if purpose != "signin" and auth.current_user() is None:
        return redirect(url_for("pages.login"))
    try:
        user_id, name, pages, token = _fetch_login(request.args.get("code", ""))
    except graph.GraphError as error:
        log.info("facebook login failed: %s", error.summary())
        return _back(f"Facebook refused the login: {error.message}", pending)
    auth.remember_pages(user_id, name, pages, login_token=token)  # roles are re-checked with it
    if purpose == "signin":
        auth.sign_in({"kind": auth.OWNER, "id": user_id, "name": name})
        return redirect(url_for("pages.list_profiles"))
    nonce = secrets.token_urlsafe(24)
    get_storage().users.start_login(nonce, user_id, pages)
    session["login"] = nonce
    if purpose.startswith("reauth:"):
        return _reauthorise(purpose.split(":", 1)[1], nonce)
    return redirect(url_for("pages.new_profile"))


def _fetch_login(code: str) -> tuple[str, str, list[dict], str]:
    """(user id, name, their Pages with tokens and tasks, the long-lived login token)."""
    client: graph.GraphClient = current_app.extensions["graph"]
    token = client.long_lived(client.exchange_code(code, callback_url()))
    me = client.me(token)
    return str(me.get("id", "")), str(me.get("name", "")), client.accounts(token), token


def _back(message: str, pending: dict):
    flash(message, "error")
    purpose = pending.get("purpose", "")
    if purpose.startswith("reauth:"):
        return redirect(url_for("pages.show_profile", profile_id=purpose.split(":", 1)[1]))
    if purpose == "connect":
        return redirect(url_for("pages.new_profile"))
    return redirect(url_for("pages.login"))


def _reauthorise(profile_id: str, nonce: str):
    """Swap in the token of a fresh login, if this person may still manage the Page."""
    profile = auth.visible_profile_or_404(auth.signed_in_user(), profile_id)
    try:
        onboarding.reauthorise(profile, nonce)
    except DomainError as refusal:
        flash(refusal.message, "error")
    else:
        flash(
            "The profile is reauthorised: its new Page token works. Sends that failed meanwhile "
            "can be sent again: Recover failed sends, below.",
            "info",
        )
    return redirect(url_for("pages.show_profile", profile_id=profile.id))
