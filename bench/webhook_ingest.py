"""Webhook ingest under gunicorn: signed 1- and 100-event POSTs vs a bare Flask app, same config.

    python -m bench.webhook_ingest [--duration 10] [--warmup 2] [--rounds 2] [--connections 32]
                                   [--threads 2] [--quick] [--profile] [--keep]
                                   [--trace-duration 5]
                                   [--web-concurrency N] [--web-threads N]

Everything runs on this machine and is private to this process: a redis-server of our own on a
free port (never the shared 6379), two gunicorn servers started with the project's
gunicorn.conf.py (gthread, WEB_CONCURRENCY default CPUs + 1 workers x WEB_THREADS 8) on
free ports, and Debian's `wrk` as the load generator (`apt-get install wrk`):

  app       `gunicorn -c gunicorn.conf.py wsgi:app`, outside sandbox mode with explicit secrets,
            no access log, LOG_LEVEL=WARNING. Seeded through storage/: four Pages with profiles,
            opted-in contacts and one message recorded as sent to each person whose receipts
            are posted, so every delivery and read event of a round counts a receipt once.
  baseline  a bare Flask app (written to the temporary directory) whose POST /webhook reads
            the body and answers "ok", under the same gunicorn.conf.py.

wrk (`--threads` threads, `--connections` connections) POSTs pre-generated bodies signed with
the app secret (`X-Hub-Signature-256`), each thread cycling through its own file of bodies, and
prints a JSON summary from a Lua `done()` (requests, duration, latency percentiles, non-2xx).
A round is: baseline 1-event, app 1-event, app 100-event, baseline 100-event, each after a
`--warmup` on a separate small set of bodies. Each round posts fresh bodies (new people, new
messages awaiting receipts), so receipts and opt-ins do their real work rather than hitting
what an earlier phase already applied; a phase that posts more than its bodies cycles back to
the first (duplicates are idempotent and cheaper) and the table says so.

Body mix (Facebook's shapes, compact JSON): delivery receipts (half with `mids`) ~43 %, reads
~35 %, opt-ins through the Send to Messenger plugin with a signed ref ~13 %, inbound text
messages ~9 %. A 100-event body is 100 `entry` objects of one `messaging` item each, over the
four Pages (Meta: "messaging ... will only contain one object"; batching is by entries).

Checked after each app phase: no non-2xx answer and no socket error; the shared metric
`msgr:metrics:webhook_events` grew by exactly the events of the requests wrk sent (minus at most
the requests still in flight when wrk stopped); the opt-ins, delivery and read receipts of the
bodies posted landed in Redis. Exits 1 if a check fails (not when a target is missed).

Each phase's row shows wrk's figures, the CPU seconds used meanwhile by gunicorn (master and
workers, recycled ones included), redis-server, wrk and everything else on the machine (a row
is flagged "noisy" when other processes took more than 10 % of it), gunicorn CPU per request,
and how wrk's connections were spread over the workers half-way through ("conns/worker": a
keep-alive connection stays with the worker that accepted it; a phase where one worker held
90 % or more is "lopsided", one process on two cores, and is left out of the pooled figures
unless every round of it was). The summary pools the rounds
(requests over seconds; p50 the median round, p99 the worst) and gives the three ratios with
the issue's targets, CPU per event, and Redis's: its CPU per event (INFO cpu over each app
phase; the ceiling of one Redis core, the issue's target for 1-event POSTs), round trips and
the costliest commands (INFO commandstats). Two more app phases (`--trace-duration`) then run
with Redis's slowlog recording every command, split by script (bench/_redis_cpu.py).
`--profile` adds two app phases sampled with py-spy (not in the figures).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import runpy
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench._harness import (
    APP_SECRET,
    ROOT,
    SECRET_KEY,
    Profiler,
    code_version,
    machine_busy_seconds,
    mark,
    parse_sizes,
    process_cpu,
    py_spy,
    run_main,
    service_env,
    start_app,
    start_redis,
    summarise_profile,
    wait_for_parked_writes,
)
from bench._redis_cpu import (
    RedisMeter,
    Usage,
    command_lines,
    headline,
    per_op_us,
    trace_lines,
    traffic_line,
)

CONF = ROOT / "gunicorn.conf.py"
PAGES = 4
QUICK = {
    "duration": 1,
    "warmup": 1,
    "rounds": 1,
    "bodies_1": 3000,
    "bodies_100": 150,
    "trace_duration": 1,
}

# Targets of the issue, at 32 connections.
TARGET_OF_BASELINE = 0.75
REFERENCE_OF_BASELINE = "0.66-0.82"
TARGET_P99_MS = 50.0
TARGET_BATCH_GAIN = 20.0
TARGET_REDIS_US_PER_EVENT = 10.0  # issue 16: Redis CPU per event of 1-event webhooks
# A phase whose busiest worker held this share of the connections is left out of the pooled
# figures; one where other processes took more than this share of the machine's CPU is flagged.
LOPSIDED_SHARE = 0.9
NOISY_SHARE = 0.10


HELLO_APP = '''\
"""The baseline: a bare Flask app that reads the body and answers "ok"."""
from flask import Flask, request

app = Flask(__name__)


@app.post("/webhook")
def webhook():
    request.get_data(cache=False)
    return "ok"


@app.get("/healthz")
def healthz():
    return "ok"
'''

# wrk: each thread loads its own file of "<signature> <length>\\n<body>\\n" records, formats
# every request once, then sends them in turn; done() prints one JSON line.
WRK_SCRIPT = r"""
local threads, next_id = {}, 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

sent, bodies = 0, 0
local reqs, i = {}, 0

function init(args)
  local f = assert(io.open(args[1] .. tostring(tid) .. ".txt", "rb"))
  local data = f:read("*a")
  f:close()
  local pos, host = 1, wrk.headers["Host"]
  while pos <= #data do
    local eol = data:find("\n", pos, true)
    local sig, len = data:sub(pos, eol - 1):match("^(%S+) (%d+)$")
    len = tonumber(len)
    reqs[#reqs + 1] = wrk.format("POST", args[2],
      {["Host"] = host, ["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = sig},
      data:sub(eol + 1, eol + len))
    pos = eol + len + 2
  end
  bodies = #reqs
end

function request()
  i = i + 1
  if i > bodies then i = 1 end
  sent = sent + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local per_thread = {}
  for _, t in ipairs(threads) do
    per_thread[#per_thread + 1] =
      string.format('{"sent":%d,"bodies":%d}', t:get("sent"), t:get("bodies"))
  end
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50_us":%d,"p75_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"threads":[%s]}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean,
    table.concat(per_thread, ",")))
end
"""


# -- arguments ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhook_ingest", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--duration", type=int, default=10, help="whole seconds measured per phase (default 10)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of warm-up before each phase (default 2)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of the four phases (default 2)"
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--bodies-1",
        type=int,
        default=60_000,
        help="1-event bodies per round, all different (default 60000)",
    )
    parser.add_argument(
        "--bodies-100",
        type=int,
        default=5_000,
        help="100-event bodies per round, all different (default 5000)",
    )
    parser.add_argument(
        "--web-concurrency", type=int, help="WEB_CONCURRENCY for both servers (experiment only)"
    )
    parser.add_argument(
        "--web-threads", type=int, help="WEB_THREADS for both servers (experiment only)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke size: {QUICK['duration']:g} s phases, {QUICK['rounds']} round, fewer bodies",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the rounds, sample the app's workers with py-spy during two extra app phases",
    )
    parser.add_argument(
        "--trace-duration",
        type=int,
        default=5,
        help="seconds of each of two more app phases (1- and 100-event) with Redis's slowlog "
        "recording every command, for the split of Redis CPU by script (default 5; 0: none)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (bodies, logs)"
    )
    args = parse_sizes(parser, argv, QUICK)
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0 or args.threads < 1:
        parser.error("need --rounds >= 1, --duration > 0, --warmup >= 0, --threads >= 1")
    if args.connections < args.threads:
        parser.error("need --connections >= --threads")
    if args.bodies_1 < args.threads or args.bodies_100 < args.threads:
        parser.error("need at least one body per wrk thread")
    return args


# -- bodies ------------------------------------------------------------------------------------


def random_mid() -> str:
    """A message id shaped like Facebook's (m_ + 42 url-safe characters)."""
    return (
        "m_" + base64.urlsafe_b64encode(random.getrandbits(256).to_bytes(32, "big")).decode()[:42]
    )


@dataclass
class Page:
    page_id: str
    pid: str


@dataclass
class BodySet:
    """Body files for wrk (`<prefix><thread>.txt`) and, per thread and body, what it should do."""

    prefix: str
    events_per_body: int
    bodies: int = 0
    # per thread, per body: (conversations delivered, conversations read, opt-ins)
    effects: list[list[tuple[tuple[int, ...], tuple[int, ...], int]]] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    mean_bytes: float = 0.0

    def expected(
        self, sent_per_thread: list[int], in_flight_per_thread: int
    ) -> dict[str, tuple[int, int]]:
        """(low, high) of receipts and opt-ins applied, given how many bodies each wrk thread took.

        Thread 0's first body only served wrk's check of the script (`script_verify_request`
        calls request() once before the run), so its requests start at its second body; the
        last `in_flight_per_thread` requests of a thread may not have reached the server."""
        bounds = {}
        for name, slack in (("low", in_flight_per_thread), ("high", 0)):
            delivered, read, optins = set(), set(), 0
            for index, (thread, sent) in enumerate(
                zip(self.effects, sent_per_thread, strict=False)
            ):
                first = 1 if index == 0 else 0
                count = max(0, sent - first - slack)
                positions = (
                    range(len(thread))
                    if count >= len(thread)
                    else [(first + i) % len(thread) for i in range(count)]
                )
                for position in positions:
                    conv_d, conv_r, n_opt = thread[position]
                    delivered.update(conv_d)
                    delivered.update(conv_r)
                    read.update(conv_r)
                    optins += n_opt
            bounds[name] = (len(delivered), len(read), optins)
        return {
            key: (bounds["low"][i], bounds["high"][i])
            for i, key in enumerate(("delivered", "read", "optins"))
        }


class Workload:
    """Fresh people, messages and signed bodies; seeded into Redis through storage/."""

    def __init__(self, store, pages: list[Page], refs, signer, tmp: Path):
        self.store, self.pages, self.refs, self.signer, self.tmp = store, pages, refs, signer, tmp
        self.next_person = 0
        self.next_conv = 0
        self.next_set = 0

    def person(self) -> tuple[str, str]:
        self.next_person += 1
        return f"{7 * 10**15 + self.next_person}", f"bench-{self.next_person:08d}"

    def make(self, bodies: int, events_per_body: int, threads: int) -> BodySet:
        """`bodies` bodies split over `threads` files; seeds what their receipts will find."""
        self.next_set += 1
        body_set = BodySet(
            str(self.tmp / f"set{self.next_set}-{events_per_body}ev-"), events_per_body
        )
        now = int(time.time() * 1000)
        per_thread = [
            bodies // threads + (1 if t < bodies % threads else 0) for t in range(threads)
        ]
        seed_optins, seed_sent, new_contacts = [], [], {}
        from storage.inbound import Event

        total_bytes = 0
        for thread, count in enumerate(per_thread):
            stream: list[
                tuple[dict, str, int | None, str]
            ] = []  # (messaging item, page, conv, kind)
            need = count * events_per_body
            while len(stream) < need:
                group = []
                for _ in range(
                    50
                ):  # 50 conversations: delivery, most read, some reply; some opt-ins
                    page = random.choice(self.pages)
                    psid, contact = self.person()
                    self.next_conv += 1
                    conv = self.next_conv
                    sent_ms = now - random.randint(60_000, 3_600_000)
                    mid = random_mid()
                    seed_optins.append(
                        Event(
                            "optin",
                            page.page_id,
                            psid,
                            sent_ms - 60_000,
                            profile=page.pid,
                            contact=contact,
                        )
                    )
                    seed_sent.append((page.pid, contact, psid, mid, sent_ms))
                    new_contacts[contact] = {
                        "FIRSTNAME": f"Person {self.next_person}",
                        "EMAIL": f"p{self.next_person}@example.com",
                    }
                    delivered_ms = sent_ms + random.randint(500, 5_000)
                    delivery = {"watermark": delivered_ms}
                    if conv % 2:
                        delivery["mids"] = [mid]
                    group.append(
                        (
                            self.item(page, psid, delivered_ms, "delivery", delivery),
                            page,
                            conv,
                            "delivery",
                        )
                    )
                    if random.random() < 0.8:
                        read_ms = min(now, delivered_ms + random.randint(1_000, 600_000))
                        read = self.item(page, psid, read_ms, "read", {"watermark": read_ms})
                        group.append((read, page, conv, "read"))
                    if random.random() < 0.2:
                        at = min(now, delivered_ms + random.randint(1_000, 600_000))
                        group.append(
                            (
                                self.item(
                                    page,
                                    psid,
                                    at,
                                    "message",
                                    {"mid": random_mid(), "text": "Thanks! When will it arrive?"},
                                ),
                                page,
                                conv,
                                "message",
                            )
                        )
                    if (
                        random.random() < 0.3
                    ):  # somebody new opts in through the Send to Messenger button
                        page2 = random.choice(self.pages)
                        psid2, contact2 = self.person()
                        new_contacts[contact2] = {"FIRSTNAME": f"Person {self.next_person}"}
                        at = now - random.randint(0, 600_000)
                        optin = self.item(
                            page2, psid2, at, "optin", {"ref": self.refs.sign(page2.pid, contact2)}
                        )
                        group.append((optin, page2, None, "optin"))
                random.shuffle(group)
                stream.extend(group)
            stream = stream[:need]
            effects = []
            with open(f"{body_set.prefix}{thread}.txt", "wb") as out:
                for start in range(0, need, events_per_body):
                    chunk = stream[start : start + events_per_body]
                    entries = [
                        {"id": page.page_id, "time": item["timestamp"], "messaging": [item]}
                        for item, page, _, _ in chunk
                    ]
                    body = json.dumps(
                        {"object": "page", "entry": entries}, separators=(",", ":")
                    ).encode()
                    out.write(f"{self.signer.sign(body)} {len(body)}\n".encode() + body + b"\n")
                    total_bytes += len(body)
                    effects.append(
                        (
                            tuple(c for _, _, c, k in chunk if k == "delivery"),
                            tuple(c for _, _, c, k in chunk if k == "read"),
                            sum(1 for *_, k in chunk if k == "optin"),
                        )
                    )
                    body_set.kinds.update(k for *_, k in chunk)
            body_set.effects.append(effects)
        body_set.bodies = bodies
        body_set.mean_bytes = total_bytes / bodies
        self.seed(seed_optins, seed_sent, new_contacts)
        return body_set

    @staticmethod
    def item(page: Page, psid: str, at: int, kind: str, payload: dict) -> dict:
        return {
            "sender": {"id": psid},
            "recipient": {"id": page.page_id},
            "timestamp": at,
            kind: payload,
        }

    def seed(self, optins, sent, contacts) -> None:
        """Contacts, their opt-ins and one message awaiting receipts per conversation."""
        chunk = 2000
        items = list(contacts.items())
        for start in range(0, len(items), chunk):
            pipe = self.store.redis.pipeline(transaction=False)
            self.store.contacts.merge_many(dict(items[start : start + chunk]), pipeline=pipe)
            pipe.execute()
        for start in range(0, len(optins), chunk):
            self.store.inbound.apply(optins[start : start + chunk])
        for start in range(0, len(sent), chunk):
            pipe = self.store.redis.pipeline(transaction=False)
            for pid, contact, psid, mid, sent_ms in sent[start : start + chunk]:
                self.store.messages.record_sent(pid, contact, psid, mid, sent_ms, pipeline=pipe)
            pipe.execute()


# -- processes ---------------------------------------------------------------------------------


def process_cpu_self() -> float:
    t = os.times()
    return t.user + t.system


def reaped_children_cpu() -> float:
    """CPU of this process's children that were waited for (wrk, once it has exited)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Gunicorn:
    """One gunicorn server (its own session, so a terminal Ctrl-C reaches only us)."""

    def __init__(
        self,
        name: str,
        app: str,
        cwd: Path,
        env: dict[str, str],
        port: int,
        log: Path,
        workers: int,
        chdir: Path | None = None,
    ):
        self.name, self.port, self.log, self.workers = name, port, log, workers
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "gunicorn", "-c", str(CONF)]
        if chdir:
            command += ["--chdir", str(chdir)]
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                command + [app],
                cwd=cwd,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        import psutil

        self.master = psutil.Process(self.process.pid)

    def children(self):
        import psutil

        try:
            return self.master.children()
        except psutil.NoSuchProcess:
            return []

    def worker_pids(self) -> set[int]:
        return {p.pid for p in self.children()}

    def connections_by_worker(self) -> list[int]:
        """Established connections on our port held by each worker, most first (keep-alive
        connections stay with the worker that accepted them)."""
        import psutil

        counts = []
        for worker in self.children():
            try:
                held = worker.net_connections(kind="tcp")
            except psutil.Error:
                continue
            counts.append(
                sum(
                    1
                    for c in held
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
                )
            )
        return sorted(counts, reverse=True)

    def cpu(self) -> float:
        """Master + live workers + workers already exited (reaped by the master). Read again
        if the master reaped a worker meanwhile (a recycled worker's CPU would be lost or
        counted twice)."""
        while True:
            before = process_cpu(self.master, children=True)
            workers = sum(process_cpu(p) for p in self.children())
            if (
                process_cpu(self.master, children=True) - before < 0.5
            ):  # no worker's lifetime moved over
                return before + workers

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Until /healthz answers 200, every worker is up and the workers have gone idle."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name}: gunicorn exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name}: no answer on /healthz within {timeout} s:\n{self.tail()}"
                )
            time.sleep(0.1)
        while True:  # workers import the app one by one on a busy machine: wait until they are done
            before = self.cpu()
            time.sleep(0.3)
            if len(self.children()) >= self.workers and self.cpu() - before < 0.03:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name}: workers still busy starting after {timeout} s:\n{self.tail()}"
                )

    def tail(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # graceful; nothing is in flight by now
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


# -- wrk ---------------------------------------------------------------------------------------


@dataclass
class Phase:
    round: str
    name: str
    events_per_body: int
    wrk: dict
    cpu: dict
    recycled: int = 0
    problems: list[str] = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    redis: Usage | None = None  # what redis-server spent (app phases; bench/_redis_cpu.py)
    spread: list[int] = field(
        default_factory=list
    )  # wrk's connections held by each worker, half-way

    @property
    def seconds(self) -> float:
        return self.wrk["duration_us"] / 1e6

    @property
    def rps(self) -> float:
        return self.wrk["requests"] / self.seconds

    @property
    def eps(self) -> float:
        return self.rps * self.events_per_body

    @property
    def socket_errors(self) -> int:
        return sum(self.wrk[k] for k in ("connect", "read", "write", "timeout"))

    @property
    def lopsided(self) -> bool:
        """One worker held nearly all of wrk's connections: one process on two cores, which
        measures gunicorn's accept race (keep-alive connections stay where they landed)."""
        return bool(self.spread) and max(self.spread) >= LOPSIDED_SHARE * sum(self.spread)

    @property
    def cycled(self) -> bool:
        return any(t["sent"] > t["bodies"] for t in self.wrk["threads"])


def run_wrk(
    script: Path, url: str, body_set: BodySet, seconds: int, args: argparse.Namespace, midway=None
) -> tuple[dict, object]:
    """wrk's JSON summary, and what `midway()` returned half-way through the run."""
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
        "--",
        body_set.prefix,
        "/webhook",
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as wrk:
        seen = None
        if midway:
            try:
                wrk.wait(seconds / 2)
            except subprocess.TimeoutExpired:
                seen = midway()
        try:
            stdout, stderr = wrk.communicate(timeout=seconds + 120)
        except BaseException:
            wrk.kill()
            raise
    lines = [line for line in stdout.splitlines() if line.startswith("WRK_JSON ")]
    if wrk.returncode != 0 or not lines:
        raise RuntimeError(f"wrk exited {wrk.returncode}:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return json.loads(lines[-1][len("WRK_JSON ") :]), seen


# -- the benchmark -----------------------------------------------------------------------------


def gunicorn_config(overrides: dict[str, str]) -> dict:
    """gunicorn.conf.py as the servers will read it (the environment decides workers/threads)."""
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        return runpy.run_path(str(CONF))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Bench:
    def __init__(self, args: argparse.Namespace, stack: ExitStack, tmp: Path):
        self.args, self.stack, self.tmp = args, stack, tmp
        self.phases: list[Phase] = []
        self.problems: list[str] = []

    def setup(self) -> None:
        import psutil
        import redis as redis_lib

        from bot.refs import OptinRefs
        from bot.signature import WebhookSignature
        from storage.embedded import free_port

        args, tmp = self.args, self.tmp
        self.redis_server = start_redis(self.stack, tmp)
        self.redis_proc = psutil.Process(self.redis_server.process.pid)
        self.redis = redis_lib.Redis.from_url(self.redis_server.url, decode_responses=True)
        self.stack.callback(self.redis.close)

        overrides = {}
        if args.web_concurrency:
            overrides["WEB_CONCURRENCY"] = str(args.web_concurrency)
        if args.web_threads:
            overrides["WEB_THREADS"] = str(args.web_threads)
        self.overrides = overrides
        self.config = gunicorn_config(overrides)

        app_port, hello_port = free_port(), free_port()
        while hello_port == app_port:
            hello_port = free_port()
        # The app's environment: no Graph API (port 9 discards), no access log, its own port.
        app_env = service_env(
            self.redis_server.url,
            "http://127.0.0.1:9",
            FB_LOGIN_URL="http://127.0.0.1:9",
            ACCESS_LOG="",
            HOST="127.0.0.1",
            PORT=str(app_port),
            **overrides,
        )
        app = start_app(self.stack, app_env)
        self.store = app.extensions["storage"]
        self.pages = []
        for index in range(PAGES):
            page_id = f"{109 * 10**13 + index + 1}"
            profile = self.store.profiles.create(
                name=f"Bench {index + 1}",
                page_id=page_id,
                page_name=f"Bench Page {index + 1}",
                page_token=f"token-{index}",
            )
            self.pages.append(Page(page_id, profile.id))
        self.workload = Workload(
            self.store, self.pages, OptinRefs(SECRET_KEY), WebhookSignature(APP_SECRET), tmp
        )

        (tmp / "hello").mkdir()
        (tmp / "hello" / "hello.py").write_text(HELLO_APP)
        self.script = tmp / "post_bodies.lua"
        self.script.write_text(WRK_SCRIPT)

        workers = int(self.config["workers"])
        self.app = Gunicorn(
            "app", "wsgi:app", ROOT, app_env, app_port, tmp / "gunicorn-app.log", workers
        )
        self.stack.callback(self.app.stop)
        self.hello = Gunicorn(
            "baseline",
            "hello:app",
            tmp / "hello",
            {**app_env, "PORT": str(hello_port)},
            hello_port,
            tmp / "gunicorn-baseline.log",
            workers,
            chdir=tmp / "hello",
        )
        self.stack.callback(self.hello.stop)
        self.app_ready_s = self.app.wait_ready()
        self.hello_ready_s = self.hello.wait_ready()

    # -- measuring --------------------------------------------------------------------------

    def counters(self) -> dict:
        """What the webhooks have applied so far, once the writes they parked are applied (the
        web processes apply them within milliseconds: storage/inbound.py)."""
        from storage import keys

        wait_for_parked_writes(self.store)
        events = self.redis.hgetall(keys.metric("webhook_events"))
        rejected = self.redis.hgetall(keys.metric("webhook_rejected"))
        delivered = read = recipients = 0
        for page in self.pages:
            for _, counts in self.store.stats.days(page.pid, "2000-01-01", "2999-12-31"):
                delivered += counts["delivered"]
                read += counts["read"]
            recipients += self.redis.hlen(keys.recipients(page.pid))
        return {
            "events": sum(int(v) for v in events.values()),
            "rejected": sum(int(v) for v in rejected.values()),
            "delivered": delivered,
            "read": read,
            "recipients": recipients,
        }

    def phase(
        self,
        round_: str,
        server: Gunicorn,
        body_set: BodySet,
        warm_set: BodySet,
        trace: bool = False,
        duration: int | None = None,
    ) -> Phase:
        """One wrk run against `server` after its warm-up; with `trace`, Redis's slowlog records
        every command (bench/_redis_cpu.py)."""
        args = self.args
        name = f"{server.name} {body_set.events_per_body}-event{' traced' if trace else ''}"
        if args.warmup:
            run_wrk(self.script, server.url, warm_set, args.warmup, args)
            time.sleep(0.3)  # requests in flight when wrk stopped finish
        is_app = server is self.app
        before = self.counters() if is_app else None
        meter = RedisMeter(self.redis, trace=trace)
        if is_app:
            meter.start()
        pids = server.worker_pids()
        cpu0 = {
            "gunicorn": server.cpu(),
            "redis": process_cpu(self.redis_proc),
            "wrk": reaped_children_cpu(),
            "bench": process_cpu_self(),
            "machine": machine_busy_seconds(),
        }
        result, spread = run_wrk(
            self.script,
            server.url,
            body_set,
            duration or args.duration,
            args,
            midway=server.connections_by_worker,
        )
        cpu1 = {
            "gunicorn": server.cpu(),
            "redis": process_cpu(self.redis_proc),
            "wrk": reaped_children_cpu(),
            "bench": process_cpu_self(),
            "machine": machine_busy_seconds(),
        }
        cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        cpu["other"] = max(
            0.0, cpu["machine"] - cpu["gunicorn"] - cpu["redis"] - cpu["wrk"] - cpu["bench"]
        )
        phase = Phase(
            round_,
            name,
            body_set.events_per_body,
            result,
            cpu,
            recycled=len(pids - server.worker_pids()),
            spread=spread or [],
        )
        if result["non2xx"]:
            phase.problems.append(f"{result['non2xx']} non-2xx answers")
        if phase.socket_errors:
            phase.problems.append(
                f"socket errors: connect {result['connect']}, read {result['read']}, "
                f"write {result['write']}, timeout {result['timeout']}"
            )
        if is_app:
            time.sleep(0.3)  # requests in flight when wrk stopped finish: Redis's work counts
            phase.redis = meter.stop()
            self.check_effects(phase, body_set, before, self.counters())
        self.phases.append(phase)
        self.print_row(phase)
        return phase

    def check_effects(self, phase: Phase, body_set: BodySet, before: dict, after: dict) -> None:
        """The metric grew by the events of the requests answered (+ those in flight at the stop);
        receipts and opt-ins of the bodies posted landed."""
        result, E = phase.wrk, body_set.events_per_body
        sent = [t["sent"] for t in result["threads"]]
        in_flight = -(-self.args.connections // self.args.threads)
        grown = {k: after[k] - before[k] for k in after}
        low, high = result["requests"] * E, sum(sent) * E
        phase.checks = {"events": grown["events"]}
        if not low <= grown["events"] <= high:
            phase.problems.append(
                f"webhook_events grew by {grown['events']}, expected {low}..{high}"
            )
        if grown["rejected"]:
            phase.problems.append(f"webhook_rejected grew by {grown['rejected']}")
        expected = body_set.expected(sent, in_flight)
        for name, key in (("delivered", "delivered"), ("read", "read"), ("optins", "recipients")):
            lo, hi = expected[name]
            phase.checks[name] = (grown[key], lo, hi)
            if not lo <= grown[key] <= hi:
                phase.problems.append(
                    f"{name}: Redis grew by {grown[key]}, bodies posted imply {lo}..{hi}"
                )

    # -- reporting --------------------------------------------------------------------------

    HEADER = (
        f"{'round':<6}{'phase':<20}{'req/s':>9}{'events/s':>10}"
        f"{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'non-2xx':>8}{'sock err':>9}  "
        f"{'CPU s: gunicorn':>15}{'redis':>7}{'wrk':>6}"
        f"{'other':>7}{'  gunicorn ms/req':>17}"
    )

    def print_row(self, p: Phase) -> None:
        w, c = p.wrk, p.cpu
        notes = ["conns/worker " + "/".join(map(str, p.spread))] if p.spread else []
        if p.lopsided:
            notes.append("lopsided: left out of the pooled figures")
        if c["other"] > NOISY_SHARE * (os.cpu_count() or 1) * p.seconds:
            notes.append(f"noisy: other processes used {c['other']:.1f} CPU-s")
        if p.cycled:
            notes.append(
                "cycled its bodies: wrk threads sent "
                + ", ".join(f"{t['sent']:,}/{t['bodies']:,}" for t in w["threads"])
            )
        if p.recycled:
            notes.append(f"{p.recycled} worker(s) recycled (max_requests)")
        notes += p.problems
        print(
            f"{p.round:<6}{p.name:<20}{p.rps:>9.0f}{p.eps:>10.0f}"
            f"{w['p50_us'] / 1000:>8.1f}{w['p90_us'] / 1000:>8.1f}"
            f"{w['p99_us'] / 1000:>8.1f}{w['max_us'] / 1000:>8.1f}"
            f"{w['non2xx']:>8}{p.socket_errors:>9}  "
            f"{c['gunicorn']:>15.1f}{c['redis']:>7.1f}{c['wrk']:>6.1f}{c['other']:>7.1f}"
            f"{1000 * c['gunicorn'] / max(1, w['requests']):>17.2f}"
            + (f"  ({'; '.join(notes)})" if notes else ""),
            flush=True,
        )

    def pooled(self, name: str) -> dict:
        """Requests over seconds of a phase's rounds, lopsided ones left out (unless all are)."""
        phases = [p for p in self.phases if p.name == name and p.round != "prof"]
        phases = [p for p in phases if not p.lopsided] or phases
        requests = sum(p.wrk["requests"] for p in phases)
        seconds = sum(p.seconds for p in phases)
        return {
            "rps": requests / seconds,
            "eps": requests * phases[0].events_per_body / seconds,
            "p50": statistics.median(p.wrk["p50_us"] / 1000 for p in phases),
            "p99": max(p.wrk["p99_us"] / 1000 for p in phases),
            "per_round_rps": [p.rps for p in phases],
            "rounds": [p.round for p in phases],
        }

    def summary(self) -> None:
        args = self.args
        print()
        names = ["baseline 1-event", "app 1-event", "app 100-event", "baseline 100-event"]
        pooled = {n: self.pooled(n) for n in names}
        print(
            f"over {args.rounds} round(s) (requests / seconds pooled; p50 the median round, "
            "p99 the worst round; lopsided phases left out):"
        )
        print(f"{'':<22}{'req/s':>9}{'events/s':>10}{'p50 ms':>8}{'p99 ms':>8}   req/s per round")
        for n in names:
            v = pooled[n]
            print(
                f"{n:<22}{v['rps']:>9.0f}{v['eps']:>10.0f}{v['p50']:>8.1f}{v['p99']:>8.1f}   "
                + ", ".join(f"{r:.0f}" for r in v["per_round_rps"])
                + (f" (rounds {', '.join(v['rounds'])})" if len(v["rounds"]) < args.rounds else "")
            )
        rounds = sorted({p.round for p in self.phases if p.round != "prof"}, key=int)
        by = {(p.round, p.name): p for p in self.phases}
        per_round = [
            by[(r, "app 1-event")].rps / by[(r, "baseline 1-event")].rps
            for r in rounds
            if not (by[(r, "app 1-event")].lopsided or by[(r, "baseline 1-event")].lopsided)
        ]
        ratio = pooled["app 1-event"]["rps"] / pooled["baseline 1-event"]["rps"]
        gain = pooled["app 100-event"]["eps"] / pooled["app 1-event"]["eps"]
        ratio100 = pooled["app 100-event"]["rps"] / pooled["baseline 100-event"]["rps"]
        print()
        print(
            f"ratio app/baseline requests/s, 1-event POSTs: {ratio:.2f} (per round: "
            f"{', '.join(f'{r:.2f}' for r in per_round)}; target >= {TARGET_OF_BASELINE}, "
            f"reference code {REFERENCE_OF_BASELINE}): {mark(ratio >= TARGET_OF_BASELINE)}"
        )
        p99 = pooled["app 1-event"]["p99"]
        print(
            f"p99 app 1-event at {args.connections} connections: {p99:.1f} ms "
            f"(target <= {TARGET_P99_MS:.0f}): {mark(p99 <= TARGET_P99_MS)}"
        )
        hundred = pooled["app 100-event"]
        print(
            f"  for reference, p99 app 100-event: {hundred['p99']:.1f} ms "
            f"(a closed loop: mean latency = {args.connections} connections / req/s = "
            f"{1000 * args.connections / hundred['rps']:.0f} ms)"
        )
        print(
            f"ratio app events/s, 100-event / 1-event POSTs: {gain:.1f} "
            f"(target >= {TARGET_BATCH_GAIN:.0f}): {mark(gain >= TARGET_BATCH_GAIN)}"
        )
        print(f"  for reference, ratio app/baseline requests/s, 100-event POSTs: {ratio100:.2f}")
        app_phases = [p for p in self.phases if p.name.startswith("app")]
        for n in ("app 1-event", "app 100-event"):
            ps = [p for p in app_phases if p.name == n and p.round != "prof"]
            requests = sum(p.wrk["requests"] for p in ps)
            events = requests * ps[0].events_per_body
            redis = Usage.merged([p.redis for p in ps if p.redis])
            calls, inside = max(1, redis.calls("evalsha")), redis.usec("evalsha")
            gunicorn_us = 1e6 * sum(p.cpu["gunicorn"] for p in ps) / events
            print(
                f"CPU per event, {n}: gunicorn {gunicorn_us:.0f} µs, "
                f"redis-server {per_op_us(redis, events):.1f} µs (of which the scripts "
                f"{inside / events:.1f} µs; {inside / calls:.0f} µs per EVALSHA, "
                f"{requests / calls:.2f} requests per EVALSHA (shared writes), INFO commandstats)"
            )
        self.redis_summary(app_phases)
        checked = [p for p in app_phases if p.checks]
        if checked:
            events = sum(p.checks["events"] for p in checked)
            got = {k: sum(p.checks[k][0] for p in checked) for k in ("delivered", "read", "optins")}
            print(
                f"checks: webhook_events grew by {events:,} over the app phases "
                "(= events of the requests sent); "
                f"Redis counted {got['delivered']:,} deliveries, {got['read']:,} reads, "
                f"{got['optins']:,} new opt-ins, as the bodies posted imply; "
                f"non-2xx {sum(p.wrk['non2xx'] for p in app_phases)}, socket errors "
                f"{sum(p.socket_errors for p in app_phases)}"
            )
        for p in self.phases:
            for problem in p.problems:
                self.problems.append(f"round {p.round} {p.name}: {problem}")
        if self.problems:
            print("PROBLEMS:")
            for problem in self.problems:
                print(f"  {problem}")

    def redis_summary(self, app_phases: list[Phase]) -> None:
        """Redis CPU per event of the app phases (their rounds pooled), the ceiling of one Redis
        core, the issue's target, and the commands that took the time."""
        print("Redis during the app phases (its own redis-server; rounds pooled):")
        for n in ("app 1-event", "app 100-event"):
            ps = [p for p in app_phases if p.name == n and p.round != "prof" and p.redis]
            events = sum(p.wrk["requests"] * p.events_per_body for p in ps)
            redis = Usage.merged([p.redis for p in ps if p.redis])
            print(f"  {n} POSTs: {headline(redis, events, 'event')}")
            print(traffic_line(redis, events, "event"))
            if n == "app 1-event":
                us = per_op_us(redis, events)
                print(
                    f"  target <= {TARGET_REDIS_US_PER_EVENT:.0f} µs per event of 1-event POSTs: "
                    f"{mark(us <= TARGET_REDIS_US_PER_EVENT)}"
                )
                for line in command_lines(redis, events, "event"):
                    print(line)

    def traced(self, warm1: BodySet, warm100: BodySet) -> None:
        """A 1-event and a 100-event app phase with Redis's slowlog recording every command:
        where Redis's time goes, by script (not in the figures above: recording costs CPU)."""
        args = self.args
        print(
            f"\ntraced app phases ({args.trace_duration} s each; Redis's slowlog records every "
            "command, so Redis works more than above):"
        )
        print(self.HEADER)
        sizes = ((1, warm1), (100, warm100))
        for events, warm in sizes[:1] if args.quick else sizes:  # a smoke run: the split only
            bodies = args.bodies_1 if events == 1 else args.bodies_100
            body_set = self.workload.make(  # tracing slows the app: half as many suffice
                max(args.threads, bodies * args.trace_duration // (2 * args.duration)),
                events,
                args.threads,
            )
            phase = self.phase(
                "trace", self.app, body_set, warm, trace=True, duration=args.trace_duration
            )
            self.problems += [f"{phase.name}: {problem}" for problem in phase.problems]
            untraced = Usage.merged(
                [p.redis for p in self.phases if p.name == f"app {events}-event" and p.redis]
            )
            untraced_events = sum(
                p.wrk["requests"] * events
                for p in self.phases
                if p.name == f"app {events}-event" and p.redis
            )
            n, traced = phase.wrk["requests"] * events, phase.redis
            assert traced is not None  # an app phase: measured
            print(
                f"  {phase.name}: Redis CPU per event {per_op_us(traced, n):.1f} µs "
                f"(untraced {per_op_us(untraced, untraced_events):.1f}), "
                f"{phase.wrk['requests'] / max(1, traced.calls('evalsha')):.2f} "
                "requests per EVALSHA"
            )
            for line in trace_lines(traced, n, "event"):
                print(line)

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        started = time.monotonic()
        self.setup()
        cfg = self.config
        print(
            f"webhook ingest: wrk {args.threads} threads x {args.connections} connections, "
            f"{args.duration:g} s per phase after {args.warmup:g} s warm-up, "
            f"{args.rounds} round(s); "
            f"gunicorn.conf.py: {cfg['workers']} workers x {cfg['threads']} threads "
            f"({getattr(cfg['worker_class'], '__name__', cfg['worker_class'])}"
            f"{', reuse_port' if cfg.get('reuse_port') else ''}), no access log"
            + (
                f" (overridden: {', '.join(f'{k}={v}' for k, v in self.overrides.items())})"
                if self.overrides
                else ""
            )
            + f"; {os.cpu_count()} CPUs shared by wrk, gunicorn and redis-server; "
            f"code {code_version()}",
            flush=True,
        )
        print(
            f"servers up: app {self.app_ready_s:.1f} s, baseline {self.hello_ready_s:.1f} s; "
            f"{PAGES} Pages with profiles in a private redis-server on {self.redis_server.url}",
            flush=True,
        )
        warm1 = self.workload.make(
            max(args.threads, min(500, args.bodies_1 // 10)), 1, args.threads
        )
        warm100 = self.workload.make(
            max(args.threads, min(50, args.bodies_100 // 10)), 100, args.threads
        )
        header_printed = False
        for round_ in range(1, args.rounds + 1):
            seed_started = time.monotonic()
            one = self.workload.make(args.bodies_1, 1, args.threads)
            hundred = self.workload.make(args.bodies_100, 100, args.threads)
            if not header_printed:
                total = one.kinds + hundred.kinds
                mix = ", ".join(
                    f"{k} {100 * v / sum(total.values()):.0f} %" for k, v in total.most_common()
                )
                print(
                    f"bodies per round (all different, fresh people): {one.bodies:,} x 1 event "
                    f"({one.mean_bytes:.0f} B), {hundred.bodies:,} x 100 events "
                    f"({hundred.mean_bytes / 1024:.1f} KiB); "
                    f"mix {mix}; generated and seeded in {time.monotonic() - seed_started:.1f} s",
                    flush=True,
                )
                print()
                print(self.HEADER)
                header_printed = True
            r = str(round_)
            self.phase(r, self.hello, one, warm1)
            self.phase(r, self.app, one, warm1)
            self.phase(r, self.app, hundred, warm100)
            self.phase(r, self.hello, hundred, warm100)
        self.summary()
        if args.trace_duration:
            self.traced(warm1, warm100)
        if args.profile:
            self.profile(warm1, warm100)
        print(f"\ntotal time {time.monotonic() - started:.0f} s")
        return 1 if self.problems else 0

    def profile(self, warm1: BodySet, warm100: BodySet) -> None:
        """Two more app phases with py-spy on the master and its workers (slower: no figures)."""
        if py_spy() is None:
            print("--profile needs py-spy (.venv/bin/pip install py-spy)")
            return
        print(
            "\nprofile (py-spy --subprocesses --gil: threads holding the GIL, 100 samples/s; "
            "sampling slows the workers):"
        )
        print(self.HEADER)
        for events, warm in ((1, warm1), (100, warm100)):
            body_set = self.workload.make(
                self.args.bodies_1 if events == 1 else self.args.bodies_100,
                events,
                self.args.threads,
            )
            spy = Profiler(self.app.process.pid, self.tmp / f"pyspy-{events}.txt")
            time.sleep(1.0)
            try:
                self.phase("prof", self.app, body_set, warm)
            finally:
                spy.stop()
            for line in summarise_profile(spy.out, PACKAGES, 12):
                print(f"  [{events}-event] {line}")


# The packages a sample of the app can be charged to (see `summarise_profile`), first match wins.
PACKAGES = [
    ("service: bot/", "bot/"),
    ("service: storage/", "storage/"),
    ("redis-py", "redis/"),
    ("flask", "flask/"),
    ("werkzeug", "werkzeug/"),
    ("gunicorn", "gunicorn/"),
    ("json", "json/"),
]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "bench.webhook_ingest needs wrk, the HTTP load generator: apt-get install wrk",
            file=sys.stderr,
        )
        return 1
    sys.path.insert(0, str(ROOT))
    random.seed(7)
    return run_main(
        lambda stack, tmp: Bench(args, stack, tmp).run(),
        "bench-webhook-",
        args.keep,
        "wrk, both gunicorn servers and Redis",
        kept="bodies and logs",
    )


if __name__ == "__main__":
    sys.exit(main())
