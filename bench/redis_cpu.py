"""Redis CPU per call of the send and webhook paths' scripts, each alone, and the floors under them.

    python -m bench.redis_cpu [--calls 2000] [--quick] [--keep]

`send_throughput` and `webhook_ingest` measure Redis CPU per send and per event under load, and
split it by script with the slowlog; but Redis times a command by the wall clock, and on this
machine's two shared vCPUs a script that loses its CPU mid-way is charged the wait. Here one
client calls each operation in turn, `--calls` times, on a redis-server of our own (a free
port, never the shared 6379) with every script of storage/lua/ loaded, and `INFO cpu` is read
around each: Redis CPU per call, which is what a Redis core runs out of.

Operations, through storage/ as the service makes them, on state a run leaves behind (a
profile, a 200-contact run per batch of calls, opted-in people, messages awaiting receipts):
  floors     a round trip that does nothing (PING); a plain command (HGET); EVALSHA of
             `return 1`; the preamble every storage script runs first (the key templates and
             _lib.lua, then `return 1`); one `redis.call` from Lua (HGET) and one cjson.decode
  send path  a claim whose Page slot is free (one call, as when a Page is below its pace);
             the same claim carrying the outcome of the thread's previous send (a send's usual
             call: jobs/sender.py Recorder.lend); finish_many with 1 outcome, and with 16 (the
             Recorder's own writes: what no claim took)
  webhooks   apply_events with no event (its fixed cost), 1 delivery receipt, 1 opt-in,
             3 events (a delivery, its read, an opt-in), 20 delivery receipts, the same 20
             parked one by one and then applied by one call (a crowd's webhooks:
             storage/inbound.py), 100 delivery receipts
Each row: Redis CPU per call (and per event or outcome where a call carries several), Redis's
own timing of the call (commandstats), and the commands run per call; the best of three rounds
(other work on the machine only adds to them).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from bench._harness import code_version, parse_sizes, run_main, service_env, start_app, start_redis
from bench._redis_cpu import cpu_seconds

QUICK = {"calls": 100}
RUN_SIZE = 200  # contacts per run: RUN_BATCH_SIZE's default
PAGE_ID = "1090000000001"
MEASURING = {"cmdstat_info", "cmdstat_config|resetstat"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.redis_cpu", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--calls", type=int, default=4000, help="calls of each operation (default 4000)"
    )
    parser.add_argument(
        "--appendonly",
        action="store_true",
        help="Redis with appendonly yes, appendfsync everysec (production's advice): what the "
        "append-only file adds to each call",
    )
    parser.add_argument("--quick", action="store_true", help="smoke size: 100 calls each")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parse_sizes(parser, argv, QUICK)
    if args.calls < 100:
        parser.error("need --calls >= 100")
    return args


class Meter:
    """CPU and Redis-timed microseconds per call of one operation, the best of ROUNDS rounds:
    other work on the machine only ever adds to them."""

    ROUNDS = 3

    def __init__(self, client):
        self.client = client

    def measure(self, label: str, call: Callable[[int], object], calls: int, per: int = 1):
        """Call `call(i)` for i in 0..calls-1, in ROUNDS rounds, and print one row (`per`:
        events or outcomes each call carries)."""
        call(calls)  # one call first: a script's first use loads and compiles it
        rounds = min(self.ROUNDS, calls)
        size = calls // rounds
        cpu_us, timed_us, commands = min(
            self._round(call, range(r * size, (r + 1) * size)) for r in range(rounds)
        )
        each = f"{cpu_us / per:>10.1f}" if per > 1 else f"{'':>10}"
        print(f"{label:<52}{cpu_us:>9.1f}{each}{timed_us:>10.1f}{commands:>10.1f}", flush=True)

    def _round(self, call: Callable[[int], object], indexes: range) -> tuple[float, float, float]:
        """(CPU µs, Redis-timed µs, commands) per call."""
        self.client.config_resetstat()
        sys0, user0 = cpu_seconds(self.client)
        for i in indexes:
            call(i)
        sys1, user1 = cpu_seconds(self.client)
        stats = self.client.info("commandstats")
        top = ("cmdstat_evalsha", "cmdstat_ping", "cmdstat_hget")  # what the client sent
        timed = next((stats[k] for k in top if k in stats), {"usec": 0})
        commands = sum(  # the measuring's own INFO and CONFIG RESETSTAT left out
            int(v["calls"]) for k, v in stats.items() if k not in MEASURING
        )
        n = len(indexes)
        return 1e6 * (sys1 - sys0 + user1 - user0) / n, int(timed["usec"]) / n, commands / n


class People:
    """Opted-in people of the profile, each with a message sent a minute ago awaiting its
    receipts; `take(k)` hands out k not used before."""

    def __init__(self, store, pid: str, count: int, now_ms: int):
        self.pid, self.now_ms, self.used = pid, now_ms, 0
        self.psids = [f"{7 * 10**15 + i}" for i in range(count)]
        contacts = {f"w{i:07d}": {"FIRSTNAME": "Ann"} for i in range(count)}
        store.contacts.merge_many(contacts)
        self.contacts = list(contacts)
        pipe = store.redis.pipeline(transaction=False)
        for cid, psid in zip(self.contacts, self.psids, strict=True):
            store.messages.record_sent(pid, cid, psid, f"m_{psid:0>42}", now_ms - 60_000, pipe)
        pipe.execute()

    def take(self, k: int) -> list[tuple[str, str]]:
        taken = list(zip(self.contacts, self.psids, strict=True))[self.used : self.used + k]
        self.used += k
        return taken

    def delivery(self, psid: str):
        from storage.inbound import Event

        return Event("delivery", PAGE_ID, psid, self.now_ms, wm=self.now_ms - 59_000)

    def read(self, psid: str):
        from storage.inbound import Event

        return Event("read", PAGE_ID, psid, self.now_ms + 1, wm=self.now_ms)

    def optin(self, cid: str, psid: str):
        """An opt-in through the plugin by someone new to the Page (another PSID)."""
        from storage.inbound import Event

        return Event("optin", PAGE_ID, f"9{psid}", self.now_ms, profile=self.pid, contact=cid)


def kinds(events) -> dict[str, int]:
    """Webhook event kinds seen, as the webhook hands them over for /metrics."""
    counts: dict[str, int] = {}
    for event in events:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    return counts


def run(args: argparse.Namespace, stack: ExitStack, tmp: Path) -> int:
    from bot import policy
    from storage import scripts
    from storage.programs import Node
    from storage.ratelimit import PageRateLimiter

    server = start_redis(stack, tmp, appendonly=args.appendonly)
    app = start_app(stack, service_env(server.url, "http://127.0.0.1:9"))
    store, settings = app.extensions["storage"], app.config["SETTINGS"]
    client = store.redis
    lua = Path(scripts.__file__).parent / "lua"
    for path in lua.glob("*.lua"):  # the Lua state of a server that has run every script
        if not path.stem.startswith("_"):
            client.script_load(scripts.source(path.stem))
    profile = store.profiles.create(
        name="Bench", page_id=PAGE_ID, page_name="Bench Page", page_token="token"
    )
    node = Node(id="n1", profile_id=profile.id, tag="ACCOUNT_UPDATE", message="Updated.")
    n, now = args.calls, int(time.time() * 1000)
    rules = policy.sending_rules(settings)
    meter = Meter(client)
    print(
        f"Redis CPU per call, one client calling in turn ({n} calls each), every script loaded, "
        f"append-only file {'on (everysec)' if args.appendonly else 'off'}; code {code_version()}"
    )
    print(f"{'operation':<52}{'CPU µs':>9}{'per item':>10}{'timed µs':>10}{'commands':>10}")

    print("floors:")
    client.hset("bench:h", "f", "v")
    one = client.register_script("return 1")
    claim_source = scripts.source("claim")
    preamble = client.register_script(
        claim_source[: claim_source.index((lua / "claim.lua").read_text())] + "\nreturn 1"
    )
    hget = client.register_script("return redis.call('HGET', KEYS[1], 'f')")
    decode = client.register_script("return cjson.decode(ARGV[1]).s")
    record = '{"s":"sent","r":"","m":"m_abcdefghijklmnopqrstuvwxyz0123456789abcdef","t":1}'
    meter.measure("  PING (a round trip that does nothing)", lambda i: client.ping(), n)
    meter.measure("  HGET (a plain command)", lambda i: client.hget("bench:h", "f"), n)
    meter.measure("  EVALSHA return 1", lambda i: one(), n)
    meter.measure("  EVALSHA key templates + _lib.lua + return 1", lambda i: preamble(), n)
    meter.measure("  EVALSHA one redis.call (HGET)", lambda i: hget(keys=["bench:h"]), n)
    meter.measure("  EVALSHA one cjson.decode (an outcome)", lambda i: decode(args=[record]), n)

    print("send path (run contacts, 200 a run):")
    # Claims, then outcomes (of finish_many, then carried by claims of the `fresh` contacts).
    contacts = [f"c{i:07d}" for i in range(3 * n + 60)]
    fresh = [f"f{i:07d}" for i in range(n + 1)]
    store.contacts.merge_many(dict.fromkeys(contacts + fresh, {"FIRSTNAME": "Ann"}))

    def runs_of(ids: list[str], prefix: str) -> list[str]:
        return [
            store.runs.create(
                f"{prefix}-{i}", "p1", node, {c: {} for c in ids[i : i + RUN_SIZE]}, RUN_SIZE
            )[0].run_id
            for i in range(0, len(ids), RUN_SIZE)
        ]

    runs, fresh_runs = runs_of(contacts, "bench"), runs_of(fresh, "fresh")
    free = PageRateLimiter(client, 1e6)  # a slot is always free: one call per claim
    deadline = now + settings.unknown_deadline_seconds * 1000

    def claim_in(run_ids: list[str], ids: list[str], i: int, **carrying) -> None:
        store.runs.claim(
            run_ids[i // RUN_SIZE],
            ids[i],
            deadline,
            pace=(free, PAGE_ID),
            sent_as="t",
            sending=(profile.id, rules.probe_timeout_ms),
            **carrying,
        )

    def claim(i: int) -> None:
        claim_in(runs, contacts, i)

    def outcome(i: int) -> str:
        return store.runs.outcome(
            runs[i // RUN_SIZE],
            contacts[i],
            "sent",
            message_id=f"m_{i:042d}",
            recipient=f"{8 * 10**15 + i}",
            at_ms=now,
            sent_as="t",
            called=True,
        )

    meter.measure("  claim (its Page's slot free: one call)", claim, n)
    for i in range(n + 1, len(contacts)):
        claim(i)

    def claim_carrying(i: int) -> None:  # outcomes past those finish_many takes
        claim_in(fresh_runs, fresh, i, outcomes=[outcome(2 * n + 40 + i)], rules=rules)

    meter.measure(
        "  finish_many, 1 outcome", lambda i: store.runs.finish_many([outcome(i)], rules), n
    )
    meter.measure(
        "  finish_many, 16 outcomes",
        lambda i: store.runs.finish_many([outcome(n + 1 + 16 * i + k) for k in range(16)], rules),
        (n - 24) // 16,
        per=16,
    )
    meter.measure("  claim carrying the previous send's outcome", claim_carrying, n)

    print("webhooks (apply_events):")
    people = People(store, profile.id, 10 * n + 300, now)

    def apply(events) -> None:
        store.inbound.apply(events, kinds(events))

    meter.measure(
        "  no event, 1 kind counted (what every call pays)",
        lambda i: store.inbound.apply([], {"delivery": 1}),
        n,
    )
    deliveries = [people.delivery(psid) for _, psid in people.take(n + 1)]
    meter.measure("  1 delivery receipt", lambda i: apply([deliveries[i]]), n)
    optins = [people.optin(cid, psid) for cid, psid in people.take(n + 1)]
    meter.measure("  1 opt-in", lambda i: apply([optins[i]]), n)
    mixed = [
        [people.delivery(a), people.read(a), people.optin(cid, b)]
        for (_, a), (cid, b) in zip(people.take(n + 1), people.take(n + 1), strict=True)
    ]
    meter.measure("  3 events: a delivery, its read, an opt-in", lambda i: apply(mixed[i]), n, 3)
    twenties = [[people.delivery(psid) for _, psid in people.take(20)] for _ in range(n // 10 + 1)]
    meter.measure("  20 delivery receipts", lambda i: apply(twenties[i]), n // 10, 20)
    parked = [[people.delivery(psid) for _, psid in people.take(20)] for _ in range(n // 10 + 1)]

    def park_and_drain(i: int) -> None:
        for event in parked[i]:
            store.inbound.apply.park([event], {"delivery": 1})
        store.inbound.apply.drain()

    meter.measure("  20 receipts parked one by one, then applied", park_and_drain, n // 10, 20)
    hundreds = [[people.delivery(psid) for _, psid in people.take(100)] for _ in range(n // 50 + 1)]
    meter.measure("  100 delivery receipts", lambda i: apply(hundreds[i]), n // 50, 100)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(
        lambda stack, tmp: run(args, stack, tmp), "bench-redis-cpu-", args.keep, "Redis"
    )


if __name__ == "__main__":
    sys.exit(main())
