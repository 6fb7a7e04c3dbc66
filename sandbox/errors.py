"""Graph API error bodies and the on-demand fault rules that produce them."""

from __future__ import annotations

import json
import secrets
from typing import Any

from flask import Response
from werkzeug.http import HTTP_STATUS_CODES

from sandbox.state import State

# Graph's error-handling guide marks these codes as worth retrying.
TRANSIENT_CODES = {1, 2, 1200, 613}

# Default texts, as Facebook words them, for faults given without a message.
DEFAULT_MESSAGES: dict[tuple[int, int | None], str] = {
    (1, None): "An unknown error occurred",
    (1, 1357046): "Received Invalid JSON reply.",
    (2, None): "An unexpected error has occurred. Please retry your request later.",
    (4, None): "(#4) Application request limit reached",
    (10, 2018278): "(#10) This message is sent outside of allowed window.",
    (10, 2018108): "(#10) They can't receive your messages right now.",
    (10, 1893063): "(#10) You are temporarily restricted from sending messages.",
    (100, None): "(#100) Invalid parameter",
    (100, 2018001): "(#100) No matching user found",
    (190, None): "Invalid OAuth access token - Cannot parse access token",
    (200, 1545041): "(#200) This person isn't available right now.",
    (230, None): "(#230) Permissions disallow message to user",
    (368, None): "(#368) The action attempted has been deemed abusive or is otherwise disallowed",
    (551, None): "(#551) This person isn't available right now.",
    (613, None): "(#613) Calls to this api have exceeded the rate limit.",
    (1200, None): "(#1200) Temporary send message failure. Please try again later",
    (10904, None): "(#10904) The page has messages disabled in the settings",
}
FAULT_DEFAULTS: dict[str, Any] = {
    "recipient": None,
    "page_id": None,
    "endpoint": "messages",
    "code": None,
    "subcode": None,
    "message": None,
    "type": None,
    "http_status": None,
    "times": None,
    "rate": 1.0,
    "delay_ms": None,
    "accept": False,
}


class GraphError(Exception):
    """A Graph API refusal, rendered as Facebook's error JSON."""

    def __init__(
        self,
        code: int,
        message: str | None = None,
        subcode: int | None = None,
        http_status: int = 400,
        type_: str | None = None,
        user_msg: str | None = None,
        transient: bool | None = None,
    ) -> None:
        self.code = code
        self.subcode = subcode
        self.message = message or default_message(code, subcode)
        self.http_status = http_status
        # Object-lookup failures are GraphMethodException on Graph; the rest OAuthException.
        self.type = type_ or (
            "GraphMethodException" if (code, subcode) == (100, 33) else "OAuthException"
        )
        self.user_msg = user_msg
        self.transient = code in TRANSIENT_CODES if transient is None else transient

    def body(self) -> dict[str, Any] | None:
        """Return the error JSON, or None for a bare 5xx (code 0) that has no body."""
        if self.code == 0:
            return None
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.user_msg:
            error["error_user_msg"] = self.user_msg
        error["is_transient"] = self.transient
        error["fbtrace_id"] = "A" + secrets.token_urlsafe(8)[:10]
        return {"error": error}

    def response(self) -> Response:
        """Return the Flask response Facebook would send."""
        body = self.body()
        if body is None:
            text = HTTP_STATUS_CODES.get(self.http_status, "Error")
            return Response(text, status=self.http_status, mimetype="text/plain")
        return Response(json.dumps(body), status=self.http_status, mimetype="application/json")

    def summary(self) -> dict[str, Any]:
        """Return the fields the sends log keeps about this error."""
        return {
            "code": self.code,
            "subcode": self.subcode,
            "message": self.message,
            "http_status": self.http_status,
        }


def default_message(code: int, subcode: int | None) -> str:
    """Return Facebook's usual text for a code/subcode pair."""
    return (
        DEFAULT_MESSAGES.get((code, subcode))
        or DEFAULT_MESSAGES.get((code, None))
        or f"(#{code}) Sandbox fault"
    )


def invalid_param(user_msg: str, message: str = "(#100) Invalid parameter") -> GraphError:
    """Return the generic code-100 refusal with a human explanation."""
    return GraphError(100, message, user_msg=user_msg)


def normalise_fault(rule: dict[str, Any]) -> dict[str, Any]:
    """Return a complete fault rule or raise ValueError naming the problem."""
    unknown = sorted(set(rule) - set(FAULT_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown fault keys: {', '.join(unknown)}")
    fault = {**FAULT_DEFAULTS, **rule}
    if not isinstance(fault["code"], int):
        raise ValueError("fault needs an integer code")
    if fault["http_status"] is None:
        fault["http_status"] = 500 if fault["code"] == 0 else 400
    if fault["times"] is not None and (not isinstance(fault["times"], int) or fault["times"] < 1):
        raise ValueError("times must be a positive integer or null")
    if not 0.0 <= float(fault["rate"]) <= 1.0:
        raise ValueError("rate must be between 0 and 1")
    for key in ("recipient", "page_id"):
        if fault[key] is not None:
            fault[key] = str(fault[key])
    return fault


def add_faults(state: State, rules: list[dict[str, Any]]) -> list[str]:
    """Validate and store fault rules; return their ids."""
    faults = [normalise_fault(rule) for rule in rules]
    with state.lock:
        for fault in faults:
            fault["id"] = state.next_id("fault")
            fault["fired"] = 0
            state.faults.append(fault)
    return [fault["id"] for fault in faults]


def take_fault(
    state: State, endpoint: str, page_id: str, recipient: str | None
) -> dict[str, Any] | None:
    """Return the first matching fault that fires now, using up one of its `times`."""
    with state.lock:
        for fault in state.faults:
            if not _matches(fault, endpoint, page_id, recipient):
                continue
            if state.rng.random() >= float(fault["rate"]):
                continue
            fault["fired"] += 1
            if fault["times"] is not None:
                fault["times"] -= 1
                if fault["times"] <= 0:
                    state.faults.remove(fault)
            return dict(fault)
    return None


def _matches(fault: dict[str, Any], endpoint: str, page_id: str, recipient: str | None) -> bool:
    """Tell whether a rule applies to this call."""
    if fault["endpoint"] not in (None, endpoint):
        return False
    if fault["page_id"] not in (None, page_id):
        return False
    return fault["recipient"] in (None, recipient)


def fault_error(fault: dict[str, Any]) -> GraphError:
    """Return the error a fired rule answers with."""
    return GraphError(
        fault["code"],
        fault["message"],
        fault["subcode"],
        http_status=fault["http_status"],
        type_=fault["type"],
    )
