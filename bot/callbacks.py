"""Telling the program engine a run is done: the summary posted to the run's `callback_url`,
signed with CALLBACK_SECRET, and the rules a callback URL keeps.

- A callback URL is https outside sandbox mode; its host may resolve to a private, loopback,
  link-local or otherwise non-public address only when CALLBACK_ALLOW_PRIVATE says so. Both are
  checked when the run is accepted (a 422 naming `callback_url`) and again at each attempt,
  which connects to the very address it checked (a name re-pointed meanwhile changes nothing).
- The body is the run's summary (`summary`); `X-Signature-256: sha256=<hex>` is the HMAC-SHA256
  of those exact bytes with CALLBACK_SECRET; `X-Run-Id` lets the engine drop a repeat.
- One attempt is one POST: 5 s to connect, 10 s to answer, no redirect followed, no retry
  here. A 2xx is delivered; anything else is retried by jobs/callbacks.py (`next_attempt_ms`).
- TLS trusts what the Graph client trusts (certifi's bundle, or REQUESTS_CA_BUNDLE) and the
  environment's HTTPS_PROXY / NO_PROXY apply (bot/graph.py `transport`).
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TypedDict
from urllib.parse import urlsplit

import orjson
import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError

from bot.config import Settings
from bot.graph import USER_AGENT, environment_proxy, transport
from bot.signature import WebhookSignature
from storage.callbacks import CallbackRun

TIMEOUT = urllib3.Timeout(connect=5.0, read=10.0)
FIRST_RETRY_S = 30.0  # the first retry comes 15-30 s after the first attempt (jitter)
MAX_RETRY_S = 3600.0
GIVE_UP_AFTER_MS = 24 * 3600 * 1000  # from the run's end
MAX_ADDRESSES = 3  # addresses of a name tried in turn when one refuses the connection


class Refused(ValueError):
    """A callback URL the rules refuse; its text says why, fit for the API's answer."""


@dataclass(frozen=True)
class Target:
    """Where a callback URL points, split for a connection made by address."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, as the request line carries them
    netloc: str  # the Host header


@dataclass(frozen=True)
class Delivery:
    """How one attempt went: `ok` for a 2xx; `error` is short and safe to log and store."""

    ok: bool
    status: int | None = None
    error: str = ""


class Counts(TypedDict):
    sent: int
    warning: int
    failed: int


class Reasons(TypedDict):
    warning: dict[str, int]
    failed: dict[str, int]


class Summary(TypedDict):
    """The body posted to the engine."""

    run_id: str
    program_id: str
    node_id: str
    profile_id: str
    state: str
    total: int
    counts: Counts
    reasons: Reasons
    created_at: str
    done_at: str


# -- the URL's rules ------------------------------------------------------------------------------


def url_problem(url: str, settings: Settings) -> str | None:
    """Why a run may not have `url` as its callback, or None. Outside CALLBACK_ALLOW_PRIVATE the
    host is resolved now, so a name on a private address is refused with the run."""
    if not settings.callback_secret:
        return "this service cannot sign callbacks: its operator has not set CALLBACK_SECRET"
    try:
        target = parse(url, https_only=not settings.sandbox)
        if not settings.callback_allow_private:
            addresses(target, allow_private=False)
    except Refused as refused:
        return str(refused)
    return None


def parse(url: str, *, https_only: bool) -> Target:
    """The URL's parts, or Refused."""
    if not url.isascii() or any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise Refused("must be ASCII without spaces (percent-encode the rest; punycode the host)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused("is not a valid URL") from None
    schemes = ("https",) if https_only else ("https", "http")
    if parts.scheme.lower() not in schemes:
        raise Refused("must be an https:// URL" if https_only else "must be an http(s):// URL")
    if not parts.hostname:
        raise Refused("must name a host")
    if parts.username is not None or parts.password is not None:
        raise Refused("must not hold a user name or password")
    scheme = parts.scheme.lower()
    return Target(
        scheme=scheme,
        host=parts.hostname,
        port=port or (443 if scheme == "https" else 80),
        path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        netloc=parts.netloc,
    )


def addresses(target: Target, *, allow_private: bool) -> list[str]:
    """The host's addresses (resolved now), or Refused: unresolvable, or (unless
    `allow_private`) any of them not a public one."""
    try:
        found = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # socket.gaierror is an OSError
        raise Refused(f"its host {target.host!r} cannot be resolved") from None
    unique = list(dict.fromkeys(str(info[4][0]) for info in found))
    if not allow_private:
        for address in unique:
            if not is_public(address):
                raise Refused(
                    f"its host {target.host!r} is on a private, loopback or link-local address "
                    f"({address}), which this service does not call"
                )
    return unique


def is_public(address: str) -> bool:
    """A globally routable unicast address (an IPv4-mapped IPv6 address judged as IPv4)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


# -- the summary and its signature ----------------------------------------------------------------


def summary(run: CallbackRun) -> Summary:
    return {
        "run_id": run.run_id,
        "program_id": run.program_id,
        "node_id": run.node_id,
        "profile_id": run.profile_id,
        "state": "done",
        "total": run.total,
        "counts": {
            "sent": run.counts.get("sent", 0),
            "warning": run.counts.get("warning", 0),
            "failed": run.counts.get("failed", 0),
        },
        "reasons": {
            "warning": dict(sorted(run.reasons.get("warning", {}).items())),
            "failed": dict(sorted(run.reasons.get("failed", {}).items())),
        },
        "created_at": _iso(run.created_at_ms),
        "done_at": _iso(run.done_at_ms),
    }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def body(run: CallbackRun) -> bytes:
    """The exact bytes posted and signed (the same at every attempt)."""
    return orjson.dumps(summary(run))


def signature(payload: bytes, secret: str) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of the body with CALLBACK_SECRET (as Facebook signs its
    webhooks, so the engine checks it the same way, with a constant-time compare)."""
    return WebhookSignature(secret).sign(payload)


def headers(run_id: str, payload: bytes, secret: str, attempt: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": f"{USER_AGENT} (run callback)",
        "X-Signature-256": signature(payload, secret),
        "X-Run-Id": run_id,  # the same at every attempt: a repeat is recognised by it
        "X-Callback-Attempt": str(attempt),
    }


# -- sending and retrying -------------------------------------------------------------------------


def deliver(run: CallbackRun, settings: Settings, attempt: int) -> Delivery:
    """One attempt at posting the run's summary to its callback URL."""
    if not settings.callback_secret:
        return Delivery(False, error="CALLBACK_SECRET is not set: the summary cannot be signed")
    payload = body(run)
    return post(
        run.url,
        payload,
        headers(run.run_id, payload, settings.callback_secret, attempt),
        https_only=not settings.sandbox,
        allow_private=settings.callback_allow_private,
    )


def post(
    url: str,
    payload: bytes,
    sent_headers: Mapping[str, str],
    *,
    https_only: bool,
    allow_private: bool,
) -> Delivery:
    """POST `payload` to `url` once, connecting only to addresses the rules allow."""
    try:
        target = parse(url, https_only=https_only)
        proxied = environment_proxy(url) is not None
        # Through a proxy it is the proxy that resolves the name and connects.
        found = [] if proxied and allow_private else addresses(target, allow_private=allow_private)
    except Refused as refused:
        return Delivery(False, error=f"callback URL refused: {refused}")
    pool = transport(url, 1)  # a pool of its own per attempt: rare calls, no shared state
    try:
        if proxied:
            return _answer(partial(pool.urlopen, "POST", url, **_request(payload, sent_headers)))
        return _post_by_address(pool, target, found, payload, sent_headers)
    finally:
        pool.clear()


def _post_by_address(
    pool: urllib3.PoolManager,
    target: Target,
    found: list[str],
    payload: bytes,
    sent_headers: Mapping[str, str],
) -> Delivery:
    """Connect to the checked addresses in turn (the next only when one refuses or times out
    connecting), verifying TLS against the URL's host name."""
    tls = {"server_hostname": target.host} if target.scheme == "https" else None
    options = _request(payload, {**sent_headers, "Host": target.netloc})
    delivery = Delivery(False, error="no address to connect to")
    for address in found[:MAX_ADDRESSES]:
        connection = pool.connection_from_host(address, target.port, target.scheme, pool_kwargs=tls)
        delivery = _answer(partial(connection.urlopen, "POST", target.path, **options))
        if not delivery.error.startswith("could not connect"):
            break
    return delivery


class _Request(TypedDict):
    body: bytes
    headers: dict[str, str]
    redirect: bool
    retries: bool
    timeout: urllib3.Timeout
    preload_content: bool


def _request(payload: bytes, sent_headers: Mapping[str, str]) -> _Request:
    return {
        "body": payload,
        "headers": dict(sent_headers),
        "redirect": False,  # a 3xx is an answer like any other non-2xx: retried, not followed
        "retries": False,
        "timeout": TIMEOUT,
        "preload_content": False,  # the answer's body is never read
    }


def _answer(call: Callable[[], urllib3.BaseHTTPResponse]) -> Delivery:
    try:
        response = call()
    except (NewConnectionError, ConnectTimeoutError) as exc:
        return Delivery(False, error=f"could not connect ({type(exc).__name__})")
    except HTTPError as exc:  # TLS refused, read timeout, reset (the engine may have it or not)
        return Delivery(False, error=f"request failed ({type(exc).__name__})")
    response.close()
    ok = 200 <= response.status < 300
    return Delivery(ok, response.status, "" if ok else f"HTTP {response.status}")


def next_attempt_ms(
    attempt: int, now_ms: int, done_at_ms: int, jitter: Callable[[], float] = random.random
) -> int | None:
    """When to try again after failed attempt number `attempt`, or None to give up: exponential
    backoff from FIRST_RETRY_S, capped at MAX_RETRY_S, each wait drawn between its half and
    itself, for GIVE_UP_AFTER_MS from the run's end."""
    wait_s = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** min(attempt - 1, 20))
    next_ms = now_ms + int(wait_s * (0.5 + 0.5 * jitter()) * 1000)
    return next_ms if next_ms <= done_at_ms + GIVE_UP_AFTER_MS else None
