"""Settings from the environment (and `.env`), validated once at start-up.

Each setting is declared once, as a field of `Settings`: its environment variable (the field's
name in capitals), type, default, meaning and parser. `SETTINGS` lists them by name and the
README's configuration table is `settings_table()` (tests/test_readme.py keeps the two equal).
With no Facebook credentials the service runs in sandbox mode: the Graph client talks to the
built-in simulator and development secrets are used, so `make run` works on a fresh machine.
Outside sandbox mode every secret must be given.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import sys
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from dotenv import dotenv_values

from bot.errors import ConfigError

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_HTTP_URL = re.compile(r"https?://[^\s/]+(/[^\s]*)?")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_FACEBOOK_GRAPH, _FACEBOOK_WWW = "https://graph.facebook.com", "https://www.facebook.com"
_SANDBOX_CALLBACK_SECRET = "sandbox-callback-secret"


class _Invalid(ValueError):
    """A value a parser refuses; each reason is reported on its own line after the setting name."""

    def __init__(self, *reasons: str):
        super().__init__(*reasons)
        self.reasons = reasons


Parse = Callable[[str], Any]
Derive = Callable[["_Reader"], "str | None"]


@dataclass(frozen=True)
class Setting:
    """One setting: how its text is read, its default and what the README says of it."""

    meaning: str
    default: (
        str | Derive | None
    )  # the text used when unset, or computed from earlier settings; None: required
    parse: Parse = str  # text -> value; raises _Invalid
    shown: str = ""  # the README's default column when the default is not a plain value
    missing: str = ""  # what to do when required and unset (default: the meaning)
    secret: bool = False  # left out of logs
    name: str = ""  # the environment variable; from the field's name unless given
    attribute: str = ""  # the `Settings` field; filled in from the declaration

    def __post_init__(self) -> None:
        if callable(self.default) and not self.shown:
            raise TypeError(f"{self.name or self.meaning!r}: a computed default needs `shown`")

    def default_cell(self) -> str:
        """The default as the README's table shows it."""
        if self.shown:
            return self.shown
        if self.default is None:
            return "required"
        return f"`{self.default}`" if self.default else "—"


def _setting(
    meaning: str,
    default: str | Derive | None,
    parse: Parse = str,
    *,
    shown: str = "",
    missing: str = "",
    secret: bool = False,
    name: str = "",
) -> Any:
    """A `Settings` field declaring one setting."""
    return field(
        metadata={"setting": Setting(meaning, default, parse, shown, missing, secret, name)}
    )


def _sandbox_default(meaning: str, value: str, *, secret: bool = True) -> Any:
    """A setting required outside sandbox mode, with a development value in it."""
    return _setting(
        meaning,
        lambda r: value if r.value("SANDBOX") else None,
        secret=secret,
        shown=f"required outside sandbox (sandbox: `{value}`)",
    )


# -- parsers: text -> value, or _Invalid with the reason -------------------------------------------


def _flag(text: str) -> bool:
    text = text.lower()
    if text not in _TRUE | _FALSE:
        raise _Invalid(f"must be 1 or 0 (got {text!r})")
    return text in _TRUE


def _url(text: str) -> str:
    if text and not _HTTP_URL.fullmatch(text):
        raise _Invalid(f"must be an http(s) URL (got {text!r})")
    return text.rstrip("/")


def _redis_url(text: str) -> str:
    if not text.startswith(_REDIS_SCHEMES):
        raise _Invalid(f"must start with redis://, rediss:// or unix:// (got {text!r})")
    return text


def _fernet_keys(text: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [
        f"key #{position} is not a Fernet key (32 url-safe base64-encoded bytes)"
        for position, key in enumerate(keys, 1)
        if not _is_fernet_key(key)
    ]
    if bad or not keys:
        raise _Invalid(*(bad or ["must list at least one Fernet key"]))
    return keys


def _is_fernet_key(key: str) -> bool:
    try:
        Fernet(key)
    except ValueError:
        return False
    return True


def _integer(low: int, high: int) -> Parse:
    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise _Invalid(f"must be a whole number (got {text!r})") from None
        if not low <= number <= high:
            raise _Invalid(f"must be between {low} and {high} (got {number})")
        return number

    return parse


def _whole_float(low: int, high: int) -> Parse:
    whole = _integer(low, high)
    return lambda text: float(whole(text))


def _pattern(regex: str, hint: str) -> Parse:
    def parse(text: str) -> str:
        if not re.fullmatch(regex, text):
            raise _Invalid(f"must be {hint} (got {text!r})")
        return text

    return parse


def _choice(*allowed: str) -> Parse:
    def parse(text: str) -> str:
        text = text.upper()
        if text not in allowed:
            raise _Invalid(f"must be one of {', '.join(sorted(allowed))} (got {text!r})")
        return text

    return parse


def _timezone(text: str) -> str:
    try:
        zoneinfo.ZoneInfo(text)
    except (
        zoneinfo.ZoneInfoNotFoundError,
        ValueError,
        OSError,
    ):  # OSError: "Europe" is a directory
        raise _Invalid(f"must be an IANA time zone such as Europe/Paris (got {text!r})") from None
    return text


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _Invalid(f"must be a date like 2026-04-27 (got {text!r})") from None


# -- defaults computed from settings declared before them ------------------------------------------


def _sandbox_by_credentials(r: _Reader) -> str:
    return "0" if r.raw("FB_APP_ID") else "1"


def _development_key(r: _Reader) -> str | None:
    """Sandbox: a key derived from the (development) secret key, so it is the same every start."""
    if not r.value("SANDBOX"):
        return None
    return base64.urlsafe_b64encode(
        hashlib.sha256(r.value("SECRET_KEY").encode()).digest()
    ).decode()


def _graph_url(r: _Reader) -> str:
    return f"http://127.0.0.1:{r.value('SANDBOX_PORT')}" if r.value("SANDBOX") else _FACEBOOK_GRAPH


def _login_url(r: _Reader) -> str:
    return r.value("GRAPH_API_URL") if r.value("SANDBOX") else _FACEBOOK_WWW


def _secure_cookie(r: _Reader) -> str:
    return "0" if r.value("SANDBOX") else "1"


def _callback_secret(r: _Reader) -> str:
    """Sandbox: a development secret; outside it none (required only once a run asks for a
    callback: bot/callbacks.py refuses the run then)."""
    return _SANDBOX_CALLBACK_SECRET if r.value("SANDBOX") else ""


def _allow_private(r: _Reader) -> str:
    return "1" if r.value("SANDBOX") else "0"


# -- Redis through Sentinel ------------------------------------------------------------------------


def _url_unless_sentinels(r: _Reader) -> str | None:
    """With sentinels REDIS_URL gives only the database, password and TLS: none of them needed."""
    return "redis://" if r.raw("REDIS_SENTINELS") else None


def _sentinels_if_named(r: _Reader) -> str | None:
    """Required (None) when a master name is given: that name means Sentinel was meant."""
    return None if r.raw("REDIS_SENTINEL_MASTER_NAME") else ""


def _host_ports(text: str) -> tuple[tuple[str, int], ...]:
    pairs = [item.strip().rpartition(":") for item in text.split(",") if item.strip()]
    bad = [
        f"{host}{sep}{port}"
        for host, sep, port in pairs
        if not (host and port.isdecimal() and 1 <= int(port) <= 65535)
    ]
    if bad:
        raise _Invalid(
            "must be host:port pairs separated by commas, such as "
            f"sentinel-1:26379,sentinel-2:26379 (got {', '.join(map(repr, bad))})"
        )
    return tuple((host.strip("[]"), int(port)) for host, _, port in pairs)


@dataclass(frozen=True)
class Settings:
    """Validated configuration; build it with `Settings.from_env`.

    Fields are read in this order (a computed default uses settings above it) and the README's
    table lists them in it."""

    redis_url: str = _setting(
        "Redis for all state and the RQ queues (`redis://`, `rediss://` or `unix://`). "
        "Unset under `make run`: an embedded redis-server is started with its data in "
        "`var/redis/`. With REDIS_SENTINELS only its database number, user name, password "
        "and `rediss://` (TLS) apply, to the primary the sentinels name.",
        _url_unless_sentinels,
        _redis_url,
        shown="required unless `REDIS_SENTINELS` is set",
        missing="point it at your Redis, or start the service with `make run`, "
        "which starts an embedded Redis and sets it",
    )
    redis_sentinels: tuple[tuple[str, int], ...] = _setting(
        "Redis Sentinel: the sentinels (`host:port`, comma-separated) asked where the primary "
        "is; each new connection asks again, so web and workers follow a failover without a "
        "restart.",
        _sentinels_if_named,
        _host_ports,
        shown="— (a single Redis at `REDIS_URL`)",
        missing="list the sentinels (host:port, comma-separated) that watch "
        "REDIS_SENTINEL_MASTER_NAME, or unset that",
    )
    redis_sentinel_master_name: str = _setting(
        "The name the sentinels know the primary by (`sentinel monitor <name> ...`).",
        lambda r: None if r.raw("REDIS_SENTINELS") else "",  # given, even if malformed
        shown="required with `REDIS_SENTINELS`",
        missing="the name your sentinels monitor the primary under "
        "(`sentinel monitor <name> <host> <port> <quorum>`)",
    )
    redis_sentinel_password: str = _setting(
        "Password of the sentinels themselves (their `requirepass`); the primary's is REDIS_URL's.",
        "",
        secret=True,
    )
    webhook_replica_wait_ms: int = _setting(
        "Before answering 200 to a webhook, wait up to this long for a replica to have it "
        "(`WAIT 1`), so a failover cannot lose a webhook Facebook will not send again; 0: "
        "answer once the primary has it. Off for 10 s after a wait that timed out (no replica).",
        lambda r: "100" if r.value("REDIS_SENTINELS") else "0",  # Sentinel: there are replicas
        _integer(0, 1000),
        shown="`100` with `REDIS_SENTINELS`, else `0`",
    )
    sandbox: bool = _setting(
        "`1` talks to the built-in Facebook simulator; `0` talks to Facebook.",
        _sandbox_by_credentials,
        _flag,
        shown="`1` when `FB_APP_ID` is unset, else `0`",
    )
    sandbox_port: int = _setting(
        "Port of the Facebook simulator in sandbox mode.", "8001", _integer(1, 65535)
    )
    secret_key: str = _sandbox_default(
        "Signs sessions and the opt-in refs in opt-in codes. Long and random.",
        "sandbox-secret-key-not-for-production",
    )
    api_token: str = _sandbox_default(
        "Bearer token of the JSON API (`Authorization: Bearer ...`).", "sandbox-api-token"
    )
    admin_password: str = _sandbox_default("Operator password for the HTML pages.", "sandbox")
    fb_app_id: str = _sandbox_default("Facebook app id.", "100000000000001", secret=False)
    fb_app_secret: str = _sandbox_default(
        "Facebook app secret: checks webhook signatures and signed requests.", "sandbox-app-secret"
    )
    fb_verify_token: str = _sandbox_default(
        "The Verify Token typed in the App Dashboard for the webhook subscription.",
        "sandbox-verify-token",
    )
    token_encryption_keys: tuple[str, ...] = _setting(
        "Fernet key(s) encrypting Page tokens at rest, comma-separated, newest first "
        "(older ones still decrypt: that is how a key is rotated).",
        _development_key,
        _fernet_keys,
        name="TOKEN_ENCRYPTION_KEY",
        secret=True,
        shown="required outside sandbox (sandbox: derived from `SECRET_KEY`)",
        missing="generate one with "
        "`python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())'`",
    )
    graph_api_url: str = _setting(
        "Graph API base URL.",
        _graph_url,
        _url,
        shown=f"`{_FACEBOOK_GRAPH}` (sandbox: the simulator)",
    )
    fb_login_url: str = _setting(
        "Where Facebook Login's dialog lives.",
        _login_url,
        _url,
        shown=f"`{_FACEBOOK_WWW}` (sandbox: the simulator)",
    )
    public_url: str = _setting(
        "The service's public base URL (for Facebook Login's redirect and the data "
        "deletion status URL).",
        "",
        _url,
        shown="taken from each request",
    )
    session_cookie_secure: bool = _setting(
        "`1` sends the sign-in cookie over HTTPS only.",
        _secure_cookie,
        _flag,
        shown="`1` outside sandbox mode, `0` in it",
    )
    role_recheck_seconds: int = _setting(
        "How old a page owner's roles on Pages may be before Facebook is asked again (0: on "
        "every request); while Facebook cannot be reached, as long again. Deleting, enabling, "
        "disabling, resuming or recovering a profile always asks first.",
        "300",
        _integer(0, 8 * 3600),  # at most the session's 8 hours
    )
    graph_api_version: str = _setting(
        "Graph API version used on every call.", "v26.0", _pattern(r"v\d+\.\d+", "like v26.0")
    )
    graph_timeout_seconds: float = _setting(
        "Read timeout of one Graph API call (connect timeout is 3 s).", "10", _whole_float(1, 120)
    )
    stats_timezone: str = _setting(
        "Time zone whose calendar days the statistics use.", "UTC", _timezone
    )
    webhook_max_bytes: int = _setting(
        "Largest webhook body accepted; larger gets 413.",
        "1048576",
        _integer(1024, 50 * 1024 * 1024),
    )
    receipt_clock_skew_ms: int = _setting(
        "Tolerance between our send time and Facebook's receipt watermark.",
        "1000",
        _integer(0, 600_000),
    )
    send_rate_per_page: float = _setting(
        "Messages per second per Page, shared by all workers (Facebook's inbox breaks above ~40).",
        "20",
        _whole_float(1, 10_000),
    )
    send_concurrency: int = _setting(
        "Sends in flight at once per worker process.", "16", _integer(1, 128)
    )
    send_pages_per_worker: int = _setting(
        "Batches of different Pages one worker sends at once (sharing SEND_CONCURRENCY; twice it "
        "keeps threads from waiting on one Page's pace).",
        "32",
        _integer(1, 256),
    )
    send_max_attempts: int = _setting(
        "Attempts per contact on transient Facebook errors before `failed`.", "4", _integer(1, 10)
    )
    run_batch_size: int = _setting("Contacts per RQ job of a node run.", "200", _integer(1, 10_000))
    run_parallel_batches: int = _setting(
        "Batches of one run processed at once (one Page's rate is shared anyway).",
        "1",
        _integer(1, 64),
    )
    unknown_deadline_seconds: int = _setting(
        "How long a send whose answer was lost waits for Facebook's echo before "
        "`failed`/`interrupted`.",
        "900",
        _integer(1, 7 * 86400),
    )
    run_lease_seconds: int = _setting(
        "A batch whose worker stopped renewing its lease this long is resumed by another worker.",
        "15",
        _integer(2, 600),
    )
    profile_check_minutes: int = _setting(
        "How often every profile's token and webhook subscription are checked.",
        "60",
        _integer(1, 7 * 24 * 60),
    )
    stats_retention_days: int = _setting(
        "How long a profile's daily statistics are kept at all (its counters; the rows behind "
        "them go sooner, ROW_RETENTION_DAYS).",
        "1830",
        _integer(31, 36_600),
    )
    row_retention_days: int = _setting(
        "How long the per-contact rows behind the statistics are kept (the counters stay "
        "STATS_RETENTION_DAYS).",
        "90",
        _integer(1, 3650),
    )
    receipt_wait_days: int = _setting(
        "How long a sent message awaits its delivery and read receipts; one never delivered by "
        'then counts as "no receipt" on the day it was sent.',
        "7",
        _integer(1, 90),
    )
    run_retention_days: int = _setting(
        "How long a run's per-contact outcomes stay readable through the API.",
        "30",
        _integer(1, 3650),
    )
    callback_secret: str = _setting(
        "Signs the run summaries posted to a run's `callback_url` "
        "(`X-Signature-256: sha256=<HMAC-SHA256 of the body>`). Long and random.",
        _callback_secret,
        secret=True,
        shown="required outside sandbox for runs with a `callback_url` "
        f"(sandbox: `{_SANDBOX_CALLBACK_SECRET}`)",
    )
    callback_allow_private: bool = _setting(
        "`1` lets a run's `callback_url` name a host on a private, loopback or link-local "
        "address (a program engine inside your network); `0` refuses it.",
        _allow_private,
        _flag,
        shown="`1` in sandbox mode, `0` outside it",
    )
    breaker_error_percent: int = _setting(
        "A profile's sending pauses when recipient and policy refusals reach this share of its "
        "recent sends (BREAKER_WINDOW_MINUTES, at least BREAKER_MIN_SENDS); a Page restriction "
        "pauses it at once.",
        "50",
        _integer(1, 100),
    )
    breaker_min_sends: int = _setting(
        "Sends in the window before refusals can pause a profile's sending.",
        "20",
        _integer(1, 10_000),
    )
    breaker_window_minutes: int = _setting(
        "How far back a profile's send results count for the breaker.", "10", _integer(1, 1440)
    )
    breaker_cooldown_minutes: int = _setting(
        "How long sending stays paused before one probe send tests it (doubled after each "
        "refused probe, up to 24 hours).",
        "30",
        _integer(1, 1440),
    )
    unreachable_days: int = _setting(
        "How long a person Facebook says cannot be reached is not sent to by that profile "
        "(a message, postback or opt-in from them lifts it at once).",
        "30",
        _integer(1, 365),
    )
    tag_retirement_date: date = _setting(
        "Day Meta stopped accepting the three message tags; before it, nodes send tagged messages.",
        "2026-04-27",
        _date,
    )
    port: int = _setting("Port the web process listens on.", "8000", _integer(1, 65535))
    log_level: str = _setting(
        "Log level of web and worker processes.",
        "INFO",
        _choice("DEBUG", "INFO", "WARNING", "ERROR"),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
        """Read and validate settings; raise ConfigError listing every problem at once."""
        env = dict(os.environ if environ is None else environ)
        if dotenv and environ is None:
            env = {**read_dotenv(Path.cwd() / ".env"), **env}
        return _Reader(env).settings()

    def public_summary(self) -> dict[str, str]:
        """Settings safe to log: secrets are never included."""
        return {
            s.attribute: str(getattr(self, s.attribute)) for s in SETTINGS.values() if not s.secret
        }


def _declared(cls: type) -> dict[str, Setting]:
    """The settings declared by `cls`'s fields, by environment variable, in declaration order."""
    found: dict[str, Setting] = {}
    for f in fields(cls):
        setting = f.metadata["setting"]
        setting = replace(setting, name=setting.name or f.name.upper(), attribute=f.name)
        found[setting.name] = setting
    return found


SETTINGS: dict[str, Setting] = _declared(Settings)
# Read by gunicorn.conf.py and `make run` only; listed here so the README documents them too.
PROCESS_SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "Interface the web process binds (`0.0.0.0` behind a load balancer).",
            "127.0.0.1",
            name="HOST",
        ),
        Setting("gunicorn worker processes.", None, shown="CPUs + 1", name="WEB_CONCURRENCY"),
        Setting("Threads per gunicorn worker.", "8", name="WEB_THREADS"),
        Setting(
            "Requests after which a gunicorn worker is replaced (0: never).",
            "100000",
            name="WEB_MAX_REQUESTS",
        ),
        Setting(
            "Where `make run` keeps the embedded Redis data (`<VAR_DIR>/redis`).",
            "var",
            name="VAR_DIR",
        ),
    )
}


# Durations that bound one another: a late receipt must find its day's rows and counters.
_NOT_LONGER_THAN = {
    ("RECEIPT_WAIT_DAYS", "ROW_RETENTION_DAYS"): "a receipt would rebuild rows already dropped",
    ("ROW_RETENTION_DAYS", "STATS_RETENTION_DAYS"): "rows would outlive their day's counters",
}


class _Reader:
    """Reads the settings in declaration order, collecting one message per problem."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.problems: list[str] = []
        self.values: dict[str, Any] = {}

    def raw(self, name: str) -> str:
        return self.env.get(name, "").strip()

    def value(self, name: str) -> Any:
        """The value of a setting read already (declared above the one asking)."""
        return self.values[name]

    def settings(self) -> Settings:
        for setting in SETTINGS.values():
            self.values[setting.name] = self.read(setting)
        for shorter, longer in _NOT_LONGER_THAN:
            if self.values[shorter] > self.values[longer]:
                self.problems.append(
                    f"{shorter} ({self.values[shorter]}) must not exceed {longer} "
                    f"({self.values[longer]}): {_NOT_LONGER_THAN[shorter, longer]}"
                )
        if self.problems:
            raise ConfigError(self.problems)
        return Settings(**{s.attribute: self.values[s.name] for s in SETTINGS.values()})

    def read(self, setting: Setting) -> Any:
        """The setting's value; a malformed one is reported, its default used for later settings."""
        text = self.raw(setting.name)
        if text:
            try:
                return setting.parse(text)
            except _Invalid as invalid:
                self.problems += [f"{setting.name} {reason}" for reason in invalid.reasons]
        default = setting.default(self) if callable(setting.default) else setting.default
        if default is None:
            if not text:
                self.problems.append(
                    f"{setting.name} is not set: {setting.missing or setting.meaning}"
                )
            return None
        return setting.parse(default)


def settings_table() -> str:
    """The README's configuration table, in Markdown. Regenerate the README's with
    `.venv/bin/python -c 'from bot.config import settings_table; print(settings_table())'`."""
    rows = ["| name | default | meaning |", "| --- | --- | --- |"]
    for s in (*SETTINGS.values(), *PROCESS_SETTINGS.values()):
        rows.append(f"| `{s.name}` | {_cell(s.default_cell())} | {_cell(s.meaning)} |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def read_dotenv(path: Path) -> dict[str, str]:
    """Values from a `.env` file; the real environment wins over them."""
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def settings_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings for a process entry point; on bad configuration, print why and exit 1."""
    try:
        return Settings.from_env(environ)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
