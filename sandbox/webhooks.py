"""Deliver signed webhooks to the configured URL, with Facebook-like retries and a log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import requests

from sandbox import events
from sandbox.scheduler import Scheduler
from sandbox.state import State

BAD_SECRET = "not-the-app-secret"
log = logging.getLogger(__name__)


def signature_override(body: bytes, mode: str | None) -> str | None:
    """Return the header to send for a test mode: "bad" signs wrongly, "missing" sends none."""
    if mode is None:
        return None
    if mode == "bad":
        return events.sign(body, BAD_SECRET)
    if mode == "missing":
        return ""
    return mode


def _ok(status: int | None) -> bool:
    """Tell whether Facebook would count this answer as delivered."""
    return status is not None and 200 <= status < 300


class WebhookSender:
    """Post payloads now (control API) or later (echoes, receipts) and log every attempt."""

    def __init__(self, state: State, scheduler: Scheduler) -> None:
        self.state = state
        self.scheduler = scheduler
        # Used only from the scheduler thread, so keep-alive works without locking.
        self.session = requests.Session()

    def attempt(
        self,
        kind: str,
        payload: dict[str, Any],
        session: requests.Session,
        attempt: int = 1,
        signature: str | None = None,
    ) -> int | None:
        """POST once, log it, and return the HTTP status (None if nothing answered)."""
        url = self.state.cfg("webhook_url")
        body = events.encode(payload)
        entry: dict[str, Any] = {
            "kind": kind,
            "body": body.decode("ascii"),
            "status": None,
            "attempt": attempt,
            "at_ms": self.state.now_ms(),
            "page_id": payload["entry"][0]["id"],
        }
        if not url:
            entry["error"] = "webhook_url is not configured"
            self.state.log_webhook(entry)
            return None
        try:
            response = events.post_webhook(
                url,
                payload,
                self.state.cfg("app_secret"),
                session,
                signature=signature_override(body, signature),
                timeout=float(self.state.cfg("webhook_timeout_s")),
            )
            entry["status"] = response.status_code
            response.close()
        except requests.RequestException as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        if not _ok(entry["status"]):
            # One line per failure so a demo shows why the service saw no receipt.
            log.warning(
                "webhook %s attempt %d to %s failed: %s",
                kind,
                attempt,
                url,
                entry["status"] or entry.get("error"),
            )
        self.state.log_webhook(entry)
        return entry["status"]

    def deliver_now(
        self, kind: str, payload: dict[str, Any], signature: str | None = None
    ) -> int | None:
        """POST with retries in the calling thread and return the final status."""
        retries = int(self.state.cfg("webhook_retries"))
        status = None
        with requests.Session() as session:
            for attempt in range(1, retries + 2):
                status = self.attempt(kind, payload, session, attempt, signature)
                if _ok(status) or not self.state.cfg("webhook_url") or attempt > retries:
                    break
                time.sleep(int(self.state.cfg("webhook_retry_delay_ms")) / 1000)
        return status

    def deliver_later(
        self, kind: str, build: Callable[[], dict[str, Any]], delay_ms: int = 0
    ) -> None:
        """Build the payload when due (its timestamps are then current) and POST it."""
        self.scheduler.schedule(delay_ms / 1000, lambda: self._run(kind, build(), 1))

    def _run(self, kind: str, payload: dict[str, Any], attempt: int) -> None:
        """Make one scheduled attempt; schedule the retry of the same body if it failed."""
        status = self.attempt(kind, payload, self.session, attempt)
        if _ok(status) or not self.state.cfg("webhook_url"):
            return
        if attempt <= int(self.state.cfg("webhook_retries")):
            delay_s = int(self.state.cfg("webhook_retry_delay_ms")) / 1000
            self.scheduler.schedule(delay_s, lambda: self._run(kind, payload, attempt + 1))

    def close(self) -> None:
        """Release the keep-alive connections."""
        self.session.close()


class Runtime:
    """What the Flask app needs at request time: state, scheduler and webhook sender."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.scheduler = Scheduler()
        self.webhooks = WebhookSender(state, self.scheduler)

    def reset(self, keep_config: bool = False) -> None:
        """Drop pending webhooks and forget the state."""
        self.scheduler.clear()
        self.state.reset(keep_config=keep_config)

    def close(self) -> None:
        """Stop the scheduler thread and close connections."""
        self.scheduler.stop()
        self.webhooks.close()
