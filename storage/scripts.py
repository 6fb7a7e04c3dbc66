"""Lua scripts of the storage layer: the key templates, the `_lib.lua` functions the script
uses (shared helpers), then the script's own file.

The key templates (storage/keys.py:lua_templates) are written into each script as a Lua table
when it is loaded, so a key's shape is still written once, in Python, and no call has to send
or decode them (that was a fifth of the webhook script's time).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
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
    "opt_out",
}
_USES_TEMPLATES = _USES_LIB | {"forget_recipient", "profile_status", "put_program", "take_ready"}


def templates_table(lua: str) -> str:
    """`local T = {name = "msgr:...%s...", ...}` (JSON strings are valid Lua strings here), of
    the templates `lua` may use: those it names in quotes (`key('seen', pid)`, or a list of
    names it loops over) or as `T.name`. The table is built on every call, about 25 ns an
    entry."""
    templates = keys.lua_templates()
    code = _code(lua)
    names = set(re.findall(r"\bT\.(\w+)", code)) | {
        word for word in re.findall(r"['\"](\w+)['\"]", code) if word in templates
    }
    entries = ", ".join(f"{name} = {json.dumps(templates[name])}" for name in sorted(names))
    return f"local T = {{{entries}}}\n{_KEY_FUNCTION}"


# A key from its template: key('seen', pid). A name the table lacks fails with its name.
_KEY_FUNCTION = (
    "local function key(name, ...)\n"
    "  return string.format(T[name] or error('no key template ' .. tostring(name)), ...)\n"
    "end\n"
)


@cache
def source(name: str) -> str:
    parts = []
    if name == "apply_events":
        # Each bound with its field name spelled out: making 'dl_' .. n in Lua formats a
        # number, about 0.4 µs each, paid by every call.
        bounds = ", ".join(map(str, DELIVERY_BUCKETS_S))
        fields = ", ".join(f"'dl_{n}'" for n in DELIVERY_BUCKETS_S)
        parts.append(f"local DELIVERY_BUCKETS, DELIVERY_FIELDS = {{{bounds}}}, {{{fields}}}\n")
    own = (_DIR / f"{name}.lua").read_text()
    if name in _USES_LIB:
        parts.append(f"local CONSENT_KEPT = {keys.CONSENT_EVENTS_KEPT}\n")
        parts.append(lib_used_by(own))
    parts.append(own)
    if name in _USES_TEMPLATES:
        parts.insert(0, templates_table("".join(parts)))
    return "\n".join(parts)


def lib_used_by(script: str) -> str:
    """The functions of _lib.lua that `script` uses, directly or through each other (with all
    that is not a function), in file order. A script defines every function it holds again on
    each call (Lua closures: about 1 µs of Redis CPU a dozen), so each holds only its own."""
    chunks = _lib_chunks()
    used: set[str] = set()
    code = _code(script + "".join(chunk for name, chunk in chunks if name is None))
    while found := {n for n, _ in chunks if n and n not in used and re.search(rf"\b{n}\b", code)}:
        used |= found
        code = _code("".join(chunk for name, chunk in chunks if name in found))
    return "".join(chunk for name, chunk in chunks if name is None or name in used)


def _code(lua: str) -> str:
    """Lua without its comments (which name functions too)."""
    return re.sub(r"--[^\n]*", "", lua)


@cache
def _lib_chunks() -> list[tuple[str | None, str]]:
    """_lib.lua as (function name, its text with the comment right above it) and (None, what
    lies between functions)."""
    chunks: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in (_DIR / "_lib.lua").read_text().splitlines(keepends=True):
        header = re.match(r"local function (\w+)\(", line)
        if header:
            between = chunks[-1][1]
            start = len(between)
            while start and between[start - 1].startswith("--"):
                start -= 1  # the comment right above the function is its own
            chunks.append((header[1], between[start:] + [line]))
            del between[start:]
            if line.rstrip().endswith(" end"):  # a one-line function
                chunks.append((None, []))
        elif chunks[-1][0] and line.startswith("end"):
            chunks[-1][1].append(line)
            chunks.append((None, []))
        else:
            chunks[-1][1].append(line)
    return [(name, "".join(lines)) for name, lines in chunks]


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
    broke is made once more on a new one (a Redis restart leaves every kept connection stale).

    With `replica_wait_ms` the call also waits until a replica has the write (WAIT 1, sent with
    the EVALSHA: one round trip), at most that long: what a failover can lose is then only what
    no replica had. A wait that times out (no replica, or one far behind) turns waiting off for
    NO_REPLICA_PAUSE_S, so a missing replica does not slow every call."""

    NO_REPLICA_PAUSE_S = 10.0

    def __init__(self, client: Redis, name: str, *, replica_wait_ms: int = 0) -> None:
        self.script = register(client, name)
        self.replica_wait_ms = replica_wait_ms
        self._pool = client.connection_pool
        self._local = threading.local()
        self._no_replica_until = 0.0  # time.monotonic()

    def __call__(self, keys: Sequence[str] = (), args: Sequence[EncodableT] = ()) -> Any:
        """The script's reply, shaped as the script returns it."""
        return self.command("EVALSHA", self.script.sha, len(keys), *keys, *args)

    def command(self, *command: EncodableT) -> Any:
        """Any idempotent command, made the way the script's calls are (this thread's
        connection, the replica wait, once more on a new connection if this one broke)."""
        try:
            return self._run(command)
        except (exceptions.ConnectionError, exceptions.TimeoutError):
            return self._run(command)

    def _run(self, command: Sequence[EncodableT]) -> Any:
        connection = self._connection()
        try:
            try:
                return self._send(connection, command)
            except exceptions.NoScriptError:  # Redis restarted or flushed its scripts
                self.script.registered_client.script_load(self.script.script)
                return self._send(connection, command)
        except exceptions.ResponseError:
            raise  # Redis answered: the connection is still in step
        except BaseException:
            connection.disconnect()  # a reply may be half read: never reuse this connection
            self._local.connection = None
            raise

    def _send(self, connection: _Connection, command: Sequence[EncodableT]) -> Any:
        if not self.replica_wait_ms or time.monotonic() < self._no_replica_until:
            connection.send_command(*command)
            return connection.read_response()
        wait = ("WAIT", 1, self.replica_wait_ms)  # WAIT counts this connection's writes
        connection.send_packed_command(connection.pack_commands([command, wait]))
        try:
            reply = connection.read_response()
        except exceptions.ResponseError:
            self._replicas_had_it(connection.read_response())  # the connection stays in step
            raise
        self._replicas_had_it(connection.read_response())
        return reply

    def _replicas_had_it(self, replicas: int) -> None:
        """WAIT's answer: with no replica in time, waiting stops for a while."""
        if not replicas:
            self._no_replica_until = time.monotonic() + self.NO_REPLICA_PAUSE_S

    def _connection(self) -> _Connection:
        """This thread's connection; a new one in a forked child (never the parent's socket)."""
        held: _ThreadConnection | None = getattr(self._local, "connection", None)
        if held is None or held.pid != os.getpid():
            held = self._local.connection = _ThreadConnection(self._pool)
        return held.connection


class _Connection(Protocol):
    """What DirectScript uses of a redis-py connection (whose methods are not annotated)."""

    def connect(self) -> None: ...
    def send_command(self, *args: EncodableT) -> None: ...
    def pack_commands(self, commands: Sequence[Sequence[EncodableT]]) -> list[bytes]: ...
    def send_packed_command(self, command: list[bytes]) -> None: ...
    def read_response(self) -> Any: ...
    def disconnect(self) -> None: ...


class _ThreadConnection:
    """A thread's own connection, closed as soon as the thread ends: redis-py's connections
    sit in reference cycles, so without this the socket would wait for the garbage collector."""

    __slots__ = ("connection", "pid")

    def __init__(self, pool: ConnectionPool) -> None:
        self.pid = os.getpid()
        self.connection: _Connection = pool.connection_class(**pool.connection_kwargs)
        # Connected here, as the pool does: a first command would connect it without calling
        # connect(), which is where a Sentinel connection asks where the primary is (it would
        # go to localhost:6379 instead).
        self.connection.connect()

    def __del__(self) -> None:
        if self.pid == os.getpid():
            self.connection.disconnect()
