"""`/webhook`: Facebook's subscription check (Flask) and event notifications (before Flask).

POST is an adapter: raw bytes -> signature -> JSON envelope -> events -> one atomic Redis
call (shared with the webhooks other threads are writing at that moment; in a crowd, parked
and applied a few milliseconds later: storage/inbound.py) -> 200, only once the events are in
Redis. Nothing here calls Facebook; everything it writes is idempotent, so
Facebook's retries and duplicates are harmless. If Redis is down it answers 503 so Facebook retries.

POST /webhook is the busiest URL and needs nothing Flask offers (no session, no templates,
no routing), so it is answered by a small WSGI layer in front of the Flask app: this halves
its CPU per request (bench/webhook_ingest.py). Everything else goes on to Flask.

That layer is the outermost, so it also keeps bad request bodies from failing as 500 for every
route: a body the server cannot read (malformed chunked framing, cut short) is answered 400, and
an answer that leaves the body unread or unreadable closes the connection (`Connection: close`),
since the next request's start on it is unknown: a keep-alive client then opens a new one rather
than losing its next request on a connection the server drops.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable, Iterator

import orjson
from flask import Blueprint, Response, current_app, request
from gunicorn.http.errors import ParseException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import BadRequest

from bot import logs, metrics
from bot.events import parse_webhook
from bot.refs import OptinRefs
from bot.signature import WebhookSignature

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)
PATH = "/webhook"
# What reading wsgi.input raises when the body cannot be read: gunicorn's parse errors (an invalid
# chunk size or terminator, a bad trailer), its NoMoreData (an OSError: the client closed its
# side mid-chunk), a reset connection; werkzeug's own LimitedStream treats OSError and
# ValueError as a disconnected client too.
BODY_READ_ERRORS = (OSError, ValueError, ParseException)
UNREADABLE_BODY = "The request body could not be read (malformed chunked encoding, or cut short)"


@bp.get(PATH)
def verify_subscription():
    """Echo hub.challenge when Facebook presents our verify token."""
    settings = current_app.config["SETTINGS"]
    token = request.args.get("hub.verify_token", "")
    if request.args.get("hub.mode") != "subscribe" or not hmac.compare_digest(
        token.encode(), settings.fb_verify_token.encode()
    ):
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
            self.store.inbound.apply_shared(
                parsed.events, parsed.kinds
            )  # kinds counted for /metrics
        except (RedisConnectionError, RedisTimeoutError, ReadOnlyError) as exc:
            log.error(  # ReadOnlyError: a primary demoted by a failover, still answering
                "webhook not recorded, Redis unavailable (%s): answered 503 so Facebook retries",
                type(exc).__name__,
            )
            return 503, "storage unavailable, retry later"
        return 200, "EVENT_RECEIVED"


def _envelope(body: bytes) -> dict | None:
    try:
        payload = orjson.loads(
            body
        )  # strict RFC 8259: NaN, lone surrogates, >64-bit ints are refused
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
            return self._flask(environ, start_response)
        logs.context_id.set(environ.get("HTTP_X_REQUEST_ID", "")[:64])
        try:
            status, text = self._handle(environ)
        except _Unframed as exc:
            status, text = exc.status, exc.text
            close_connection(start_response)
        except Exception:
            log.exception("webhook failed")
            status, text = 500, "internal error, retry later"
        body = text.encode()
        start_response(
            f"{status} {_REASONS[status]}",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _handle(self, environ) -> tuple[int, str]:
        length = environ.get("CONTENT_LENGTH") or ""
        if length and not length.isdecimal():  # isdigit() takes "²", which int() refuses
            raise _Unframed(400, "bad Content-Length")
        if length and int(length) > self.max_bytes:
            raise _Unframed(413, "request body too large")
        stream = environ["wsgi.input"]
        try:
            body = stream.read(int(length)) if length else stream.read(self.max_bytes + 1)
        except BODY_READ_ERRORS:
            raise _Unframed(400, UNREADABLE_BODY) from None
        if len(body) > self.max_bytes:
            raise _Unframed(413, "request body too large")
        return self.receiver.receive(body, environ.get("HTTP_X_HUB_SIGNATURE_256"))

    def _flask(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """Flask, reading the body through `_CheckedInput`; the connection closes after an
        answer given before the body was read to its end (a 413, a 401, an unreadable body)."""
        if not environ.get("HTTP_TRANSFER_ENCODING") and environ.get("CONTENT_LENGTH", "0") in (
            "",
            "0",
        ):
            return self.flask_wsgi(environ, start_response)  # no body (GETs): nothing to guard
        body = environ["wsgi.input"] = _CheckedInput(environ["wsgi.input"])

        def start(status: str, headers: list, exc_info=None) -> Callable:
            if not body.finished:
                close_connection(start_response)
            return start_response(status, headers, exc_info)

        return self.flask_wsgi(environ, start)


class _Unframed(Exception):
    """A webhook answered with its body unread or unreadable: the connection must close."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


class _CheckedInput:
    """wsgi.input for Flask: a failed read raises BadRequest (answered 400 by bot.handlers, with
    no stack trace), and `finished` tells whether the body was read to its end."""

    def __init__(self, stream) -> None:
        self._stream, self.finished = stream, False

    def read(self, size: int | None = -1) -> bytes:
        data = self._guarded(self._stream.read, size)
        if size is None or size < 0 or len(data) < size:
            self.finished = True  # read to the end: a short read is the end (WSGI)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = self._guarded(self._stream.readline, size)
        self.finished = self.finished or not data
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = self._guarded(self._stream.readlines, hint)
        self.finished = self.finished or hint is None or hint <= 0
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def _guarded(self, read: Callable, size: int | None):
        try:
            return read(size)
        except BODY_READ_ERRORS:
            raise BadRequest(UNREADABLE_BODY) from None


def close_connection(start_response: Callable) -> None:
    """Make the server close the connection after this answer and say so (`Connection: close`).

    WSGI gives an application no way to ask this (hop-by-hop headers are the server's; gunicorn
    drops them), so this asks gunicorn's response object, whose method `start_response` is.
    gunicorn would otherwise announce keep-alive, then drain at most 64 KiB of the unread body
    and drop the connection. Other servers (the test client) are left to do as they do."""
    force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
    if force_close is not None:
        force_close()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
