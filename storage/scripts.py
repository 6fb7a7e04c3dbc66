"""Lua scripts of the storage layer: the key templates, `_lib.lua` (shared helpers), then the
script's own file.

The key templates (storage/keys.py:lua_templates) are written into each script as a Lua table
when it is loaded, so a key's shape is still written once, in Python, and no call has to send
or decode them (that was a fifth of the webhook script's time).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from redis import ConnectionPool, Redis, exceptions
from redis.commands.core import Script
from redis.typing import EncodableT

from storage import keys
from storage.stats import DELIVERY_BUCKETS_S

_DIR = Path(__file__).parent / "lua"
_USES_LIB = {
    "apply_events",
    "record_sent",
    "finish",
    "expire_unknown",
    "rate_reserve",
    "claim",
    "mark_recovered",
    "age_receipts",
    "set_pending_state",
}
_USES_TEMPLATES = _USES_LIB | {"forget_recipient", "profile_status", "put_program", "take_ready"}


def templates_table() -> str:
    """`local T = {name = "msgr:...%s...", ...}` (JSON strings are valid Lua strings here)."""
    entries = ", ".join(
        f"{name} = {json.dumps(template)}"
        for name, template in sorted(keys.lua_templates().items())
    )
    return f"local T = {{{entries}}}\n"


@cache
def source(name: str) -> str:
    parts = [templates_table()] if name in _USES_TEMPLATES else []
    if name == "apply_events":
        parts.append(f"local DELIVERY_BUCKETS = {{{', '.join(map(str, DELIVERY_BUCKETS_S))}}}\n")
    if name in _USES_LIB:
        parts.append((_DIR / "_lib.lua").read_text())
    parts.append((_DIR / f"{name}.lua").read_text())
    return "\n".join(parts)


def register(client: Redis, name: str) -> Script:
    """A redis-py Script: EVALSHA, reloading the script if the server lost it."""
    return client.register_script(source(name))


class DirectScript:
    """EVALSHA on a connection of the calling thread's own, for the hot paths' one call (a
    webhook's write, a send's claim): redis-py's command path (pool checkout with its socket
    poll, observability hooks, argument filtering) was a fifth of that request's CPU
    (bench/webhook_ingest.py --profile).

    The connection lives as long as its thread: gunicorn's threads are long-lived; under a
    thread-per-request server it is one connection per request, closed when the thread ends.
    It is made outside the client's pool, whose count of made connections only ever grows.
    Same call as a redis-py Script; only for idempotent scripts, as a call whose connection
    broke is made once more on a new one (a Redis restart leaves every kept connection stale)."""

    def __init__(self, client: Redis, name: str) -> None:
        self.script = register(client, name)
        self._pool = client.connection_pool
        self._local = threading.local()

    def __call__(self, keys: Sequence[str] = (), args: Sequence[EncodableT] = ()) -> Any:
        """The script's reply, shaped as the script returns it."""
        try:
            return self._evalsha(keys, args)
        except (exceptions.ConnectionError, exceptions.TimeoutError):
            return self._evalsha(keys, args)

    def _evalsha(self, keys: Sequence[str], args: Sequence[EncodableT]) -> Any:
        connection = self._connection()
        try:
            try:
                return self._send(connection, keys, args)
            except exceptions.NoScriptError:  # Redis restarted or flushed its scripts
                self.script.registered_client.script_load(self.script.script)
                return self._send(connection, keys, args)
        except exceptions.ResponseError:
            raise  # Redis answered: the connection is still in step
        except BaseException:
            connection.disconnect()  # a reply may be half read: never reuse this connection
            self._local.connection = None
            raise

    def _send(
        self, connection: _Connection, keys: Sequence[str], args: Sequence[EncodableT]
    ) -> Any:
        connection.send_command("EVALSHA", self.script.sha, len(keys), *keys, *args)
        return connection.read_response()

    def _connection(self) -> _Connection:
        """This thread's connection; a new one in a forked child (never the parent's socket)."""
        held: _ThreadConnection | None = getattr(self._local, "connection", None)
        if held is None or held.pid != os.getpid():
            held = self._local.connection = _ThreadConnection(self._pool)
        return held.connection


class _Connection(Protocol):
    """What DirectScript uses of a redis-py connection (whose methods are not annotated)."""

    def send_command(self, *args: EncodableT) -> None: ...
    def read_response(self) -> Any: ...
    def disconnect(self) -> None: ...


class _ThreadConnection:
    """A thread's own connection, closed as soon as the thread ends: redis-py's connections
    sit in reference cycles, so without this the socket would wait for the garbage collector."""

    __slots__ = ("connection", "pid")

    def __init__(self, pool: ConnectionPool) -> None:
        self.connection: _Connection = pool.connection_class(**pool.connection_kwargs)
        self.pid = os.getpid()

    def __del__(self) -> None:
        if self.pid == os.getpid():
            self.connection.disconnect()
