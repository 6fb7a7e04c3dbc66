"""The Facebook Graph API client: the only code that talks to Facebook.

One keep-alive urllib3 connection pool (the engine under `requests`, used directly: see
`transport`), a timeout on every call, the Page token in the Authorization header (never in a
URL or a log line) with its appsecret_proof. Facebook's error JSON becomes one exception whose
class says what the caller does (bot/policy.py decides which).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import urlencode, urlsplit
from urllib.request import (  # type: ignore[attr-defined]  # proxy_bypass_environment: no stub
    getproxies_environment,
    proxy_bypass_environment,
)

import certifi
import orjson
import urllib3
from urllib3 import HTTPHeaderDict
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)

from bot import metrics, policy
from bot.errors import BotError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.0
USER_AGENT = "messenger-channel/1"
SUBSCRIBED_FIELDS = (
    "messages",
    "messaging_postbacks",
    "messaging_optins",
    "message_deliveries",
    "message_reads",
    "messaging_referrals",
    "message_echoes",
    "messaging_policy_enforcement",
)


class GraphError(BotError):
    """Facebook refused, or could not be reached. `rule` says what to do about it."""

    def __init__(
        self,
        message: str,
        *,
        rule: policy.ErrorRule,
        http_status: int | None = None,
        code: int | None = None,
        subcode: int | None = None,
        fbtrace_id: str = "",
        usage: dict[str, int] | None = None,
    ):
        super().__init__(message)
        self.message, self.rule = message, rule
        self.http_status, self.code, self.subcode, self.fbtrace_id = (
            http_status,
            code,
            subcode,
            fbtrace_id,
        )
        self.usage = usage or {}

    @property
    def reason(self) -> str:
        return self.rule.reason

    def summary(self) -> str:
        """Code, subcode and Facebook's message: safe to store and show (no token in it)."""
        code = (
            ""
            if self.code is None
            else f"#{self.code}" + (f"/{self.subcode}" if self.subcode else "") + " "
        )
        return f"{code}{self.message}"[:500]


class RetryableError(GraphError):
    """Transient: try again after a backoff (capped)."""


class RateLimitError(RetryableError):
    """Facebook's rate limit: slow this Page down, then try again."""


class AmbiguousError(GraphError):
    """The request may have reached Facebook: never resend it blindly."""


class OutsideWindowError(GraphError):
    """A text was refused outside the 24-hour window."""


class PermanentError(GraphError):
    """Refused for good for this contact."""


class TokenError(GraphError):
    """The Page token is invalid: the profile needs reauthorisation."""


class PageBlockedError(GraphError):
    """Facebook restricted the Page."""


_CLASS_OF_ACTION = {
    policy.RETRY: RetryableError,
    policy.RATE_LIMIT: RateLimitError,
    policy.AMBIGUOUS: AmbiguousError,
    policy.OUTSIDE_WINDOW: OutsideWindowError,
    policy.FAIL: PermanentError,
    policy.TOKEN: TokenError,
    policy.PAGE_BLOCKED: PageBlockedError,
}


def send_metadata(run_id: str, contact_id: str) -> str:
    """What our sends carry in `message.metadata`; Facebook echoes it back (under 1000 chars)."""
    return json.dumps({"run": run_id, "contact": contact_id}, separators=(",", ":"))


def parse_send_metadata(value: object) -> tuple[str, str] | None:
    """(run id, contact id) from an echo's metadata, if it is one of ours."""
    if not isinstance(value, str) or not value.startswith("{"):
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    run_id, contact_id = data.get("run"), data.get("contact")
    if isinstance(run_id, str) and isinstance(contact_id, str) and run_id and contact_id:
        return run_id, contact_id
    return None


def message_body(recipient: str, decision: policy.Decision, metadata: str) -> dict[str, Any]:
    """The Send API body for a decision: tagged or standard text, or a utility template."""
    if recipient.startswith(policy.USER_REF_PREFIX):
        target = {"user_ref": recipient[len(policy.USER_REF_PREFIX) :]}
    else:
        target = {"id": recipient}
    if decision.messaging_type == "UTILITY":
        template: Mapping[str, Any] = decision.template or {}  # policy always sets one here
        message: dict[str, Any] = {
            "template": {
                "name": template["name"],
                "language": {"code": template["language"]},
                "components": [
                    {
                        "type": "body",
                        "parameters": [{"type": "text", "text": v} for v in template["parameters"]],
                    }
                ],
            }
        }
    else:
        message = {"text": decision.text}
    body = {
        "recipient": target,
        "messaging_type": decision.messaging_type,
        "message": {**message, "metadata": metadata},
    }
    if decision.tag:
        body["tag"] = decision.tag
    return body


@dataclass(frozen=True)
class SendResult:
    message_id: str
    recipient_id: str | None
    # X-Business-Use-Case-Usage for this Page, if sent
    usage: dict[str, int] = field(default_factory=dict)


class GraphClient:
    """Calls to the Graph API under one pinned version."""

    def __init__(
        self,
        base_url: str,
        version: str,
        *,
        app_secret: str,
        app_id: str = "",
        timeout: float = 10.0,
        pool_size: int = 32,
    ):
        self.base = f"{base_url.rstrip('/')}/{version}"
        self.timeout = timeout
        self.app_id = app_id
        self._secret = app_secret.encode()
        self._pool_size = pool_size
        self._proofs: dict[str, str] = {}
        self._pid = os.getpid()
        self.pool = transport(self.base, pool_size)

    @property
    def timeout(self) -> float:
        """Seconds to wait for Facebook's answer once connected (connecting: CONNECT_TIMEOUT)."""
        return self._read_timeout  # as set: urllib3's read_timeout is typed Optional

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._read_timeout = seconds
        self._timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=seconds)

    def close(self) -> None:
        self.pool.clear()

    def _fresh_pool_after_fork(self) -> None:
        """A forked RQ work horse must not share the parent's pooled sockets."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self.pool = transport(self.base, self._pool_size)

    # -- calls -------------------------------------------------------------------------------

    def me(self, token: str) -> dict[str, Any]:
        return self._call("GET", "me", token, params={"fields": "id,name"})[0]

    def page(self, page_id: str, token: str) -> dict[str, Any]:
        """The Page's id and name, read with its own token (proves the token is the Page's)."""
        return self._call("GET", page_id, token, params={"fields": "id,name"})[0]

    def subscribe(
        self, page_id: str, token: str, fields: tuple[str, ...] = SUBSCRIBED_FIELDS
    ) -> None:
        """Subscribe our app to the Page's webhook fields."""
        self._call(
            "POST",
            f"{page_id}/subscribed_apps",
            token,
            params={"subscribed_fields": ",".join(fields)},
        )

    def unsubscribe(self, page_id: str, token: str) -> None:
        self._call("DELETE", f"{page_id}/subscribed_apps", token)

    def subscribed_fields(self, page_id: str, token: str) -> list[str]:
        data = self._call("GET", f"{page_id}/subscribed_apps", token)[0].get("data") or []
        return [f for app in data for f in app.get("subscribed_fields", [])]

    # -- Facebook Login ----------------------------------------------------------------------

    def exchange_code(self, code: str, redirect_uri: str) -> str:
        """The user access token for an OAuth code (the code works once)."""
        data = self._call(
            "GET",
            "oauth/access_token",
            None,
            params={
                "client_id": self.app_id,
                "client_secret": self._secret.decode(),
                "redirect_uri": redirect_uri,
                "code": code,
            },
        )[0]
        return str(data.get("access_token", ""))

    def long_lived(self, user_token: str) -> str:
        """A 60-day user token; Page tokens derived from it do not expire."""
        data = self._call(
            "GET",
            "oauth/access_token",
            None,
            params={
                "grant_type": "fb_exchange_token",
                "client_id": self.app_id,
                "client_secret": self._secret.decode(),
                "fb_exchange_token": user_token,
            },
        )[0]
        return str(data.get("access_token", ""))

    def accounts(
        self,
        user_token: str,
        limit: int = 100,
        max_pages: int = 20,
        fields: str = "id,name,access_token,tasks",
    ) -> list[dict[str, Any]]:
        """The Pages the user has a role on, with `fields` (all result pages); a re-check of
        roles leaves the Page tokens out."""
        pages: list[dict[str, Any]] = []
        after: str | None = None
        for _ in range(max_pages):
            params = {
                "fields": fields,
                "limit": limit,
                **({"after": after} if after else {}),
            }
            data = self._call("GET", "me/accounts", user_token, params=params)[0]
            pages += [p for p in data.get("data") or [] if isinstance(p, dict) and p.get("id")]
            after = ((data.get("paging") or {}).get("cursors") or {}).get("after")
            if not (data.get("paging") or {}).get("next") or not after:
                break
        return pages

    def ids_for_pages(self, user_id: str, page_id: str, page_token: str) -> list[str]:
        """ID matching: the PSIDs a Facebook Login user has on one of our Pages."""
        data = self._call("GET", f"{user_id}/ids_for_pages", page_token, params={"page": page_id})[
            0
        ]
        return [
            str(row["id"])
            for row in data.get("data") or []
            if isinstance(row, dict) and row.get("id")
        ]

    def debug_token(self, token: str) -> dict[str, Any]:
        """Facebook's view of a token (is_valid, scopes, ...), asked with our app token."""
        app_token = f"{self.app_id}|{self._secret.decode()}"
        return (
            self._call("GET", "debug_token", app_token, params={"input_token": token})[0].get(
                "data"
            )
            or {}
        )

    def send(self, page_id: str, token: str, body: dict[str, Any]) -> SendResult:
        """POST /{page}/messages. A timeout after the request left is ambiguous, not retryable."""
        data, headers = self._call(
            "POST", f"{page_id}/messages", token, json_body=body, idempotent=False
        )
        return SendResult(
            message_id=str(data.get("message_id", "")),
            recipient_id=data.get("recipient_id"),
            usage=page_usage(headers, page_id),
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        token: str | None,
        *,
        params: Mapping[str, object] | None = None,
        json_body: dict[str, Any] | None = None,
        idempotent: bool = True,
    ) -> tuple[dict[str, Any], HTTPHeaderDict]:
        self._fresh_pool_after_fork()
        headers, params, body = (
            {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip"},
            dict(params or {}),
            None,
        )
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
            params["appsecret_proof"] = self._proof(token)
        if json_body is not None:
            headers["Content-Type"] = "application/json"
            body = orjson.dumps(json_body)
        url = f"{self.base}/{path}" + (f"?{urlencode(params)}" if params else "")
        started = time.monotonic()
        try:  # the whole body is read inside urlopen, so a cut-off answer is handled here too
            response = self.pool.urlopen(
                method, url, body=body, headers=headers, redirect=False, timeout=self._timeout
            )
        except (ConnectTimeoutError, ProxyError) as exc:
            # Refused, unresolvable or timed out while connecting: the request never left.
            raise _unreachable(
                f"Facebook could not be reached ({type(exc).__name__})", maybe_sent=False
            ) from None
        except ReadTimeoutError:
            raise _unreachable(
                "Facebook did not answer in time", maybe_sent=not idempotent
            ) from None
        except ValueError as exc:  # UnicodeError and urllib3's LocationValueError too
            # A token or id that cannot even be put in a request (a newline, a non-Latin-1
            # character): http.client refuses it before anything is written.
            raise PermanentError(
                f"the request could not be made ({type(exc).__name__})",
                rule=policy.ErrorRule(policy.FAIL, "invalid_request"),
            ) from None
        except HTTPError as exc:
            if _certificate_refused(exc):  # at the TLS handshake: the request never left
                raise _unreachable(
                    "Facebook's TLS certificate was not trusted", maybe_sent=False
                ) from None
            # Reset, cut off or garbled (ProtocolError, ...): the request may have arrived.
            raise _unreachable(
                f"Facebook's answer could not be read ({type(exc).__name__})",
                maybe_sent=not idempotent,
            ) from None
        finally:
            metrics.observe_graph_call(time.monotonic() - started)
        return self._parse(response, path), response.headers

    def _parse(self, response: urllib3.BaseHTTPResponse, path: str) -> dict[str, Any]:
        status = response.status
        try:
            data = orjson.loads(response.data)
        except ValueError:
            data = None
        if status < 400 and isinstance(data, dict):
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            rule = policy.ErrorRule(
                policy.RETRY if status >= 500 else policy.FAIL,
                "facebook_unavailable" if status >= 500 else "unknown_error",
            )
            raise _CLASS_OF_ACTION[rule.action](
                f"HTTP {status} without an error body", rule=rule, http_status=status
            )
        code, subcode = _int(error.get("code")), _int(error.get("error_subcode"))
        rule = policy.classify(code, subcode, bool(error.get("is_transient")))
        if rule.action == policy.FAIL and status >= 500 and code in (None, 0):
            rule = policy.ErrorRule(policy.RETRY, "facebook_unavailable")
        message = str(error.get("message", ""))[:300]
        log.info(
            "graph %s refused: code=%s subcode=%s fbtrace_id=%s",
            path.split("/")[-1].split("?")[0],
            code,
            subcode,
            error.get("fbtrace_id", ""),
        )
        raise _CLASS_OF_ACTION[rule.action](
            message,
            rule=rule,
            http_status=status,
            code=code,
            subcode=subcode,
            fbtrace_id=str(error.get("fbtrace_id", "")),
            usage=_any_usage(response.headers),
        )

    def _proof(self, token: str) -> str:
        proof = self._proofs.get(token)
        if proof is None:  # the same few Page tokens sign every send: compute each once
            proof = self._proofs[token] = hmac.new(
                self._secret, token.encode(), hashlib.sha256
            ).hexdigest()
            if len(self._proofs) > 10_000:
                self._proofs.clear()
        return proof


class _PoolOptions(TypedDict):
    """urllib3's pool options, as `transport` sets them for both managers."""

    num_pools: int
    maxsize: int
    retries: bool
    ca_certs: str


def transport(base_url: str, pool_size: int) -> urllib3.PoolManager:
    """urllib3's pool, used directly rather than through `requests`: the Graph API sets no
    cookies and sends no redirects, and requests' request preparation and response building
    (URL requoting, cookie extraction, its own header dicts) were a third of a send's client
    CPU. No retries here (a resend is the sender's decision), no redirects followed. An
    HTTP(S)_PROXY from the environment is honoured unless NO_PROXY names the host; certifi's
    CA bundle unless REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE names another (as with requests)."""
    options: _PoolOptions = {
        "num_pools": 4,
        "maxsize": pool_size,
        "retries": False,
        "ca_certs": os.environ.get("REQUESTS_CA_BUNDLE")
        or os.environ.get("CURL_CA_BUNDLE")
        or certifi.where(),
    }
    proxy = environment_proxy(base_url)
    return urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)


def environment_proxy(url: str) -> str | None:
    """The proxy the environment sets for `url` (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY)."""
    parts = urlsplit(url)
    if proxy_bypass_environment(parts.hostname or ""):
        return None
    proxies = getproxies_environment()
    return proxies.get(parts.scheme) or proxies.get("all")


def _unreachable(message: str, maybe_sent: bool) -> GraphError:
    if maybe_sent:
        return AmbiguousError(message, rule=policy.ErrorRule(policy.AMBIGUOUS, "interrupted"))
    return RetryableError(message, rule=policy.ErrorRule(policy.RETRY, "facebook_unavailable"))


def _certificate_refused(exc: HTTPError) -> bool:
    cause = exc.args[0] if exc.args else None
    return isinstance(exc, SSLError) and isinstance(cause, ssl.SSLCertVerificationError)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def page_usage(headers: Mapping[str, str], page_id: str) -> dict[str, int]:
    """This Page's Business Use Case usage (percentages, minutes to regain access), if given."""
    usage = _parse_json_header(headers.get("X-Business-Use-Case-Usage"))
    entries = usage.get(str(page_id)) if isinstance(usage, dict) else None
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        return {}
    entry = entries[0]
    return {
        k: _int(entry.get(k)) or 0
        for k in ("call_count", "total_cputime", "total_time", "estimated_time_to_regain_access")
    }


def _any_usage(headers: Mapping[str, str]) -> dict[str, int]:
    usage = _parse_json_header(headers.get("X-Business-Use-Case-Usage"))
    if isinstance(usage, dict) and len(usage) == 1:
        return page_usage(headers, next(iter(usage)))
    return {}


def _parse_json_header(value: str | None) -> object:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None
