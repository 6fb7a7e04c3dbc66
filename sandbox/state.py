"""In-memory state of the Facebook simulator: app, pages, people, logs, faults and config.

Everything sits behind one re-entrant lock so request threads and the receipt scheduler never
see half-written records. Ids come from counters, so a fresh (or reset) simulator hands out the
same ids in the same order and tests stay deterministic.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import secrets
import threading
import time
from typing import Any

DEFAULT_APP_ID = "100000000000001"
DEFAULT_APP_SECRET = "sandbox-app-secret"
PAGE_ID_BASE = 104857600000000  # 15 digits, like real Page ids
PSID_BASE = 6543210987600000  # 16 digits, like real PSIDs
TEMPLATE_ID_BASE = 102295129340000
USER_ID_BASE = 10160000000000000  # 17 digits, like app-scoped user ids from Login
DEFAULT_CATEGORY = "Local business"
DAY_MS = 24 * 3600 * 1000

DEFAULT_CONFIG: dict[str, Any] = {
    "app_id": DEFAULT_APP_ID,
    "app_secret": DEFAULT_APP_SECRET,
    "webhook_url": None,
    "latency_ms": 0,
    "tags_retired_on": "2026-04-27",
    "today": None,
    "delivery_delay_ms": 200,
    "read_delay_ms": 1000,
    "delivery_mids": True,
    "echo": True,
    "page_rate_limit": None,
    "clock_offset_ms": 0,
    "webhook_retries": 3,
    "webhook_retry_delay_ms": 500,
    "webhook_timeout_s": 10.0,
    "seed": None,
}
RECEIPTS = ("none", "delivery", "read")


class ConfigError(ValueError):
    """A config key or value the simulator does not understand."""


def check_config(updates: dict[str, Any]) -> dict[str, Any]:
    """Return validated config updates or raise ConfigError naming the bad key."""
    unknown = sorted(set(updates) - set(DEFAULT_CONFIG))
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
    for key in ("tags_retired_on", "today"):
        value = updates.get(key)
        if value is not None and key in updates:
            try:
                dt.date.fromisoformat(str(value))
            except ValueError as exc:
                raise ConfigError(f"{key} must be YYYY-MM-DD or null") from exc
    for key in ("latency_ms", "clock_offset_ms", "webhook_retries", "webhook_retry_delay_ms"):
        if key in updates and not isinstance(updates[key], int):
            raise ConfigError(f"{key} must be an integer")
    for key in ("delivery_delay_ms", "read_delay_ms", "page_rate_limit", "seed"):
        if updates.get(key) is not None and not isinstance(updates[key], int):
            raise ConfigError(f"{key} must be an integer or null")
    return dict(updates)


def random_token() -> str:
    """Return a Page token that can never be mistaken for a real one (real ones start EAA)."""
    return "sbx-page-" + secrets.token_urlsafe(24)


def random_mid() -> str:
    """Return a message id shaped like Facebook's (m_ + url-safe characters)."""
    return "m_" + secrets.token_urlsafe(30)


class State:
    """All simulator data; take `state.lock` around any read-modify-write."""

    def __init__(self, **config: Any) -> None:
        self.lock = threading.RLock()
        self.initial_config = {**DEFAULT_CONFIG, **check_config(config)}
        self.reset(keep_config=False)

    def reset(self, keep_config: bool = False) -> None:
        """Forget pages, people, logs and faults; restore the creation config unless kept."""
        with self.lock:
            if not keep_config:
                self.config = copy.deepcopy(self.initial_config)
            self.pages: dict[str, dict[str, Any]] = {}
            self.tokens: dict[str, str] = {}  # token -> page id
            self.people: dict[str, dict[str, dict[str, Any]]] = {}  # page -> psid -> person
            self.user_refs: dict[str, dict[str, dict[str, Any]]] = {}  # page -> ref -> info
            self.sends: list[dict[str, Any]] = []
            self.webhooks: list[dict[str, Any]] = []
            self.faults: list[dict[str, Any]] = []
            self.rates: dict[str, dict[int, int]] = {}  # page -> epoch second -> accepted
            self.window_calls: dict[str, tuple[int, int]] = {}  # page -> (second, calls)
            # Facebook Login (sandbox/users.py and sandbox/tokens.py work on these).
            self.users: dict[str, dict[str, Any]] = {}  # app-scoped id -> user
            self.codes: dict[str, dict[str, Any]] = {}  # one-time code -> grant
            self.user_tokens: dict[str, dict[str, Any]] = {}  # token -> user token record
            self.dead_tokens: dict[str, dict[str, Any]] = {}  # retired page token -> why
            self.auto_login: str | None = None  # user the OAuth dialog logs in at once
            self.counters = {
                "page": 0,
                "psid": 0,
                "template": 0,
                "fault": 0,
                "user_ref": 0,
                "user": 0,
            }
            self.rng = random.Random(self.config["seed"])

    # -- config and clock ------------------------------------------------------------------
    def configure(self, updates: dict[str, Any]) -> dict[str, Any]:
        """Merge validated updates into the config and return the whole config."""
        updates = check_config(updates)
        with self.lock:
            self.config.update(updates)
            if "seed" in updates:
                self.rng = random.Random(updates["seed"])
            return dict(self.config)

    def cfg(self, key: str) -> Any:
        """Return one config value."""
        with self.lock:
            return self.config[key]

    def now_ms(self) -> int:
        """Return the simulator's clock: real time shifted by clock_offset_ms."""
        return int(time.time() * 1000) + int(self.cfg("clock_offset_ms"))

    def today(self) -> dt.date:
        """Return the date used for tag retirement (config `today`, else the simulator's date)."""
        forced = self.cfg("today")
        if forced:
            return dt.date.fromisoformat(forced)
        return dt.datetime.fromtimestamp(self.now_ms() / 1000, dt.UTC).date()

    def next_id(self, kind: str, base: int = 0) -> str:
        """Return the next id of a kind as a digit string."""
        with self.lock:
            self.counters[kind] += 1
            return str(base + self.counters[kind])

    # -- pages -----------------------------------------------------------------------------
    def add_page(
        self,
        name: str,
        page_id: str | None = None,
        token: str | None = None,
        category: str | None = None,
    ) -> dict:
        """Create a Page with a fresh token (or the given one) and return it."""
        with self.lock:
            if not page_id:
                # Skip ids given explicitly earlier (a seed file's), so generated ones never clash.
                page_id = self.next_id("page", PAGE_ID_BASE)
                while page_id in self.pages:
                    page_id = self.next_id("page", PAGE_ID_BASE)
            page_id = str(page_id)
            if page_id in self.pages:
                raise ValueError(f"page {page_id} already exists")
            token = token or random_token()
            if token in self.tokens or token in self.dead_tokens:
                raise ValueError("token already used by another page")
            # `sponsors`: users whose login handed this token out; `invalid`: why it died.
            self.pages[page_id] = {
                "id": page_id,
                "name": name,
                "category": category or DEFAULT_CATEGORY,
                "token": token,
                "valid": True,
                "invalid": None,
                "sponsors": [],
                "subscribed_fields": [],
                "templates": {},
                "usage_percent": None,
                "regain_minutes": 0,
            }
            self.tokens[token] = page_id
            self.people[page_id] = {}
            self.user_refs[page_id] = {}
            return dict(self.pages[page_id])

    def page(self, page_id: str) -> dict[str, Any] | None:
        """Return the live page record or None."""
        with self.lock:
            return self.pages.get(page_id)

    def page_for_token(self, token: str | None) -> tuple[dict[str, Any] | None, bool]:
        """Return (page, known) for a token; page is None unless the token is valid."""
        with self.lock:
            page_id = self.tokens.get(token or "")
            if page_id is None:
                return None, (token or "") in self.dead_tokens
            page = self.pages[page_id]
            return (page if page["valid"] else None), True

    def add_template(
        self, page_id: str, name: str, language: str, param_count: int, status: str = "APPROVED"
    ) -> dict[str, Any]:
        """Register a utility template for a Page and return it."""
        with self.lock:
            template = {
                "id": self.next_id("template", TEMPLATE_ID_BASE),
                "name": name,
                "language": language,
                "param_count": int(param_count),
                "status": status,
                "category": "UTILITY",
            }
            self.pages[page_id]["templates"][(name, language)] = template
            return dict(template)

    # -- people ----------------------------------------------------------------------------
    def add_person(
        self,
        page_id: str,
        psid: str | None = None,
        last_interaction_ms: int | None = None,
        receipts: str = "read",
        user_ref: str | None = None,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """Create (or update) a person of a Page and return the record. `user_id` is the same
        human's app-scoped id (Facebook Login), for the ID matching API."""
        if receipts not in RECEIPTS:
            raise ValueError(f"receipts must be one of {', '.join(RECEIPTS)}")
        with self.lock:
            psid = str(psid) if psid else self.next_id("psid", PSID_BASE)
            person = self.people[page_id].setdefault(psid, {"psid": psid})
            person.update(
                last_interaction_ms=last_interaction_ms,
                receipts=receipts,
                user_ref=user_ref,
                user_id=user_id,
            )
            if user_ref:
                info = self.user_refs[page_id].setdefault(user_ref, {"opted_in_ms": None})
                info["psid"] = psid
            return dict(person)

    def person(self, page_id: str, psid: str, create: bool = False) -> dict[str, Any] | None:
        """Return the live person record, creating it on demand."""
        with self.lock:
            people = self.people.get(page_id, {})
            if psid not in people and create:
                return self.people[page_id].setdefault(
                    psid,
                    {
                        "psid": psid,
                        "last_interaction_ms": None,
                        "receipts": "read",
                        "user_ref": None,
                    },
                )
            return people.get(psid)

    def touch(self, page_id: str, psid: str, timestamp: int) -> None:
        """Record a user action: it (re)opens the 24-hour window."""
        with self.lock:
            person = self.person(page_id, psid, create=True)
            last = person.get("last_interaction_ms")
            person["last_interaction_ms"] = timestamp if last is None else max(last, timestamp)

    def register_user_ref(self, page_id: str, user_ref: str, timestamp: int) -> None:
        """Remember a checkbox opt-in's user_ref so sends to it are accepted."""
        with self.lock:
            info = self.user_refs[page_id].setdefault(user_ref, {"psid": None})
            info["opted_in_ms"] = timestamp

    def last_send_to(self, page_id: str, psid: str) -> dict[str, Any] | None:
        """Return the newest accepted send to a PSID (for default receipt watermarks)."""
        with self.lock:
            for send in reversed(self.sends):
                if (
                    send["page_id"] == page_id
                    and send["status"] == "accepted"
                    and send["recipient"].get("id") == psid
                ):
                    return send
            return None

    # -- logs ------------------------------------------------------------------------------
    def log_send(self, entry: dict[str, Any]) -> None:
        """Append one /messages request to the sends log."""
        with self.lock:
            self.sends.append(entry)

    def log_webhook(self, entry: dict[str, Any]) -> None:
        """Append one webhook delivery attempt to the log."""
        with self.lock:
            self.webhooks.append(entry)

    def count_call(self, page_id: str, second: int) -> int:
        """Count a /messages call in the page's current 1-second window and return the count."""
        with self.lock:
            window, calls = self.window_calls.get(page_id, (second, 0))
            calls = calls + 1 if window == second else 1
            self.window_calls[page_id] = (second, calls)
            return calls

    def count_accepted(self, page_id: str, second: int) -> None:
        """Count an accepted send in its wall-clock second (benchmarks check pacing with it)."""
        with self.lock:
            per_second = self.rates.setdefault(page_id, {})
            per_second[second] = per_second.get(second, 0) + 1
