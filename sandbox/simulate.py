"""Turn a control-API request ("a person opted in", "a receipt arrived") into a payload.

Each builder also applies the event's effect on Facebook's side: user actions open the
24-hour window, a checkbox opt-in registers its user_ref. Echoes, receipts and policy events
change nothing (Meta: they never open the window).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox import events
from sandbox.state import State, random_mid


class EventError(ValueError):
    """A control request that cannot become an event (missing page, psid, ...)."""


Builder = Callable[[State, str, int, int, dict[str, Any]], dict[str, Any]]


def _psid(state: State, page_id: str, fields: dict[str, Any], create: bool = True) -> str:
    """Return the event's PSID; a person who does not exist yet is created."""
    psid = fields.get("psid")
    if psid is None and not create:
        raise EventError("psid is required for this event")
    if psid is None:
        return state.add_person(page_id)["psid"]
    state.person(page_id, str(psid), create=True)
    return str(psid)


def _optin(state: State, page_id: str, ts: int, now: int, f: dict[str, Any]) -> dict:
    psid = _psid(state, page_id, f)
    state.touch(page_id, psid, ts)
    return events.optin(page_id, psid, f.get("ref"), ts, time_ms=now)


def _checkbox(state: State, page_id: str, ts: int, now: int, f: dict[str, Any]) -> dict:
    user_ref = str(f.get("user_ref") or f"sbx-uref-{state.next_id('user_ref')}")
    state.register_user_ref(page_id, user_ref, ts)
    return events.checkbox_optin(page_id, user_ref, ts, f.get("ref"), time_ms=now)


def _referral(state: State, page_id: str, ts: int, now: int, f: dict[str, Any]) -> dict:
    if not f.get("ref"):
        raise EventError("ref is required for a referral")
    psid = _psid(state, page_id, f)
    state.touch(page_id, psid, ts)
    return events.referral(page_id, psid, f["ref"], ts, f.get("source", "SHORTLINK"), time_ms=now)


def _postback(state: State, page_id: str, ts: int, now: int, f: dict[str, Any]) -> dict:
    psid = _psid(state, page_id, f)
    state.touch(page_id, psid, ts)
    return events.postback(
        page_id,
        psid,
        f.get("mid") or random_mid(),
        ts,
        f.get("ref"),
        f.get("title", "Get Started"),
        f.get("payload", "GET_STARTED"),
        time_ms=now,
    )


def _message(state: State, page_id: str, ts: int, now: int, f: dict[str, Any]) -> dict:
    psid = _psid(state, page_id, f)
    state.touch(page_id, psid, ts)
    user_ref = f.get("user_ref")
    if user_ref:
        # A checkbox user's first reply reveals their PSID for that user_ref.
        with state.lock:
            state.user_refs[page_id].setdefault(user_ref, {"opted_in_ms": None})["psid"] = psid
            state.people[page_id][psid]["user_ref"] = user_ref
    return events.message(
        page_id,
        psid,
        f.get("mid") or random_mid(),
        f.get("text", "Hello"),
        ts,
        user_ref,
        time_ms=now,
    )


def _echo(state: State, page_id: str, ts: int, now: int, f: dict[str, Any]) -> dict:
    psid = _psid(state, page_id, f, create=False)
    app_id = f.get("app_id") or state.cfg("app_id")
    return events.echo(
        page_id,
        psid,
        f.get("mid") or random_mid(),
        app_id,
        ts,
        f.get("text"),
        f.get("metadata"),
        time_ms=now,
    )


def _watermark(state: State, page_id: str, psid: str, f: dict[str, Any], now: int) -> int:
    """Default a receipt's watermark to the newest accepted send to that person."""
    if f.get("watermark") is not None:
        return int(f["watermark"])
    last = state.last_send_to(page_id, psid)
    return last["timestamp_ms"] if last else now


def _delivery(state: State, page_id: str, ts: int, now: int, f: dict[str, Any]) -> dict:
    psid = _psid(state, page_id, f, create=False)
    mark = _watermark(state, page_id, psid, f, now)
    return events.delivery(page_id, psid, mark, ts, f.get("mids"), time_ms=now)


def _read(state: State, page_id: str, ts: int, now: int, f: dict[str, Any]) -> dict:
    psid = _psid(state, page_id, f, create=False)
    mark = _watermark(state, page_id, psid, f, now)
    return events.read(page_id, psid, mark, ts, time_ms=now)


def _policy(state: State, page_id: str, ts: int, now: int, f: dict[str, Any]) -> dict:
    return events.policy_enforcement(
        page_id, ts, f.get("action", "block"), f.get("reason", events.POLICY_REASON), time_ms=now
    )


BUILDERS: dict[str, Builder] = {
    "optin": _optin,
    "checkbox_optin": _checkbox,
    "referral": _referral,
    "postback": _postback,
    "message": _message,
    "echo": _echo,
    "delivery": _delivery,
    "read": _read,
    "policy_block": _policy,
}


def build_event(state: State, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Apply the event to the state and return the webhook payload to post."""
    builder = BUILDERS.get(kind)
    if builder is None:
        raise EventError(f"unknown event kind {kind!r}; one of {', '.join(BUILDERS)}")
    page_id = str(fields.get("page_id") or "")
    if state.page(page_id) is None:
        raise EventError(f"unknown page_id {page_id!r}")
    now = state.now_ms()
    timestamp = int(fields["timestamp"]) if fields.get("timestamp") is not None else now
    return builder(state, page_id, timestamp, now, fields)
