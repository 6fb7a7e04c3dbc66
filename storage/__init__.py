"""The Redis data layer: the only code that builds Redis keys (see storage/keys.py).

`Storage` groups one object per aggregate over a single `decode_responses=True` client;
RQ gets its own bytes client. Every client of the service's Redis is made by `connect`: of a
single Redis (REDIS_URL), or of the primary that Sentinel names (REDIS_SENTINELS). `init_app`
puts the Storage on `app.extensions["storage"]`; `get_storage()` reads it inside a request or
job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import redis
from redis.connection import SSLConnection, parse_url
from redis.sentinel import Sentinel, SentinelManagedConnection
from redis.utils import SENTINEL

from storage import keys
from storage.callbacks import Callbacks
from storage.consent import Consent
from storage.contacts import Contacts
from storage.erasure import Erasure
from storage.inbound import Inbound
from storage.messages import Messages
from storage.metrics import Metrics
from storage.profiles import Cipher, Profiles
from storage.programs import Programs
from storage.ratelimit import PageRateLimiter
from storage.recoveries import Recoveries
from storage.runs import Runs
from storage.sending import Sending
from storage.stats import Stats
from storage.users import Users

if TYPE_CHECKING:
    from flask import Flask

# Short timeouts: a webhook must answer within Facebook's 5 s even when Redis is gone.
_CLIENT_OPTIONS = {
    "socket_connect_timeout": 1.0,
    "socket_timeout": 2.0,
    "health_check_interval": 30,
}
# What a URL names that Sentinel names instead: the address, and the kind of connection.
_ADDRESS_PARTS = ("host", "port", "path", "connection_class")
# The address a Sentinel connection starts with: one that redis-py opened without asking the
# sentinels (its lazy connect skips that) fails here rather than reaching localhost:6379.
_ASK_SENTINEL = "ask-the-sentinels.invalid"


class RedisSettings(Protocol):
    """Where Redis is (bot.config.Settings has these): a single Redis at `redis_url`, or the
    primary that `redis_sentinels` name `redis_sentinel_master_name` (the URL's database, user
    name, password and TLS then apply to it)."""

    @property
    def redis_url(self) -> str: ...
    @property
    def redis_sentinels(self) -> tuple[tuple[str, int], ...]: ...
    @property
    def redis_sentinel_master_name(self) -> str: ...
    @property
    def redis_sentinel_password(self) -> str: ...


class StorageSettings(RedisSettings, Protocol):
    """The settings `init_app` reads."""

    @property
    def stats_timezone(self) -> str: ...
    @property
    def receipt_clock_skew_ms(self) -> int: ...
    @property
    def send_rate_per_page(self) -> float: ...
    @property
    def run_retention_days(self) -> int: ...
    @property
    def webhook_replica_wait_ms(self) -> int: ...


def connect(where: str | RedisSettings, *, decode: bool = True) -> redis.Redis:
    """A client for storage (`decode=True`) or for RQ, which stores bytes (`decode=False`), of
    the Redis at a URL or of the one the settings name."""
    if isinstance(where, str):
        return redis.Redis.from_url(where, decode_responses=decode, **_CLIENT_OPTIONS)
    if not where.redis_sentinels:
        return connect(where.redis_url, decode=decode)
    return _primary(where, decode)


def _primary(settings: RedisSettings, decode: bool) -> redis.Redis:
    """A client of the primary the sentinels name. Each new connection asks them where it is,
    so after a failover the next one reaches the promoted replica; a connection still open to
    a demoted primary gets READONLY, which redis-py turns into a ConnectionError (and forgets
    the connection), so callers see the same error as for a primary that is gone."""
    sentinels = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        settings.redis_sentinels,
        sentinel_kwargs={
            "password": settings.redis_sentinel_password or None,
            "socket_connect_timeout": _CLIENT_OPTIONS["socket_connect_timeout"],
            "socket_timeout": _CLIENT_OPTIONS["socket_timeout"],
        },
    )
    parsed: dict[str, object] = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    from_url = {name: value for name, value in parsed.items() if name not in _ADDRESS_PARTS}
    tls = parsed.get("connection_class") is SSLConnection  # rediss://
    client: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        settings.redis_sentinel_master_name,
        connection_class=_SentinelTLSConnection if tls else _SentinelConnection,
        decode_responses=decode,
        **{**_CLIENT_OPTIONS, **from_url, "host": _ASK_SENTINEL},  # the URL's options win
    )
    return client


class _SentinelConnection(SentinelManagedConnection):
    """redis-py's Sentinel connection, closed when a read fails, as its other connections are.

    Only this class keeps the connection by default (redis-py 8.1), so a read cut short left
    its reply pending for the next command: RQ's SIGTERM handler raises inside BLPOP, and the
    worker's last writes then waited for BLPOP's timeout (minutes) instead of stopping."""

    def read_response(
        self,
        disable_decoding: Any = False,
        *,
        timeout: float | object = SENTINEL,
        disconnect_on_error: bool | None = True,
        push_request: bool | None = False,
    ) -> Any:
        return super().read_response(
            disable_decoding,
            timeout=timeout,
            disconnect_on_error=disconnect_on_error,
            push_request=push_request,
        )


class _SentinelTLSConnection(_SentinelConnection, SSLConnection):
    """`_SentinelConnection` over TLS (a `rediss://` REDIS_URL)."""


class Storage:
    """All aggregates over one Redis client."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        cipher: Cipher,
        tz: str = "UTC",
        clock_skew_ms: int = 1000,
        send_rate: float = 20.0,
        run_retention_days: int = 30,
        webhook_replica_wait_ms: int = 0,
    ) -> None:
        self.redis = client
        self.tz = ZoneInfo(tz)
        self.profiles = Profiles(client, cipher)
        self.contacts = Contacts(client)
        self.consent = Consent(client)
        self.erasure = Erasure(client)
        self.inbound = Inbound(client, clock_skew_ms, self.tz)
        # the webhook's one script call waits for a replica (storage.scripts.DirectScript)
        self.inbound.apply.script.replica_wait_ms = webhook_replica_wait_ms
        self.messages = Messages(client, self.tz)
        self.stats = Stats(client, self.tz)
        self.programs = Programs(client)
        self.runs = Runs(client, self.tz, run_retention_days)
        self.recoveries = Recoveries(client, self.tz, run_retention_days)
        self.rates = PageRateLimiter(client, send_rate)
        self.sending = Sending(client)
        self.callbacks = Callbacks(client)
        self.users = Users(client, cipher)
        self.metrics = Metrics(client)

    def ping(self) -> bool:
        return bool(self.redis.ping())

    def take_tick(self, task: str, every_ms: int) -> bool:
        """True for exactly one caller per interval across all processes."""
        return bool(self.redis.set(keys.tick(task), "1", nx=True, px=max(1, every_ms - 100)))


def init_app(app: Flask, settings: StorageSettings, cipher: Cipher) -> Storage:
    store = Storage(
        connect(settings),
        cipher=cipher,
        tz=settings.stats_timezone,
        clock_skew_ms=settings.receipt_clock_skew_ms,
        send_rate=settings.send_rate_per_page,
        run_retention_days=settings.run_retention_days,
        webhook_replica_wait_ms=settings.webhook_replica_wait_ms,
    )
    app.extensions["storage"] = store
    return store


def get_storage() -> Storage:
    from flask import current_app

    store: Storage = current_app.extensions["storage"]  # put there by init_app
    return store
