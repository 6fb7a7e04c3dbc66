"""OAuth codes and user tokens, and the answers Graph gives about any token.

Codes are one-time, bound to the redirect_uri of the dialog and live ten minutes on the
simulator clock. User tokens (`sbx-user-...`, never `EAA...`) live 60 days on that clock, so a
clock offset can expire them (190/463). Every refusal is the Graph error the service would get.
"""

from __future__ import annotations

import secrets
from typing import Any

from sandbox import users
from sandbox.errors import GraphError
from sandbox.state import State

CODE_TTL_MS = 10 * 60 * 1000
TOKEN_TTL_S = 5183944  # what Facebook's code exchange answers in expires_in (~60 days)
DATA_ACCESS_S = 90 * 24 * 3600
UNPARSEABLE = "Invalid OAuth access token - Cannot parse access token"
REDIRECT_MISMATCH = (
    "Error validating verification code. Please make sure your redirect_uri is "
    "identical to the one you used in the OAuth dialog request"
)


def issue_code(
    state: State, user_id: str, client_id: str, redirect_uri: str, scopes: list[str]
) -> str:
    """Return a fresh one-time code for a user who just logged in."""
    code = "sbx-code-" + secrets.token_urlsafe(24)
    with state.lock:
        state.codes[code] = {
            "user_id": user_id,
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scopes": list(scopes),
            "expires_ms": state.now_ms() + CODE_TTL_MS,
            "used": False,
        }
    return code


def redeem_code(state: State, code: str | None, redirect_uri: str | None) -> dict[str, Any]:
    """Use up a code and return its grant, or raise Facebook's refusal."""
    with state.lock:
        grant = state.codes.get(code or "")
        if grant is None:
            raise GraphError(100, "Invalid verification code format.", 36007)
        if grant["used"]:
            raise GraphError(100, "This authorization code has been used.", 36007)
        if state.now_ms() > grant["expires_ms"]:
            raise GraphError(100, "This authorization code has expired.", 36007)
        if redirect_uri != grant["redirect_uri"]:
            # A mismatch does not use the code up: the right redirect_uri still works.
            raise GraphError(100, REDIRECT_MISMATCH, 36008)
        grant["used"] = True
        return dict(grant)


def issue_user_token(state: State, user_id: str, long_lived: bool) -> str:
    """Return a new user token of the user."""
    token = "sbx-user-" + secrets.token_urlsafe(24)
    now = state.now_ms()
    with state.lock:
        state.user_tokens[token] = {
            "user_id": user_id,
            "long_lived": long_lived,
            "issued_ms": now,
            "expires_ms": now + TOKEN_TTL_S * 1000,
            "invalid": None,
        }
    return token


def is_user_token(state: State, token: str | None) -> bool:
    """Tell whether a token is one of the simulator's user tokens (valid or not)."""
    with state.lock:
        return (token or "") in state.user_tokens


def problem(state: State, token: str | None) -> dict[str, Any] | None:
    """Return why a known token no longer works ({"subcode", "message"}), else None."""
    with state.lock:
        record = state.user_tokens.get(token or "")
        if record is not None:
            if record["invalid"] is None and state.now_ms() > record["expires_ms"]:
                return users.reason(state, 463)
            return record["invalid"]
        if (token or "") in state.dead_tokens:
            return dict(state.dead_tokens[token or ""])
        page_id = state.tokens.get(token or "")
        page = state.pages[page_id] if page_id else None
        if page is not None and not page["valid"]:
            return page["invalid"] or users.reason(state, 460)
        return None


def token_error(state: State, token: str | None) -> GraphError:
    """Return the 190 a dead or unknown token gets."""
    why = problem(state, token)
    if why is None:
        return GraphError(190, UNPARSEABLE)
    return GraphError(190, why["message"], why["subcode"])


def user_for_token(state: State, token: str | None) -> dict[str, Any]:
    """Return the user of a working user token, or raise 190."""
    with state.lock:
        record = state.user_tokens.get(token or "")
        if record is None or problem(state, token) is not None:
            raise token_error(state, token)
        return state.users[record["user_id"]]


def page_token_error(state: State, token: str | None) -> GraphError:
    """Return the refusal of a token that is not a working Page token."""
    if is_user_token(state, token) and problem(state, token) is None:
        return GraphError(210, "(#210) A page access token is required to request this resource.")
    return token_error(state, token)


def debug(state: State, token: str) -> dict[str, Any]:
    """Return the `data` of GET /debug_token for any token."""
    with state.lock:
        record = state.user_tokens.get(token)
        if record is not None:
            return _debug_user(state, token, record)
        page_id = state.tokens.get(token) or state.dead_tokens.get(token, {}).get("page_id")
        if page_id is not None:
            return _debug_page(state, token, page_id)
        return {"error": {"code": 190, "message": UNPARSEABLE}, "is_valid": False, "scopes": []}


def _debug_user(state: State, token: str, record: dict[str, Any]) -> dict[str, Any]:
    """Describe a user token."""
    user = state.users[record["user_id"]]
    info = _head(state, "USER")
    info["expires_at"] = record["expires_ms"] // 1000
    return _validity(state, token, info, user)


def _debug_page(state: State, token: str, page_id: str) -> dict[str, Any]:
    """Describe a Page token; its user is the first login that handed it out."""
    page = state.pages[page_id]
    sponsor = page["sponsors"][0] if page["sponsors"] and state.tokens.get(token) else None
    info = _head(state, "PAGE")
    info.update(expires_at=0, profile_id=page_id)
    return _validity(state, token, info, state.users.get(sponsor) if sponsor else None)


def _validity(
    state: State, token: str, info: dict[str, Any], user: dict[str, Any] | None
) -> dict[str, Any]:
    """Add is_valid, error, scopes and user_id to a token description."""
    why = problem(state, token)
    info["is_valid"] = why is None
    if why is not None:
        info["error"] = {"code": 190, "message": why["message"], "subcode": why["subcode"]}
    # A Page token made by the control API has no login behind it: it carries the usual scopes.
    scopes = users.granted_scopes(user) if user else ["public_profile", *users.DEFAULT_SCOPES]
    info["scopes"] = scopes
    targets = list(user["pages"]) if user else [info.get("profile_id")]
    info["granular_scopes"] = [
        {"scope": s, "target_ids": targets} if _per_page(s) else {"scope": s} for s in scopes
    ]
    if user is not None:
        info["user_id"] = user["id"]
    return info


def _per_page(scope: str) -> bool:
    """Tell whether a scope is granted per Page (granular_scopes then lists target_ids)."""
    return scope.startswith("pages_") or scope == "page_utility_messaging"


def _head(state: State, kind: str) -> dict[str, Any]:
    """Start a token description in Graph's field order."""
    # data_access_expires_at: the 90-day data-access window, counted from now.
    return {
        "app_id": state.cfg("app_id"),
        "type": kind,
        "application": "Sandbox app",
        "data_access_expires_at": state.now_ms() // 1000 + DATA_ACCESS_S,
    }
