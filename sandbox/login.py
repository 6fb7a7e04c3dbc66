"""Facebook Login: the OAuth dialog, code exchange, /me/accounts, /me/permissions, debug_token.

Shapes follow messenger-facts.md §7 and §10. The dialog is a small HTML page listing the
simulator's users as buttons; a browser test clicks `#login-as-<user id>` or `#login-cancel`,
a test without a browser posts the form fields itself or sets `POST /_sandbox/login/auto`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from flask import (
    Blueprint,
    Response,
    jsonify,
    redirect,
    render_template_string,
    request,
)

from sandbox import tokens, users
from sandbox.errors import GraphError
from sandbox.graph import authorise, params, runtime, token
from sandbox.state import State

bp = Blueprint("login", __name__)
ACCOUNT_FIELDS = ("id", "name", "access_token", "category", "tasks")
DEFAULT_ACCOUNT_FIELDS = "access_token,category,name,id,tasks"
DENIED = {
    "error": "access_denied",
    "error_code": "200",
    "error_description": "Permissions error",
    "error_reason": "user_denied",
}
FORWARDED = ("client_id", "redirect_uri", "state", "response_type", "scope", "config_id")
# Flask autoescapes string templates, so user names and URLs are safe in text and attributes.
DIALOG = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sandbox Facebook — Log in</title></head>
<body>
<main id="sandbox-login" data-app-id="{{ app_id }}">
<h1>Sandbox Facebook — log in as …</h1>
{% if error %}
<p id="login-error" role="alert">{{ error }}</p>
{% else %}
<p>Sandbox app asks for:
<span id="login-scopes">{{ scopes|join(", ") or "public_profile" }}</span></p>
<form id="login-form" method="post" action="{{ action }}">
{% for name, value in hidden %}<input type="hidden" name="{{ name }}" value="{{ value }}">
{% endfor %}
{% if people %}<ul id="login-users">
{% for user in people %}<li class="login-user" data-user-id="{{ user.id }}">
<button type="submit" id="login-as-{{ user.id }}" name="user_id" value="{{ user.id }}"
 data-user-id="{{ user.id }}">Log in as {{ user.name }}</button>
<ul class="login-pages">{% for page in user.pages %}
<li data-page-id="{{ page.id }}">{{ page.name }}: {{ page.tasks|join(", ") }}</li>
{% endfor %}</ul>
</li>
{% endfor %}</ul>
{% else %}<p id="login-no-users">No sandbox users yet: create one with POST /_sandbox/users.</p>
{% endif %}<button type="submit" id="login-cancel" name="cancel" value="1">Cancel</button>
</form>
{% endif %}
</main>
</body>
</html>
"""


@bp.errorhandler(GraphError)
def graph_error(err: GraphError) -> Response:
    """Render a refusal as Facebook's error JSON."""
    return err.response()


# -- the OAuth dialog ------------------------------------------------------------------------
@bp.route("/<version:version>/dialog/oauth", methods=["GET", "POST"])
@bp.route("/dialog/oauth", methods=["GET", "POST"], defaults={"version": None})
def dialog(version: str | None) -> Response | tuple[str, int] | str:
    """Show the log-in page, or redirect back with a code (user chosen) or an error (cancel)."""
    state = runtime().state
    values = {k: request.values[k] for k in FORWARDED if k in request.values}
    error = dialog_error(state, values)
    if error:
        return render_dialog(state, values, error), 400
    if request.method == "POST" and request.form.get("cancel"):
        return redirect(back_to(values, DENIED), 302)
    chosen = request.form.get("user_id") if request.method == "POST" else state.auto_login
    if chosen is None:
        return render_dialog(state, values)
    if chosen not in state.users:
        return render_dialog(state, values, f"Unknown sandbox user {chosen}."), 400
    scopes = requested_scopes(values)
    users.grant(state, chosen, scopes)
    code = tokens.issue_code(state, chosen, values["client_id"], values["redirect_uri"], scopes)
    return redirect(back_to(values, {"code": code}), 302)


def dialog_error(state: State, values: dict[str, str]) -> str | None:
    """Return why the dialog cannot go on (shown on the page, never redirected), or None."""
    if values.get("client_id") != state.cfg("app_id"):
        return "Invalid App ID: The provided app ID does not look like a valid app ID."
    target = urlsplit(values.get("redirect_uri", ""))
    if target.scheme not in ("http", "https") or not target.netloc:
        return (
            "URL blocked: This redirect failed because the redirect URI is not an absolute "
            "http(s) URL."
        )
    if values.get("response_type", "code") != "code":
        return "The sandbox supports response_type=code only."
    return None


def requested_scopes(values: dict[str, str]) -> list[str]:
    """Return the asked scopes; a Login for Business config_id stands for the usual six."""
    raw = values.get("scope")
    if raw is None and values.get("config_id"):
        return list(users.DEFAULT_SCOPES)
    scopes = [s.strip() for s in (raw or "").replace(" ", ",").split(",") if s.strip()]
    return list(dict.fromkeys(scopes))


def back_to(values: dict[str, str], answer: dict[str, str]) -> str:
    """Return redirect_uri with the answer (and state, when given) added to its query."""
    if "state" in values:
        answer = {**answer, "state": values["state"]}
    parts = urlsplit(values["redirect_uri"])
    query = "&".join(q for q in (parts.query, urlencode(answer)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def render_dialog(state: State, values: dict[str, str], error: str | None = None) -> str:
    """Render the dialog page (the user list, or an error)."""
    with state.lock:
        people = [users.public_user(state, u) for u in state.users.values()]
    return render_template_string(
        DIALOG,
        app_id=state.cfg("app_id"),
        error=error,
        scopes=requested_scopes(values),
        action=request.path,
        hidden=list(values.items()),
        people=people,
    )


# -- tokens ----------------------------------------------------------------------------------
@bp.route("/<version:version>/oauth/access_token", methods=["GET", "POST"])
@bp.route("/oauth/access_token", methods=["GET", "POST"], defaults={"version": None})
def access_token(version: str | None) -> Response:
    """Exchange a code (or a user token, or the app credentials) for a token."""
    state, values = runtime().state, params()
    if values.get("client_id") != state.cfg("app_id"):
        raise GraphError(101, "Error validating application. Invalid application ID.")
    if values.get("client_secret") != state.cfg("app_secret"):
        # Code 1 is usually "unknown, retry"; here it is a permanent configuration error.
        raise GraphError(1, "Error validating client secret.", transient=False)
    grant_type = values.get("grant_type")
    if grant_type == "client_credentials":
        app_token = f"{state.cfg('app_id')}|{state.cfg('app_secret')}"
        return jsonify(access_token=app_token, token_type="bearer")
    if grant_type == "fb_exchange_token":
        user = tokens.user_for_token(state, values.get("fb_exchange_token"))
        issued = tokens.issue_user_token(state, user["id"], long_lived=True)
    else:
        grant = tokens.redeem_code(state, values.get("code"), values.get("redirect_uri"))
        issued = tokens.issue_user_token(state, grant["user_id"], long_lived=False)
    return jsonify(access_token=issued, token_type="bearer", expires_in=tokens.TOKEN_TTL_S)


@bp.route("/<version:version>/debug_token")
@bp.route("/debug_token", defaults={"version": None})
def debug_token(version: str | None) -> Response:
    """Describe input_token; the caller needs the app token (app_id|app_secret)."""
    state, values = runtime().state, params()
    caller, input_token = token(values), values.get("input_token")
    if not caller:
        raise GraphError(104, "An access token is required to request this resource.")
    # A working token may inspect itself; anything else needs the app token.
    if caller != f"{state.cfg('app_id')}|{state.cfg('app_secret')}" and not (
        caller == input_token
        and tokens.problem(state, caller) is None
        and (caller in state.tokens or tokens.is_user_token(state, caller))
    ):
        raise GraphError(190, "Invalid OAuth access token signature.")
    if not input_token:
        raise GraphError(100, "(#100) The parameter input_token is required")
    return jsonify(data=tokens.debug(state, input_token))


# -- edges of the user -----------------------------------------------------------------------
def token_user(values: dict[str, Any], edge: str) -> dict[str, Any]:
    """Return the user of the call's token; a Page token has no such edge."""
    state, given = runtime().state, token(values)
    if not tokens.is_user_token(state, given) and state.page_for_token(given)[0] is not None:
        raise GraphError(
            100, f"(#100) Tried accessing nonexisting field ({edge}) on node type (Page)"
        )
    return tokens.user_for_token(state, given)


@bp.get("/<version:version>/me/accounts")
def list_accounts(version: str) -> Response:
    """List the user's Pages with their tokens and tasks, a page of `limit` at a time."""
    values = params()
    user = token_user(values, "accounts")
    fields = [
        f.strip()
        for f in str(values.get("fields") or DEFAULT_ACCOUNT_FIELDS).split(",")
        if f.strip()
    ]
    for field in fields:
        if field not in ACCOUNT_FIELDS:
            raise GraphError(
                100, f"(#100) Tried accessing nonexisting field ({field}) on node type (Page)"
            )
    try:
        limit = max(1, min(int(values.get("limit", 25)), 100))
    except ValueError as exc:
        raise GraphError(100, "(#100) Param limit must be a number") from exc
    listed = users.accounts(runtime().state, user["id"])
    start = after_index(listed, values.get("after"))
    chunk = listed[start : start + limit]
    body: dict[str, Any] = {"data": [{f: row[f] for f in fields} for row in chunk]}
    if chunk:
        body["paging"] = {
            "cursors": {"before": cursor(chunk[0]["id"]), "after": cursor(chunk[-1]["id"])}
        }
        if start + limit < len(listed):
            query = {
                **request.args.to_dict(),
                "limit": str(limit),
                "after": cursor(chunk[-1]["id"]),
            }
            body["paging"]["next"] = f"{request.base_url}?{urlencode(query)}"
    return jsonify(body)


def cursor(page_id: str) -> str:
    """Return the opaque paging cursor of a row."""
    return base64.urlsafe_b64encode(page_id.encode()).decode().rstrip("=")


def after_index(listed: list[dict[str, Any]], after: str | None) -> int:
    """Return where the page after `after` starts (past the end for an unknown cursor)."""
    if not after:
        return 0
    try:
        page_id = base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return len(listed)
    ids = [row["id"] for row in listed]
    return ids.index(page_id) + 1 if page_id in ids else len(listed)


@bp.get("/<version:version>/<user_id>/ids_for_pages")
def ids_for_pages(version: str, user_id: str) -> Response:
    """ID matching: the PSIDs an app-scoped user has on a Page (asked with that Page's token)."""
    values = params()
    page = authorise(str(values.get("page", "")), values, "ids_for_pages")
    state = runtime().state
    with state.lock:
        matches = [
            p["psid"] for p in state.people[page["id"]].values() if p.get("user_id") == user_id
        ]
    return jsonify(
        data=[{"id": psid, "page": {"id": page["id"], "name": page["name"]}} for psid in matches]
    )


@bp.get("/<version:version>/me/permissions")
def list_permissions(version: str) -> Response:
    """List the permissions the user granted (or declined) the app."""
    user = token_user(params(), "permissions")
    with runtime().state.lock:
        return jsonify(data=users.permissions(user))
