"""The Redis data layer: the only code that builds Redis keys (see storage/keys.py).

`Storage` groups one object per aggregate over a single `decode_responses=True` client;
RQ gets its own bytes client (`rq_redis`). `init_app` puts the Storage on
`app.extensions["storage"]`; `get_storage()` reads it inside a request or job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

import redis

from storage import keys
from storage.callbacks import Callbacks
from storage.contacts import Contacts
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


class StorageSettings(Protocol):
    """The settings `init_app` reads (bot.config.Settings has them)."""

    @property
    def redis_url(self) -> str: ...
    @property
    def stats_timezone(self) -> str: ...
    @property
    def receipt_clock_skew_ms(self) -> int: ...
    @property
    def send_rate_per_page(self) -> float: ...
    @property
    def run_retention_days(self) -> int: ...


def connect(url: str, *, decode: bool = True) -> redis.Redis:
    """A client for storage (`decode=True`) or for RQ, which stores bytes (`decode=False`)."""
    return redis.Redis.from_url(url, decode_responses=decode, **_CLIENT_OPTIONS)


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
    ) -> None:
        self.redis = client
        self.tz = ZoneInfo(tz)
        self.profiles = Profiles(client, cipher)
        self.contacts = Contacts(client)
        self.inbound = Inbound(client, clock_skew_ms, self.tz)
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
        connect(settings.redis_url),
        cipher=cipher,
        tz=settings.stats_timezone,
        clock_skew_ms=settings.receipt_clock_skew_ms,
        send_rate=settings.send_rate_per_page,
        run_retention_days=settings.run_retention_days,
    )
    app.extensions["storage"] = store
    return store


def get_storage() -> Storage:
    from flask import current_app

    store: Storage = current_app.extensions["storage"]  # put there by init_app
    return store
