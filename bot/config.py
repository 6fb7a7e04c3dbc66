"""Settings from the environment (and `.env`), validated once at start-up.

Every setting is listed in SETTINGS with its default and meaning; the README's table is written
from the same list. With no Facebook credentials the service runs in sandbox mode: the Graph
client talks to the built-in simulator and development secrets are used, so `make run` works on
a fresh machine. Outside sandbox mode every secret must be given.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import zoneinfo
from datetime import date
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from cryptography.fernet import Fernet

from bot.errors import ConfigError

# name: (default, meaning). A default of None means "required outside sandbox mode".
SETTINGS: dict[str, tuple[str | None, str]] = {
    "REDIS_URL": ("", "Redis for all state and the RQ queues (`redis://`, `rediss://` or `unix://`). "
                      "Unset under `make run`: an embedded redis-server is started with its data in `var/redis/`."),
    "SANDBOX": ("", "`1` talks to the built-in Facebook simulator; `0` talks to Facebook. "
                    "Default: `1` when `FB_APP_ID` is unset."),
    "SECRET_KEY": (None, "Signs sessions and the opt-in refs in opt-in codes. Long and random."),
    "API_TOKEN": (None, "Bearer token of the JSON API (`Authorization: Bearer ...`)."),
    "ADMIN_PASSWORD": (None, "Operator password for the HTML pages."),
    "FB_APP_ID": (None, "Facebook app id."),
    "FB_APP_SECRET": (None, "Facebook app secret: checks webhook signatures and signed requests."),
    "FB_VERIFY_TOKEN": (None, "The Verify Token typed in the App Dashboard for the webhook subscription."),
    "TOKEN_ENCRYPTION_KEY": (None, "Fernet key(s) encrypting Page tokens at rest, comma-separated, newest first "
                                   "(older ones still decrypt: that is how a key is rotated)."),
    "GRAPH_API_URL": ("", "Graph API base URL. Default `https://graph.facebook.com`, or the simulator in sandbox mode."),
    "FB_LOGIN_URL": ("", "Where Facebook Login's dialog lives. Default `https://www.facebook.com`, or the simulator in sandbox mode."),
    "PUBLIC_URL": ("", "The service's public base URL (for Facebook Login's redirect and the data deletion status URL). "
                       "Default: taken from each request."),
    "SESSION_COOKIE_SECURE": ("", "`1` sends the sign-in cookie over HTTPS only. Default: `1` outside sandbox mode."),
    "GRAPH_API_VERSION": ("v26.0", "Graph API version used on every call."),
    "GRAPH_TIMEOUT_SECONDS": ("10", "Read timeout of one Graph API call (connect timeout is 3 s)."),
    "STATS_TIMEZONE": ("UTC", "Time zone whose calendar days the statistics use."),
    "WEBHOOK_MAX_BYTES": ("1048576", "Largest webhook body accepted; larger gets 413."),
    "RECEIPT_CLOCK_SKEW_MS": ("1000", "Tolerance between our send time and Facebook's receipt watermark."),
    "SEND_RATE_PER_PAGE": ("20", "Messages per second per Page, shared by all workers (Facebook's inbox breaks above ~40)."),
    "SEND_CONCURRENCY": ("16", "Sends in flight at once per worker process."),
    "SEND_PAGES_PER_WORKER": ("32", "Batches of different Pages one worker sends at once (sharing SEND_CONCURRENCY; twice it keeps threads from waiting on one Page's pace)."),
    "SEND_MAX_ATTEMPTS": ("4", "Attempts per contact on transient Facebook errors before `failed`."),
    "RUN_BATCH_SIZE": ("200", "Contacts per RQ job of a node run."),
    "RUN_PARALLEL_BATCHES": ("1", "Batches of one run processed at once (one Page's rate is shared anyway)."),
    "UNKNOWN_DEADLINE_SECONDS": ("900", "How long a send whose answer was lost waits for Facebook's echo before `failed`/`interrupted`."),
    "RUN_LEASE_SECONDS": ("15", "A batch whose worker stopped renewing its lease this long is resumed by another worker."),
    "PROFILE_CHECK_MINUTES": ("60", "How often every profile's token and webhook subscription are checked."),
    "ROW_RETENTION_DAYS": ("90", "How long the per-contact rows behind the statistics are kept (the counters stay until the profile is deleted)."),
    "RUN_RETENTION_DAYS": ("30", "How long a run's per-contact outcomes stay readable through the API."),
    "TAG_RETIREMENT_DATE": ("2026-04-27", "Day Meta stopped accepting the three message tags; before it, nodes send tagged messages."),
    "SANDBOX_PORT": ("8001", "Port of the Facebook simulator in sandbox mode."),
    "PORT": ("8000", "Port the web process listens on."),
    "LOG_LEVEL": ("INFO", "Log level of web and worker processes."),
}
# Read by gunicorn.conf.py and `make run` only; listed here so the README documents them too.
PROCESS_SETTINGS: dict[str, tuple[str, str]] = {
    "HOST": ("127.0.0.1", "Interface the web process binds (`0.0.0.0` behind a load balancer)."),
    "WEB_CONCURRENCY": ("CPUs + 1", "gunicorn worker processes."),
    "WEB_THREADS": ("8", "Threads per gunicorn worker."),
    "WEB_MAX_REQUESTS": ("100000", "Requests after which a gunicorn worker is replaced (0: never)."),
    "VAR_DIR": ("var", "Where `make run` keeps the embedded Redis data (`<VAR_DIR>/redis`)."),
}

_SANDBOX_DEFAULTS = {
    "SECRET_KEY": "sandbox-secret-key-not-for-production",
    "API_TOKEN": "sandbox-api-token",
    "ADMIN_PASSWORD": "sandbox",
    "FB_APP_ID": "100000000000001",
    "FB_APP_SECRET": "sandbox-app-secret",
    "FB_VERIFY_TOKEN": "sandbox-verify-token",
}
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    """Validated configuration; build it with `Settings.from_env`."""

    redis_url: str
    sandbox: bool
    secret_key: str
    api_token: str
    admin_password: str
    fb_app_id: str
    fb_app_secret: str
    fb_verify_token: str
    token_encryption_keys: tuple[str, ...]
    graph_api_url: str
    fb_login_url: str
    public_url: str
    session_cookie_secure: bool
    graph_api_version: str
    graph_timeout_seconds: float
    stats_timezone: str
    webhook_max_bytes: int
    receipt_clock_skew_ms: int
    send_rate_per_page: float
    send_concurrency: int
    send_pages_per_worker: int
    send_max_attempts: int
    run_batch_size: int
    run_parallel_batches: int
    unknown_deadline_seconds: int
    run_lease_seconds: int
    run_retention_days: int
    row_retention_days: int
    profile_check_minutes: int
    tag_retirement_date: date
    sandbox_port: int
    port: int
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> "Settings":
        """Read and validate settings; raise ConfigError listing every problem at once."""
        env = dict(os.environ if environ is None else environ)
        if dotenv and environ is None:
            env = {**read_dotenv(Path.cwd() / ".env"), **env}
        return _Parser(env).settings()

    def public_summary(self) -> dict[str, str]:
        """Settings safe to log: secrets are never included."""
        secret = {"secret_key", "api_token", "admin_password", "fb_app_secret", "fb_verify_token",
                  "token_encryption_keys"}
        return {f.name: str(getattr(self, f.name)) for f in fields(self) if f.name not in secret}


class _Parser:
    """Collects one message per missing or malformed setting."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str:
        return self.env.get(name, "").strip()

    def settings(self) -> Settings:
        sandbox = self.flag("SANDBOX", default=not self.raw("FB_APP_ID"))
        secrets = {name: self.secret(name, sandbox) for name in _SANDBOX_DEFAULTS}
        graph_url = self.graph_url(sandbox)
        values = dict(
            redis_url=self.redis_url(),
            sandbox=sandbox,
            secret_key=secrets["SECRET_KEY"],
            api_token=secrets["API_TOKEN"],
            admin_password=secrets["ADMIN_PASSWORD"],
            fb_app_id=secrets["FB_APP_ID"],
            fb_app_secret=secrets["FB_APP_SECRET"],
            fb_verify_token=secrets["FB_VERIFY_TOKEN"],
            token_encryption_keys=self.fernet_keys(sandbox, secrets["SECRET_KEY"]),
            graph_api_url=graph_url,
            fb_login_url=self.url_or("FB_LOGIN_URL", graph_url if sandbox else "https://www.facebook.com"),
            public_url=self.url_or("PUBLIC_URL", ""),
            session_cookie_secure=self.flag("SESSION_COOKIE_SECURE", default=not sandbox),
            graph_api_version=self.pattern("GRAPH_API_VERSION", r"v\d+\.\d+", "like v26.0"),
            graph_timeout_seconds=float(self.integer("GRAPH_TIMEOUT_SECONDS", 1, 120)),
            stats_timezone=self.timezone("STATS_TIMEZONE"),
            webhook_max_bytes=self.integer("WEBHOOK_MAX_BYTES", 1024, 50 * 1024 * 1024),
            receipt_clock_skew_ms=self.integer("RECEIPT_CLOCK_SKEW_MS", 0, 600_000),
            send_rate_per_page=float(self.integer("SEND_RATE_PER_PAGE", 1, 10_000)),
            send_concurrency=self.integer("SEND_CONCURRENCY", 1, 128),
            send_pages_per_worker=self.integer("SEND_PAGES_PER_WORKER", 1, 256),
            send_max_attempts=self.integer("SEND_MAX_ATTEMPTS", 1, 10),
            run_batch_size=self.integer("RUN_BATCH_SIZE", 1, 10_000),
            run_parallel_batches=self.integer("RUN_PARALLEL_BATCHES", 1, 64),
            unknown_deadline_seconds=self.integer("UNKNOWN_DEADLINE_SECONDS", 1, 7 * 86400),
            run_lease_seconds=self.integer("RUN_LEASE_SECONDS", 2, 600),
            run_retention_days=self.integer("RUN_RETENTION_DAYS", 1, 3650),
            row_retention_days=self.integer("ROW_RETENTION_DAYS", 1, 3650),
            profile_check_minutes=self.integer("PROFILE_CHECK_MINUTES", 1, 7 * 24 * 60),
            tag_retirement_date=self.date("TAG_RETIREMENT_DATE"),
            sandbox_port=self.integer("SANDBOX_PORT", 1, 65535),
            port=self.integer("PORT", 1, 65535),
            log_level=self.choice("LOG_LEVEL", {"DEBUG", "INFO", "WARNING", "ERROR"}),
        )
        if self.problems:
            raise ConfigError(self.problems)
        return Settings(**values)

    def value(self, name: str) -> str:
        return self.raw(name) or (SETTINGS[name][0] or "")

    def flag(self, name: str, default: bool) -> bool:
        text = self.raw(name).lower()
        if not text:
            return default
        if text in _TRUE | _FALSE:
            return text in _TRUE
        self.problems.append(f"{name} must be 1 or 0 (got {text!r})")
        return default

    def secret(self, name: str, sandbox: bool) -> str:
        text = self.raw(name)
        if text:
            return text
        if sandbox:
            return _SANDBOX_DEFAULTS[name]
        self.problems.append(f"{name} is not set: {SETTINGS[name][1]}")
        return ""

    def redis_url(self) -> str:
        url = self.raw("REDIS_URL")
        if not url:
            self.problems.append("REDIS_URL is not set: point it at your Redis, or start the service "
                                 "with `make run`, which starts an embedded Redis and sets it")
        elif not url.startswith(_REDIS_SCHEMES):
            self.problems.append(f"REDIS_URL must start with redis://, rediss:// or unix:// (got {url!r})")
        return url

    def fernet_keys(self, sandbox: bool, secret_key: str) -> tuple[str, ...]:
        text = self.raw("TOKEN_ENCRYPTION_KEY")
        if not text:
            if sandbox:  # a development key derived from the (development) secret key
                return (base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest()).decode(),)
            self.problems.append("TOKEN_ENCRYPTION_KEY is not set: generate one with "
                                 "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`")
            return ()
        keys = tuple(k.strip() for k in text.split(",") if k.strip())
        for position, key in enumerate(keys, 1):
            try:
                Fernet(key)
            except ValueError:
                self.problems.append(f"TOKEN_ENCRYPTION_KEY key #{position} is not a Fernet key "
                                     "(32 url-safe base64-encoded bytes)")
        return keys

    def graph_url(self, sandbox: bool) -> str:
        url = self.raw("GRAPH_API_URL")
        if not url:
            port = self.value("SANDBOX_PORT")
            return f"http://127.0.0.1:{port}" if sandbox else "https://graph.facebook.com"
        if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", url):
            self.problems.append(f"GRAPH_API_URL must be an http(s) URL (got {url!r})")
        return url.rstrip("/")

    def url_or(self, name: str, default: str) -> str:
        url = self.raw(name)
        if not url:
            return default
        if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", url):
            self.problems.append(f"{name} must be an http(s) URL (got {url!r})")
        return url.rstrip("/")

    def pattern(self, name: str, regex: str, hint: str) -> str:
        text = self.value(name)
        if not re.fullmatch(regex, text):
            self.problems.append(f"{name} must be {hint} (got {text!r})")
        return text

    def integer(self, name: str, low: int, high: int) -> int:
        text = self.value(name)
        try:
            number = int(text)
        except ValueError:
            self.problems.append(f"{name} must be a whole number (got {text!r})")
            return low
        if not low <= number <= high:
            self.problems.append(f"{name} must be between {low} and {high} (got {number})")
        return number

    def date(self, name: str) -> date:
        text = self.value(name)
        try:
            return date.fromisoformat(text)
        except ValueError:
            self.problems.append(f"{name} must be a date like 2026-04-27 (got {text!r})")
            return date(2026, 4, 27)

    def timezone(self, name: str) -> str:
        text = self.value(name)
        try:
            zoneinfo.ZoneInfo(text)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.problems.append(f"{name} must be an IANA time zone such as Europe/Paris (got {text!r})")
            return "UTC"
        return text

    def choice(self, name: str, allowed: set[str]) -> str:
        text = self.value(name).upper()
        if text not in allowed:
            self.problems.append(f"{name} must be one of {', '.join(sorted(allowed))} (got {text!r})")
        return text


def read_dotenv(path: Path) -> dict[str, str]:
    """Values from a `.env` file; the real environment wins over them."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def settings_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings for a process entry point; on bad configuration, print why and exit 1."""
    import sys
    try:
        return Settings.from_env(environ)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
