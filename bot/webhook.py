"""`/webhook`: Facebook's subscription check (Flask) and event notifications (before Flask).

POST is an adapter: raw bytes -> signature -> JSON envelope -> events -> one atomic Redis
call (shared with the webhooks other threads are writing at that moment) -> 200, only once
the events are in Redis. Nothing here calls Facebook; everything it writes is idempotent, so Facebook's
retries and duplicates are harmless. If Redis is down it answers 503 so Facebook retries.

POST /webhook is the busiest URL and needs nothing Flask offers (no session, no templates,
no routing), so it is answered by a small WSGI layer in front of the Flask app: this halves
its CPU per request (bench/webhook_ingest.py). Everything else goes on to Flask.
"""
from __future__ import annotations

import hmac
import logging

import orjson

from flask import Blueprint, Response, current_app, request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot import logs, metrics
from bot.events import parse_webhook
from bot.refs import OptinRefs
from bot.signature import WebhookSignature

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)
PATH = "/webhook"


@bp.get(PATH)
def verify_subscription():
    """Echo hub.challenge when Facebook presents our verify token."""
    settings = current_app.config["SETTINGS"]
    token = request.args.get("hub.verify_token", "")
    if request.args.get("hub.mode") != "subscribe" or not hmac.compare_digest(
            token.encode(), settings.fb_verify_token.encode()):
        return Response("verification failed", status=403, mimetype="text/plain")
    return Response(request.args.get("hub.challenge", ""), status=200, mimetype="text/plain")


class WebhookReceiver:
    """The POST's logic, without HTTP: (status, text) for a body and its signature header."""

    def __init__(self, store, signature: WebhookSignature, refs: OptinRefs):
        self.store, self.signature, self.refs = store, signature, refs

    def receive(self, body: bytes, signature_header: str | None) -> tuple[int, str]:
        if not self.signature.is_valid(body, signature_header):
            metrics.webhook_rejected(self.store, "signature")
            return 403, "invalid signature"
        payload = _envelope(body)
        if payload is None:
            metrics.webhook_rejected(self.store, "shape")
            return 400, 'expected a JSON object with "object": "page"'
        parsed = parse_webhook(payload, self.refs)
        try:
            self.store.inbound.apply_shared(parsed.events, parsed.kinds)  # kinds counted for /metrics
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.error("webhook not recorded, Redis unreachable (%s): answered 503 so Facebook retries",
                      type(exc).__name__)
            return 503, "storage unavailable, retry later"
        return 200, "EVENT_RECEIVED"


def _envelope(body: bytes) -> dict | None:
    try:
        payload = orjson.loads(body)  # strict RFC 8259: NaN, lone surrogates, >64-bit ints are refused
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(payload, dict) or payload.get("object") != "page":
        return None
    return payload


class WebhookFastPath:
    """WSGI middleware: answers POST /webhook itself, passes every other request to Flask."""

    def __init__(self, flask_wsgi, receiver: WebhookReceiver, max_bytes: int):
        self.flask_wsgi, self.receiver, self.max_bytes = flask_wsgi, receiver, max_bytes

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.flask_wsgi(environ, start_response)
        logs.context_id.set(environ.get("HTTP_X_REQUEST_ID", "")[:64])
        try:
            status, text = self._handle(environ)
        except Exception:  # noqa: BLE001 - never a stack trace to Facebook; it retries
            log.exception("webhook failed")
            status, text = 500, "internal error, retry later"
        body = text.encode()
        start_response(f"{status} {_REASONS[status]}", [("Content-Type", "text/plain; charset=utf-8"),
                                                        ("Content-Length", str(len(body)))])
        return [body]

    def _handle(self, environ) -> tuple[int, str]:
        length = environ.get("CONTENT_LENGTH") or ""
        if length and (not length.isdigit() or int(length) > self.max_bytes):
            return (413, "request body too large") if length.isdigit() else (400, "bad Content-Length")
        stream = environ["wsgi.input"]
        body = stream.read(int(length)) if length else stream.read(self.max_bytes + 1)
        if len(body) > self.max_bytes:
            return 413, "request body too large"
        return self.receiver.receive(body, environ.get("HTTP_X_HUB_SIGNATURE_256"))


_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 413: "Request Entity Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}
