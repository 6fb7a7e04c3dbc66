"""Redis CPU per operation, and where it goes: what the benchmarks print about their Redis.

A `RedisMeter` wraps one phase of a benchmark on the benchmark's own redis-server:

- `INFO cpu` (used_cpu_sys + used_cpu_user) before and after: everything the server spent,
  reading requests and writing replies included. Divided by the phase's sends or events it is
  the figure of the capacity model, and 1 s over it the ceiling of one Redis core.
- `INFO stats`: socket reads (round trips), commands, bytes in and out.
- `INFO commandstats` (CONFIG RESETSTAT first): calls and microseconds per command. EVALSHA is
  one row for every script, and a command a script runs counts both in its own row and in the
  script's (Redis 7 accounts nested calls as calls).
- With `trace`, the slowlog at threshold 0: every command with its duration, the client that
  sent it, and for EVALSHA the script's SHA, mapped to its name (storage/lua/, rq's and
  redis-py's scripts). Commands a script runs are logged from the Lua client (`?:0`), just
  before the script itself, so each script gets its own calls, µs per call and the commands it
  ran. Recording every command costs Redis CPU of its own, so a traced phase is a separate one
  and its CPU figure is printed beside the untraced one (the difference is the slowlog's cost).
  Redis times commands by the wall clock: a script that loses its CPU mid-way is charged the
  wait, so the split is in shares of Redis's time; `bench/redis_cpu.py` gives each script's
  CPU alone.

Not a benchmark (the leading underscore keeps `python -m bench` from running it). Only the
standard library at the top: `send_throughput --baseline-child` imports its importers.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")
LUA_CLIENT = "?"  # the slowlog's client address of commands a script runs ("?:0")
TRACE_MAX_ENTRIES = 3_000_000  # slowlog-max-len while tracing (~250 bytes of Redis each)
METER_CLIENT = "bench-redis-meter"  # the meter's own connection, left out of a trace
# Reads: each time Redis read a client's socket (a pipeline or requests sent together count
# once); writes: replies written; commands: those scripts ran included.
TRAFFIC = (
    "total_reads_processed",
    "total_writes_processed",
    "total_commands_processed",
    "total_net_input_bytes",
    "total_net_output_bytes",
)


# -- reading a redis-server ----------------------------------------------------------------------


def cpu_seconds(client) -> tuple[float, float]:
    """System and user CPU seconds the server has used since it started (`INFO cpu`)."""
    info = client.info("cpu")
    return float(info["used_cpu_sys"]), float(info["used_cpu_user"])


def traffic(client) -> dict[str, int]:
    """`INFO stats` counters of the server's work with its clients (see TRAFFIC)."""
    info = client.info("stats")
    return {name: int(info.get(name, 0)) for name in TRAFFIC}


def command_stats(client) -> dict[str, tuple[int, int]]:
    """`INFO commandstats` as {command: (calls, usec)}, subcommands as `config|resetstat`."""
    return {
        name.removeprefix("cmdstat_"): (int(row["calls"]), int(row["usec"]))
        for name, row in client.info("commandstats").items()
    }


def script_names() -> dict[str, str]:
    """SHA1 -> name of every script the service's processes may run by EVALSHA."""
    import redis.lock
    import rq.scripts  # rq.scheduler's lock script is the same text

    from storage import scripts

    lua = Path(scripts.__file__).parent / "lua"
    sources = {
        path.stem: scripts.source(path.stem)
        for path in sorted(lua.glob("*.lua"))
        if not path.stem.startswith("_")  # _lib.lua: prepended to the others
    }
    for name in dir(rq.scripts):
        if name.endswith("_SCRIPT"):
            sources[f"rq {name.removesuffix('_SCRIPT').lower()}"] = getattr(rq.scripts, name)
    for name in dir(redis.lock.Lock):
        if name.startswith("LUA_"):
            lock_script = getattr(redis.lock.Lock, name)
            sources[f"redis-py lock {name[4:].removesuffix('_SCRIPT').lower()}"] = lock_script
    return {hashlib.sha1(text.encode()).hexdigest(): name for name, text in sources.items()}


# -- what a phase cost ---------------------------------------------------------------------------


@dataclass
class Calls:
    """One script's or top-level command's calls in a traced phase."""

    calls: int = 0
    usec: int = 0  # a script's own duration includes the commands it ran
    inner: Counter = field(default_factory=Counter)  # command a script ran -> how many times
    inner_usec: int = 0


@dataclass
class Trace:
    """A traced phase's commands from the slowlog: scripts by name, other commands by name."""

    scripts: dict[str, Calls] = field(default_factory=dict)
    commands: dict[str, Calls] = field(default_factory=dict)
    entries: int = 0
    lost: int = 0  # entries the slowlog dropped (its length was too short): figures are low

    @classmethod
    def from_slowlog(cls, entries: list[dict], first_id: int, names: dict[str, str]) -> Trace:
        """Group entries with ids above `first_id` (the slowlog's newest entry before the
        phase), oldest first: a script's own commands come just before it."""
        trace = cls()
        ours = sorted((e for e in entries if e["id"] > first_id), key=lambda e: e["id"])
        trace.entries = len(ours)
        trace.lost = (ours[0]["id"] - first_id - 1) if ours else 0
        nested: list[tuple[str, int]] = []
        for entry in ours:
            if _text(entry.get("client_name", "")) == METER_CLIENT:
                trace.entries -= 1
                continue
            words = _text(entry["command"]).split(" ", 2)
            name, duration = words[0].lower(), int(entry["duration"])
            if _text(entry.get("client_address", "")).startswith(LUA_CLIENT):
                nested.append((name, duration))
                continue
            if name in SCRIPT_COMMANDS:
                calls = trace.scripts.setdefault(script_label(words, names), Calls())
                calls.inner.update(n for n, _ in nested)
                calls.inner_usec += sum(d for _, d in nested)
            else:
                calls = trace.commands.setdefault(name, Calls())
            nested = []
            calls.calls += 1
            calls.usec += duration
        return trace

    @property
    def top_level_calls(self) -> int:
        return sum(c.calls for c in (*self.scripts.values(), *self.commands.values()))

    @property
    def top_level_usec(self) -> int:
        """Microseconds executing commands, each counted once (a script with its commands)."""
        return sum(c.usec for c in (*self.scripts.values(), *self.commands.values()))


def script_label(words: list[str], names: dict[str, str]) -> str:
    """`claim`, `rq release_lock`, ... for EVALSHA; the script's first words for EVAL."""
    if len(words) < 2:
        return words[0].lower()
    if words[0].lower().startswith("evalsha"):
        return names.get(words[1].lower(), f"unknown script {words[1][:8]}")
    return f"EVAL {' '.join(' '.join(words[1:]).split())[:22]}..."


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class Usage:
    """What a redis-server spent over a phase."""

    sys_s: float
    user_s: float
    commands: dict[str, tuple[int, int]]  # INFO commandstats: calls, usec
    traffic: dict[str, int]  # INFO stats: TRAFFIC
    trace: Trace | None = None

    @property
    def cpu_s(self) -> float:
        return self.sys_s + self.user_s

    @classmethod
    def merged(cls, usages: list[Usage]) -> Usage:
        """Several phases' usage as one (their traces are not merged)."""
        commands: dict[str, tuple[int, int]] = {}
        for usage in usages:
            for name, (calls, usec) in usage.commands.items():
                before = commands.get(name, (0, 0))
                commands[name] = (before[0] + calls, before[1] + usec)
        return cls(
            sum(u.sys_s for u in usages),
            sum(u.user_s for u in usages),
            commands,
            {name: sum(u.traffic[name] for u in usages) for name in TRAFFIC},
        )

    def calls(self, command: str) -> int:
        return self.commands.get(command, (0, 0))[0]

    def usec(self, command: str) -> int:
        return self.commands.get(command, (0, 0))[1]


class RedisMeter:
    """Measure a phase on a redis-server of the benchmark's own: `start()`, the phase, `stop()`.

    With `trace`, the slowlog records every command of the phase (see the module docstring);
    its earlier settings come back at `stop`."""

    def __init__(self, client, trace: bool = False):
        """`client`: any client of the server; the meter talks over a connection of its own."""
        import redis

        pool = client.connection_pool
        own = redis.ConnectionPool(
            connection_class=pool.connection_class,
            **{**pool.connection_kwargs, "client_name": METER_CLIENT, "decode_responses": True},
        )
        self.client = redis.Redis(connection_pool=own, single_connection_client=True)
        self.trace = trace
        self._saved: dict[str, str] = {}
        self._first_id = 0
        self._cpu0 = (0.0, 0.0)
        self._traffic0: dict[str, int] = {}

    def start(self) -> None:
        if self.trace:
            self._saved = {str(k): str(v) for k, v in self.client.config_get("slowlog-*").items()}
            self.client.config_set("slowlog-max-len", TRACE_MAX_ENTRIES)
            self.client.slowlog_reset()
            self.client.config_set("slowlog-log-slower-than", 0)
            self.client.echo("trace starts")  # logged now: the entries after it are the phase's
            self._first_id = self.client.slowlog_get(1)[0]["id"]
        self.client.config_resetstat()
        self._traffic0 = traffic(self.client)
        self._cpu0 = cpu_seconds(self.client)

    def stop(self) -> Usage:
        sys_s, user_s = cpu_seconds(self.client)  # first: reading the rest costs CPU too
        after = traffic(self.client)
        usage = Usage(
            sys_s - self._cpu0[0],
            user_s - self._cpu0[1],
            command_stats(self.client),
            {name: after[name] - self._traffic0[name] for name in TRAFFIC},
        )
        if self.trace:
            self.client.config_set(
                "slowlog-log-slower-than", self._saved.get("slowlog-log-slower-than", "10000")
            )
            entries = self.client.slowlog_get(-1)
            self.client.slowlog_reset()
            self.client.config_set("slowlog-max-len", self._saved.get("slowlog-max-len", "128"))
            usage.trace = Trace.from_slowlog(entries, self._first_id, script_names())
        self.client.close()
        self.client.connection_pool.disconnect()
        return usage


# -- reporting -----------------------------------------------------------------------------------


def per_op_us(usage: Usage, ops: int) -> float:
    return 1e6 * usage.cpu_s / max(1, ops)


def ceiling(us_per_op: float) -> float:
    """Operations per second one Redis core carries at `us_per_op` of its CPU each."""
    return 1e6 / us_per_op if us_per_op > 0 else float("inf")


def headline(usage: Usage, ops: int, unit: str) -> str:
    """`Redis CPU per send: 118.3 µs (...) -> one Redis core carries ~8 450 sends/s`."""
    us = per_op_us(usage, ops)
    return (
        f"Redis CPU per {unit}: {us:.1f} µs (system {1e6 * usage.sys_s / max(1, ops):.1f} + "
        f"user {1e6 * usage.user_s / max(1, ops):.1f}; {usage.cpu_s:.2f} CPU-s of redis-server "
        f"over {ops:,} {unit}s, INFO cpu) -> one Redis core carries ~{ceiling(us):,.0f} {unit}s/s"
    )


def traffic_line(usage: Usage, ops: int, unit: str) -> str:
    """Round trips per operation and the CPU each costs: Redis's work is mostly per read."""
    n, t = max(1, ops), usage.traffic
    reads = t["total_reads_processed"]
    return (
        f"  per {unit}: {reads / n:.2f} socket reads (a round trip; a pipeline or requests "
        f"sent together count once), {t['total_writes_processed'] / n:.2f} writes, "
        f"{t['total_commands_processed'] / n:.1f} commands (those scripts ran included), "
        f"{t['total_net_input_bytes'] / n:,.0f} B in, {t['total_net_output_bytes'] / n:,.0f} B "
        f"out; {1e6 * usage.cpu_s / max(1, reads):.1f} µs of Redis CPU per read"
    )


def command_lines(usage: Usage, ops: int, unit: str, top: int = 8) -> list[str]:
    """The commands that took the most time, per operation (INFO commandstats)."""
    rows = sorted(usage.commands.items(), key=lambda item: -item[1][1])[:top]
    lines = [
        f"  {'command (INFO commandstats)':<38}{'calls/' + unit:>13}{'µs/call':>9}"
        f"{'µs/' + unit:>10}"
    ]
    for name, (calls, usec) in rows:
        lines.append(
            f"  {name:<38}{calls / max(1, ops):>13.2f}{usec / max(1, calls):>9.1f}"
            f"{usec / max(1, ops):>10.1f}"
        )
    lines.append(
        f"  (evalsha: every script; what a script runs counts in its row too; "
        f"{sum(c for c, _ in usage.commands.values()) / max(1, ops):.1f} calls per {unit} in all)"
    )
    return lines


def trace_lines(usage: Usage, ops: int, unit: str, top: int = 12) -> list[str]:
    """Per script and top-level command: calls, µs per call and per operation, and what each
    script ran; then how much of the CPU was command execution and how much the rest."""
    trace = usage.trace
    if trace is None:
        return []
    us = per_op_us(usage, ops)
    n = max(1, ops)
    lines = [
        f"  {'script or command (slowlog)':<38}{'calls/' + unit:>13}{'µs/call':>9}"
        f"{'µs/' + unit:>10}   commands a script ran per call"
    ]
    rows = [(f"{name} (script)", c) for name, c in trace.scripts.items()]
    rows += list(trace.commands.items())
    rows.sort(key=lambda row: -row[1].usec)
    for label, c in rows[:top]:
        ran = ", ".join(f"{cmd} {count / c.calls:.1f}" for cmd, count in c.inner.most_common(6))
        more = len(c.inner) - 6
        lines.append(
            f"  {label:<38}{c.calls / n:>13.3f}{c.usec / max(1, c.calls):>9.1f}"
            f"{c.usec / n:>10.2f}   {ran}{f' +{more} more' if more > 0 else ''}"
        )
    if len(rows) > top:
        rest = rows[top:]
        lines.append(
            f"  {f'{len(rest)} others':<38}{sum(c.calls for _, c in rest) / n:>13.3f}"
            f"{'':>9}{sum(c.usec for _, c in rest) / n:>10.2f}"
        )
    lines.append(
        f"  executing commands {trace.top_level_usec / n:.1f} µs per {unit} as Redis times them "
        f"(wall clock: on a busy machine it includes waiting for a CPU), {us:.1f} µs of CPU "
        f"in all (reading requests, writing replies, the slowlog itself); "
        f"{trace.top_level_calls / n:.2f} top-level commands per {unit}"
    )
    if trace.lost:
        lines.append(f"  (the slowlog dropped {trace.lost:,} entries: these figures are low)")
    return lines
