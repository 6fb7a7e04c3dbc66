"""Webhook payloads as Facebook sends them, plus signing and posting.

Shapes follow Meta's webhook event references (see /work/shared/reference/messenger-facts.md §2):
every delivery is `{"object": "page", "entry": [{"id", "time", "messaging": [event]}]}`, ids are
strings and times are epoch milliseconds. Login's deauthorize and data-deletion callbacks are
form posts of a `signed_request` instead (§8). The functions here are pure so tests of the main
service can build fixtures with them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import requests

POLICY_REASON = (
    "The bot violated our Platform Policies "
    "(https://developers.facebook.com/devpolicy/#messengerplatform). Common "
    "violations include sending out excessive spammy messages or being "
    "non-functional."
)


def envelope(page_id: str, event: dict[str, Any], time_ms: int | None = None) -> dict[str, Any]:
    """Wrap one messaging event in the page envelope."""
    sent = time_ms if time_ms is not None else event.get("timestamp", 0)
    return {"object": "page", "entry": [{"id": page_id, "time": sent, "messaging": [event]}]}


def _from_user(page_id: str, psid: str, timestamp: int, **body: Any) -> dict[str, Any]:
    """Return an event sent by a person to the Page."""
    return {"sender": {"id": psid}, "recipient": {"id": page_id}, "timestamp": timestamp, **body}


def optin(
    page_id: str, psid: str, ref: str | None, timestamp: int, time_ms: int | None = None
) -> dict[str, Any]:
    """Build a Send to Messenger opt-in: sender PSID plus the plugin's data-ref."""
    body = {"ref": ref} if ref is not None else {}
    return envelope(page_id, _from_user(page_id, psid, timestamp, optin=body), time_ms)


def checkbox_optin(
    page_id: str, user_ref: str, timestamp: int, ref: str | None = None, time_ms: int | None = None
) -> dict[str, Any]:
    """Build a checkbox plugin opt-in: user_ref only, and no sender at all (Meta omits it)."""
    body: dict[str, Any] = {"user_ref": user_ref}
    if ref is not None:
        body = {"ref": ref, **body}
    event = {"recipient": {"id": page_id}, "timestamp": timestamp, "optin": body}
    return envelope(page_id, event, time_ms)


def referral(
    page_id: str,
    psid: str,
    ref: str,
    timestamp: int,
    source: str = "SHORTLINK",
    time_ms: int | None = None,
) -> dict[str, Any]:
    """Build an m.me referral on an existing thread."""
    body = {"ref": ref, "source": source, "type": "OPEN_THREAD"}
    return envelope(page_id, _from_user(page_id, psid, timestamp, referral=body), time_ms)


def postback(
    page_id: str,
    psid: str,
    mid: str,
    timestamp: int,
    ref: str | None = None,
    title: str = "Get Started",
    payload: str = "GET_STARTED",
    time_ms: int | None = None,
) -> dict[str, Any]:
    """Build a postback; with a ref it is the Get Started of a new thread opened by m.me."""
    body: dict[str, Any] = {"mid": mid, "title": title, "payload": payload}
    if ref is not None:
        body["referral"] = {"ref": ref, "source": "SHORTLINK", "type": "OPEN_THREAD"}
    return envelope(page_id, _from_user(page_id, psid, timestamp, postback=body), time_ms)


def message(
    page_id: str,
    psid: str,
    mid: str,
    text: str,
    timestamp: int,
    user_ref: str | None = None,
    time_ms: int | None = None,
) -> dict[str, Any]:
    """Build an inbound message; with user_ref it is a checkbox user's first reply."""
    event = _from_user(page_id, psid, timestamp, message={"mid": mid, "text": text})
    if user_ref is not None:
        # Meta ties the new PSID to the checkbox user_ref this way on the first reply.
        event["prior_message"] = {"source": "checkbox_plugin", "identifier": user_ref}
    return envelope(page_id, event, time_ms)


def echo(
    page_id: str,
    psid: str,
    mid: str,
    app_id: str,
    timestamp: int,
    text: str | None = None,
    metadata: str | None = None,
    time_ms: int | None = None,
) -> dict[str, Any]:
    """Build a message echo: sender is the Page, recipient the PSID (reverse of inbound)."""
    # Meta's samples carry app_id as a JSON number.
    body: dict[str, Any] = {
        "is_echo": True,
        "app_id": int(app_id) if str(app_id).isdigit() else app_id,
    }
    if metadata is not None:
        body["metadata"] = metadata
    body["mid"] = mid
    if text is not None:
        body["text"] = text
    event = {
        "sender": {"id": page_id},
        "recipient": {"id": psid},
        "timestamp": timestamp,
        "message": body,
    }
    return envelope(page_id, event, time_ms)


def delivery(
    page_id: str,
    psid: str,
    watermark: int,
    timestamp: int,
    mids: list[str] | None = None,
    time_ms: int | None = None,
) -> dict[str, Any]:
    """Build a delivery receipt; `mids` is optional on Facebook too."""
    body: dict[str, Any] = {"mids": list(mids)} if mids else {}
    body["watermark"] = watermark
    return envelope(page_id, _from_user(page_id, psid, timestamp, delivery=body), time_ms)


def read(
    page_id: str, psid: str, watermark: int, timestamp: int, time_ms: int | None = None
) -> dict[str, Any]:
    """Build a read receipt (watermark only, never mids)."""
    body = {"watermark": watermark}
    return envelope(page_id, _from_user(page_id, psid, timestamp, read=body), time_ms)


def policy_enforcement(
    page_id: str,
    timestamp: int,
    action: str = "block",
    reason: str | None = POLICY_REASON,
    time_ms: int | None = None,
) -> dict[str, Any]:
    """Build a messaging_policy_enforcement event (no sender; reason absent on unblock)."""
    body: dict[str, Any] = {"action": action}
    if reason is not None and action != "unblock":
        body["reason"] = reason
    event = {"recipient": {"id": page_id}, "timestamp": timestamp, "policy_enforcement": body}
    return envelope(page_id, event, time_ms)


def encode(payload: dict[str, Any]) -> bytes:
    """Serialise a payload the way Meta does: compact and ASCII-escaped."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def sign(body: bytes, secret: str) -> str:
    """Return the X-Hub-Signature-256 header value for a raw body."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return "sha256=" + digest


def post_webhook(
    url: str,
    payload: dict[str, Any],
    secret: str,
    session: requests.Session | None = None,
    signature: str | None = None,
    timeout: float = 10.0,
) -> requests.Response:
    """POST a signed payload to a webhook URL and return the response (one attempt)."""
    body = encode(payload)
    headers = {"Content-Type": "application/json"}
    # A given signature replaces the real one (tests of rejection); "" sends no header at all.
    signature = sign(body, secret) if signature is None else signature
    if signature:
        headers["X-Hub-Signature-256"] = signature
    if session is not None:
        return session.post(url, data=body, headers=headers, timeout=timeout)
    with requests.Session() as own:
        return own.post(url, data=body, headers=headers, timeout=timeout)


def b64url(data: bytes) -> str:
    """Return base64url without padding, as signed requests use it."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def signed_request(payload: dict[str, Any], app_secret: str) -> str:
    """Return `<sig>.<payload>`: sig = HMAC-SHA256(app secret, payload as encoded)."""
    body = {"algorithm": "HMAC-SHA256", **payload}
    encoded = b64url(json.dumps(body, separators=(",", ":")).encode("utf-8"))
    digest = hmac.new(app_secret.encode("utf-8"), encoded.encode("ascii"), hashlib.sha256)
    return f"{b64url(digest.digest())}.{encoded}"


def login_payload(user_id: str, issued_at: int) -> dict[str, Any]:
    """Build the payload of a deauthorize or data-deletion callback (app-scoped user id)."""
    return {"algorithm": "HMAC-SHA256", "issued_at": issued_at, "user_id": str(user_id)}


def post_signed_request(url: str, signed: str | None, timeout: float = 10.0) -> requests.Response:
    """POST `signed_request=...` form-encoded to a callback URL (None posts an empty form)."""
    form = {"signed_request": signed} if signed is not None else {}
    with requests.Session() as session:
        return session.post(url, data=form, timeout=timeout)
