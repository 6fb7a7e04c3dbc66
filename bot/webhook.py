"""`/webhook`: Facebook's subscription check and event notifications.

POST is an adapter: raw bytes -> signature -> JSON envelope -> events -> one atomic Redis
call -> 200. Nothing here calls Facebook; everything it writes is idempotent, so Facebook's
retries and duplicates are harmless. If Redis is down it answers 503 so Facebook retries.
"""
from __future__ import annotations

import hmac
import json
import logging

from flask import Blueprint, Response, current_app, request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot import metrics
from bot.events import parse_webhook
from storage import get_storage

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)


def _text(body: str, status: int) -> Response:
    return Response(body, status=status, mimetype="text/plain")


@bp.get("/webhook")
def verify_subscription():
    """Echo hub.challenge when Facebook presents our verify token."""
    settings = current_app.config["SETTINGS"]
    token = request.args.get("hub.verify_token", "")
    if request.args.get("hub.mode") != "subscribe" or not hmac.compare_digest(
            token.encode(), settings.fb_verify_token.encode()):
        return _text("verification failed", 403)
    return _text(request.args.get("hub.challenge", ""), 200)


@bp.post("/webhook")
def receive_events():
    """Verify, parse and record a batch of Messenger events."""
    request.max_content_length = current_app.config["SETTINGS"].webhook_max_bytes
    body = request.get_data(cache=False)  # 413 past the limit, before anything is read further
    if not current_app.extensions["signature"].is_valid(body, request.headers.get("X-Hub-Signature-256")):
        metrics.webhook_rejected(get_storage(), "signature")
        return _text("invalid signature", 403)
    payload = _envelope(body)
    if payload is None:
        metrics.webhook_rejected(get_storage(), "shape")
        return _text("expected a JSON object with \"object\": \"page\"", 400)
    parsed = parse_webhook(payload, current_app.extensions["refs"])
    try:
        get_storage().inbound.apply(parsed.events, parsed.kinds)  # kinds counted for /metrics
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.error("webhook not recorded, Redis unreachable (%s): answered 503 so Facebook retries",
                  type(exc).__name__)
        return _text("storage unavailable, retry later", 503)
    return _text("EVENT_RECEIVED", 200)


def _envelope(body: bytes) -> dict | None:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(payload, dict) or payload.get("object") != "page":
        return None
    return payload
