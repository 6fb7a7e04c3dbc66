"""Send throughput of node runs vs a bare `requests.Session` loop, against the same simulator.

    python -m bench.send_throughput [--contacts 10000] [--pages 50] [--latency-ms 50]
                                    [--concurrency 16] [--workers 1] [--quick] [--profile]
                                    [--trace-contacts 40]

Everything runs on this machine and is private to this process: a redis-server of our own on a
free port (never the shared 6379), the Facebook simulator (`sandbox.SandboxProcess`: one event loop
in a process of its own, keep-alive like Facebook) answering every send `--latency-ms` after it
arrived, with echoes and receipts off so no webhook traffic is measured, the app
(`bot.app.create_app`) driven through its test client, and `--workers` real worker processes
(`python -m jobs.worker`).

The contacts are spread over `--pages` Pages: one profile, one node and so one run per Page,
all started at once through the API. Each Page keeps the service's own pace (`--rate-per-page`,
default 20/s, SEND_RATE_PER_PAGE's default); a worker sends batches of up to
SEND_PAGES_PER_WORKER Pages at once, so with 50 Pages the per-Page limit is not what is
measured.

Measured, in this order, on the same simulator:
  baseline  `--workers` x `--concurrency` threads posting the same Send API bodies through one
            `requests.Session` (HTTPAdapter pool >= threads), in a child process by default,
            a process of its own as each service worker is (the simulator has its own too).
  service   from the first run POST until every run's state is `done` (read from Redis every
            `--poll-ms`), and on the simulator's side from its first to its last accepted send.
            The service's runs arrive one POST at a time (~10 ms each) and a Page may send
            only 20/s, so its first second ramps up; the "steady" rows leave out the first
            and the last second of each phase to show the rate once every Page is open.
  Redis     the service phase's Redis CPU per send (INFO cpu; the ceiling of one Redis core it
            implies, the issue's target), round trips and commands per send, the costliest
            commands; then a traced phase (`--trace-contacts` more sends per Page, new runs)
            with the slowlog recording every command, split by script (bench/_redis_cpu.py).
The figures end with `ratio service/baseline` and `ratio service/ideal`, where ideal =
messages in flight / latency.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from bench._harness import (
    API_TOKEN,
    APP_SECRET,
    GRAPH_VERSION,
    QUEUE,
    ROOT,
    Profiler,
    Workers,
    code_version,
    machine_busy_seconds,
    mark,
    parse_sizes,
    process_cpu,
    run_main,
    service_env,
    start_app,
    start_redis,
    start_simulator,
    summarise_profile,
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

MESSAGE = "Your account was updated."
TAG = "ACCOUNT_UPDATE"  # retired since 2026-04-27: inside the 24-hour window it goes as UPDATE
BASELINE_METADATA = "bench-baseline"
# Enough Pages that their 20/s paces are not the limit; a few of them traced.
QUICK = {"contacts": 600, "pages": 30, "trace_contacts": 5}

# Targets of the issue (for 16 in flight and 50 ms latency).
TARGET_OF_IDEAL = 0.9
TARGET_PER_WORKER = 300.0
TARGET_BOOKKEEPING = 0.10
TARGET_REDIS_US_PER_SEND = 50.0  # issue 16: Redis CPU per send


# -- arguments ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.send_throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--contacts", type=int, default=10_000, help="messages to send (default 10000)"
    )
    parser.add_argument(
        "--pages", type=int, default=50, help="Pages = profiles = runs (default 50)"
    )
    parser.add_argument(
        "--latency-ms", type=int, default=50, help="simulator answer delay (default 50)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="SEND_CONCURRENCY (default 16)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke size: {QUICK['contacts']} contacts over {QUICK['pages']} Pages",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=200,
        help="RUN_BATCH_SIZE (default 200, the service's default)",
    )
    parser.add_argument(
        "--parallel-batches",
        type=int,
        default=1,
        help="RUN_PARALLEL_BATCHES (default 1, the service's default)",
    )
    parser.add_argument(
        "--rate-per-page",
        type=int,
        default=20,
        help="SEND_RATE_PER_PAGE for the run (default 20, the service's default)",
    )
    parser.add_argument(
        "--poll-ms", type=int, default=50, help="run state polling interval (default 50)"
    )
    parser.add_argument(
        "--inline-baseline",
        action="store_true",
        help="run the baseline's threads in this process, not in a child process",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample worker 1 and its work horses with py-spy and summarise",
    )
    parser.add_argument(
        "--trace-contacts",
        type=int,
        default=40,
        help="after the measured phase, send again to this many contacts of every Page with "
        "Redis's slowlog recording every command, for the split of Redis CPU by script "
        "(default 40; 0: no traced phase)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--baseline-child", action="store_true", help=argparse.SUPPRESS)
    args = parse_sizes(parser, argv, QUICK)
    if not 1 <= args.pages <= args.contacts:
        parser.error("need 1 <= --pages <= --contacts")
    args.trace_contacts = max(0, min(args.trace_contacts, args.contacts // args.pages))
    if args.workers < 1 or args.concurrency < 1 or args.latency_ms < 0:
        parser.error("--workers and --concurrency must be >= 1, --latency-ms >= 0")
    return args


# -- the baseline: a bare requests.Session loop ------------------------------------------------


def baseline_loop(graph_url: str, tasks: list[list[str]], threads: int, app_secret: str) -> dict:
    """POST one Send API body per (page id, token, psid) with `threads` threads sharing one
    Session, the way the service's Graph client does (bearer token + appsecret_proof)."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(threads, 1), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    base = f"{graph_url.rstrip('/')}/{GRAPH_VERSION}"
    secret = app_secret.encode()
    lock = threading.Lock()
    remaining = iter(tasks)
    ok, errors, round_trip_s = [0], Counter(), [0.0]

    def loop() -> None:
        sent, waited = 0, 0.0
        while True:
            with lock:
                task = next(remaining, None)
            if task is None:
                break
            page_id, token, psid = task
            body = {
                "recipient": {"id": psid},
                "messaging_type": "UPDATE",
                "message": {"text": MESSAGE, "metadata": BASELINE_METADATA},
            }
            proof = hmac.new(secret, token.encode(), hashlib.sha256).hexdigest()
            posted = time.perf_counter()
            try:
                answer = session.post(
                    f"{base}/{page_id}/messages",
                    params={"appsecret_proof": proof},
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=(3.0, 10.0),
                )
                waited += time.perf_counter() - posted
                if answer.status_code == 200 and "message_id" in answer.json():
                    sent += 1
                else:
                    with lock:
                        errors[f"HTTP {answer.status_code}"] += 1
            except requests.RequestException as exc:
                with lock:
                    errors[type(exc).__name__] += 1
        with lock:
            ok[0] += sent
            round_trip_s[0] += waited

    cpu_before = time.process_time()
    pool = [
        threading.Thread(target=loop, name=f"baseline-{i}", daemon=True) for i in range(threads)
    ]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    session.close()
    return {
        "elapsed_s": elapsed,
        "ok": ok[0],
        "errors": dict(errors),
        "cpu_s": time.process_time() - cpu_before,
        "round_trip_s": round_trip_s[0],
    }


def baseline_child_main() -> int:
    """`--baseline-child`: read the job as JSON on stdin, print the result as JSON."""
    job = json.load(sys.stdin)
    print(
        json.dumps(baseline_loop(job["graph_url"], job["tasks"], job["threads"], job["app_secret"]))
    )
    return 0


def run_baseline(graph_url: str, tasks: list[list[str]], threads: int, inline: bool) -> dict:
    if inline:
        return baseline_loop(graph_url, tasks, threads, APP_SECRET)
    job = json.dumps(
        {"graph_url": graph_url, "tasks": tasks, "threads": threads, "app_secret": APP_SECRET}
    )
    done = subprocess.run(
        [sys.executable, "-m", "bench.send_throughput", "--baseline-child"],
        cwd=ROOT,
        input=job,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"baseline child exited {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the profile (optional) --------------------------------------------------------------------

# The packages a sample of the worker can be charged to (see `summarise_profile`), first match wins.
PACKAGES = [
    ("service: jobs/", "jobs/"),
    ("service: storage/", "storage/"),
    ("service: bot/", "bot/"),
    ("redis-py", "redis/"),
    ("rq", "rq/"),
    ("requests", "requests/"),
    ("urllib3", "urllib3/"),
    ("flask", "flask/"),
    ("werkzeug", "werkzeug/"),
    ("cryptography", "cryptography/"),
    ("marshmallow", "marshmallow/"),
    ("jinja2", "jinja2/"),
    ("simulator", "sandbox/"),
]


def profile_lines(path: Path, top: int = 15) -> list[str]:
    """Where the sampled worker (and its horses) spent its CPU."""

    def title(total: int) -> str:
        return (
            f"{total} samples = {total / Profiler.RATE:.1f} s holding the GIL, "
            f"worker 1 and its work horses (py-spy --gil --subprocesses, {Profiler.RATE}/s)"
        )

    return summarise_profile(
        path,
        PACKAGES,
        top,
        service=("jobs/", "storage/", "bot/"),
        title=title,
        by_process=lambda processes: (
            "work horses" if processes > 1 else "worker main process (RQ loop, scheduler, ticker)"
        ),
    )


# -- results -----------------------------------------------------------------------------------


@dataclass
class JobStats:
    jobs: int = 0
    not_done: int = 0
    job_seconds: float = 0.0  # sum of job function times (RQ started_at..ended_at)
    ideal_job_seconds: float = 0.0  # sum of contacts_in_job x latency / concurrency
    gap_seconds: float = 0.0  # per worker, time between its consecutive jobs
    gaps: int = 0
    first_start_after_post_s: float = 0.0
    per_worker_messages: dict = field(default_factory=dict)
    failed_jobs: int = 0
    other_jobs: Counter = field(
        default_factory=Counter
    )  # name -> seconds of worker time in the phase


def job_stats(
    connection,
    run_sizes: dict[str, int],
    batch_size: int,
    latency_s: float,
    concurrency: int,
    first_post_epoch: float,
) -> JobStats:
    """Read RQ's finished jobs: how long each took, on which worker, and the gaps between them.

    Bookkeeping measure (the issue's "RQ bookkeeping <= 10 % of send time"): every batch is
    queued as its run is POSTed (one batch per run at the default sizes) and a shift takes the
    ready batches of other Pages as it goes, so a worker does not wait for work; the time
    between the end of one of its jobs and the start of its next (`ended_at` .. `started_at`,
    both stamped by RQ inside the work horse around the job function) is what RQ spends per
    job: dequeue, fork, job/registry updates, result storage, horse exit. Its sum, over the sum
    of job times, is the bookkeeping share (a shift sends many batches in one job, so there are
    few jobs and few gaps). What the job function itself spends beyond contacts x latency /
    concurrency (the service's own per-job setup, Redis calls per contact, the pool draining at
    the end of a batch) is shown apart as in-job overhead.
    """
    from rq.job import Job
    from rq.registry import FailedJobRegistry, FinishedJobRegistry

    stats = JobStats()
    stats.other_jobs = Counter()
    stats.failed_jobs = len(FailedJobRegistry(QUEUE, connection=connection).get_job_ids())
    ids = FinishedJobRegistry(QUEUE, connection=connection).get_job_ids()
    fetched = [
        j for j in Job.fetch_many(ids, connection=connection) if j and j.started_at and j.ended_at
    ]
    jobs = [
        j for j in fetched if j.func_name.endswith(".run_batch") and len(j.args) >= 2
    ]  # the runs' batches
    for job in fetched:  # anything else that took a worker during the measurement
        if job not in jobs and epoch(job.ended_at) > first_post_epoch:
            stats.other_jobs[job.func_name.rsplit(".", 1)[-1]] += epoch(job.ended_at) - max(
                epoch(job.started_at), first_post_epoch
            )
    by_worker: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    per_worker = Counter()
    for job in jobs:
        # A job sends its batch and the batches of other Pages it took: "run/batch: outcome, ..."
        done = [
            part.split(": ", 1)
            for part in str(job.return_value() or "").split(", ")
            if ": " in part
        ]
        contacts = 0
        for name, outcome in done:
            run_id, _, batch = name.rpartition("/")
            contacts += max(0, min(batch_size, run_sizes.get(run_id, 0) - int(batch) * batch_size))
            stats.not_done += outcome != "done"
        start, end = epoch(job.started_at), epoch(job.ended_at)
        by_worker[job.worker_name or "?"].append((start, end, contacts))
        per_worker[job.worker_name or "?"] += contacts
        stats.jobs += 1
        stats.job_seconds += end - start
        stats.ideal_job_seconds += contacts * latency_s / concurrency
    for spans in by_worker.values():
        spans.sort()
        for (_, previous_end, _), (start, _, _) in itertools.pairwise(spans):
            stats.gap_seconds += max(0.0, start - previous_end)
            stats.gaps += 1
    if jobs:
        stats.first_start_after_post_s = min(epoch(j.started_at) for j in jobs) - first_post_epoch
    stats.per_worker_messages = dict(per_worker)
    return stats


def epoch(moment) -> float:
    """Seconds since the epoch of an RQ timestamp (UTC; naive ones are UTC too)."""

    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def simulator_rate(sends: list[dict], service: bool) -> tuple[int, float, float]:
    """(accepted sends, sends/s from the first to the last accepted, sends/s in the steady
    middle: without the first and the last second) of one phase."""
    times = sorted(
        s["received_ms"]
        for s in sends
        if s.get("status") == "accepted" and (s.get("metadata") != BASELINE_METADATA) == service
    )
    if len(times) < 2 or times[-1] == times[0]:
        return len(times), float("nan"), float("nan")
    start, end = times[0] + 1000, times[-1] - 1000
    middle = (
        sum(1 for t in times if start <= t < end) / ((end - start) / 1000)
        if end > start
        else float("nan")
    )
    return len(times), (len(times) - 1) / ((times[-1] - times[0]) / 1000), middle


# -- the benchmark -----------------------------------------------------------------------------


def cpu_share(seconds: float, messages: int) -> str:
    return f"{seconds:.1f} s ({1000 * seconds / messages:.2f} ms/msg)"


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def post_runs(api, nodes: list[dict], runs_contacts: list[list[str]]) -> dict[str, int]:
    """POST one run per node with its contacts, as the program engine does: {run id: size}."""
    run_sizes: dict[str, int] = {}
    for node, contacts in zip(nodes, runs_contacts, strict=True):
        answer = api(
            "POST",
            f"/programs/bench/nodes/{node['id']}/runs",
            json={"contacts": [{"id": c} for c in contacts]},
        )
        if answer.status_code != 202:
            raise RuntimeError(
                f"run not accepted: {answer.status_code} {answer.get_data(as_text=True)}"
            )
        run_sizes[answer.get_json()["run_id"]] = len(contacts)
    return run_sizes


def wait_done(store, pending: list[str], deadline: float, poll_ms: int, tmp: Path) -> None:
    """Until every run's state is `done` (perf_counter `deadline`)."""
    started = time.perf_counter()
    while pending:
        for position, run_id in enumerate(pending):  # runs end roughly in order: oldest first
            if store.runs.get(run_id).state != "done":  # one HGETALL: the API costs ~5 ms
                pending = pending[position:]
                break
        else:
            pending = []
        if pending:
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"{len(pending)} runs not done after {time.perf_counter() - started:.0f} s; "
                    f"worker logs in {tmp}"
                )
            time.sleep(poll_ms / 1000)


def wait_quiet(rq_connection, timeout_s: float = 15.0) -> None:
    """The last work horses record their jobs (and are reaped: their CPU counts). Shifts drop
    the queued jobs of the batches they take, so wait for the queue and the workers to be idle,
    not for one finished job per batch."""
    from rq import Queue, Worker
    from rq.registry import StartedJobRegistry

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (
        Queue(QUEUE, connection=rq_connection).count
        or StartedJobRegistry(QUEUE, connection=rq_connection).count
        or any(w.get_state() != "idle" for w in Worker.all(connection=rq_connection))
    ):
        time.sleep(0.05)
    time.sleep(0.3)


def run_counts(api, run_ids) -> Counter[str]:
    """The runs' outcome counts added up, as the API gives them."""
    counts: Counter[str] = Counter()
    for run_id in run_ids:
        for key, value in api("GET", f"/runs/{run_id}?limit=1").get_json()["counts"].items():
            counts[key] += value
    return counts


@dataclass
class TracedPhase:
    sends: int
    seconds: float
    usage: Usage
    counts: Counter


def traced_phase(args, api, store, nodes, runs_contacts, rq_connection, tmp: Path) -> TracedPhase:
    """A new run to the first `--trace-contacts` contacts of every Page, with the slowlog
    recording every Redis command. Every Page, as in the measured phase: over fewer Pages
    their pace would be the limit, and each send would claim in two calls (a slot to wait
    for, then the claim) where the measured phase mostly needs one."""
    runs_contacts = [contacts[: args.trace_contacts] for contacts in runs_contacts]
    sends = sum(len(c) for c in runs_contacts)
    meter = RedisMeter(store.redis, trace=True)
    meter.start()
    started = time.perf_counter()
    run_sizes = post_runs(api, nodes, runs_contacts)
    wait_done(store, list(run_sizes), started + 60 + sends / 5, args.poll_ms, tmp)
    seconds = time.perf_counter() - started
    wait_quiet(rq_connection)
    usage = meter.stop()
    return TracedPhase(sends, seconds, usage, run_counts(api, run_sizes))


def redis_lines(args, usage: Usage, traced: TracedPhase | None) -> list[str]:
    """Redis CPU per send in the measured phase and where it goes; the traced phase's split."""
    us = per_op_us(usage, args.contacts)
    lines = [
        "Redis during the service phase (run POSTs, claims, pacing, outcomes, leases, RQ, "
        "the bench's polling):",
        "  " + headline(usage, args.contacts, "send"),
        traffic_line(usage, args.contacts, "send"),
        f"  target <= {TARGET_REDIS_US_PER_SEND:.0f} µs per send: "
        f"{mark(us <= TARGET_REDIS_US_PER_SEND)}",
        *command_lines(usage, args.contacts, "send"),
    ]
    if traced:
        traced_us = per_op_us(traced.usage, traced.sends)
        lines += [
            f"traced phase: {traced.sends:,} more sends, a new run of {args.trace_contacts} "
            f"contacts per Page, in {traced.seconds:.1f} s, the slowlog recording every "
            f"command: Redis CPU per send {traced_us:.1f} µs (untraced {us:.1f}); "
            f"outcomes {dict(traced.counts)}",
            *trace_lines(traced.usage, traced.sends, "send"),
        ]
    return lines


def run(args: argparse.Namespace, stack: ExitStack, tmp: Path) -> int:
    from storage.inbound import Event

    C, W, latency_s = args.concurrency, args.workers, args.latency_ms / 1000
    in_flight = C * W
    ideal = in_flight / latency_s if latency_s else float("inf")
    sizes = split(args.contacts, args.pages)

    # Cleanup runs in reverse: workers (and profiler), then the simulator, then Redis.
    redis_server = start_redis(stack, tmp)
    simulator, simulator_url, fb = start_simulator(
        stack, control_timeout=120, latency_ms=args.latency_ms
    )

    # Batching: RUN_BATCH_SIZE stays at the service's default, 200, which at the default sizes
    # (10 000 / 50 = 200 per run) makes one batch per run: 50 batches, each queued as a job.
    # A job runs a shift (jobs/shift.py): besides its own batch it takes the ready batches of
    # other Pages, up to SEND_PAGES_PER_WORKER (the service's default, 32) open at once, shares
    # its SEND_CONCURRENCY sends among them and drops the queued jobs of the batches it took. So
    # a worker sends for many Pages at once, and far fewer jobs run than there are batches (the
    # report gives both). RUN_PARALLEL_BATCHES
    # stays at 1: it only matters for runs of several batches. SEND_RATE_PER_PAGE stays at the
    # service's default, 20/s: a worker's pace is bounded by the Pages it holds x that rate, and
    # 16 in flight at 50 ms (320 msgs/s) need 16 Pages per worker, which the default 50 Pages
    # give one or two workers (one worker holding 32 Pages may send 640/s). The smoke size keeps
    # 30 Pages for the same reason. All three are flags to explore.
    env = service_env(
        redis_server.url,
        simulator_url,
        SEND_CONCURRENCY=str(C),
        SEND_RATE_PER_PAGE=str(args.rate_per_page),
        RUN_BATCH_SIZE=str(args.batch_size),
        RUN_PARALLEL_BATCHES=str(args.parallel_batches),
    )
    app = start_app(stack, env)
    store = app.extensions["storage"]
    client = app.test_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}

    def api(method: str, path: str, **kwargs):
        return client.open(f"/api/v1{path}", method=method, headers=auth, **kwargs)

    # Pages, profiles, opted-in people, one node per profile.
    setup_started = time.monotonic()
    now_ms = int(time.time() * 1000)
    nodes, tasks, runs_contacts = [], [], []
    next_contact = 0
    for index, size in enumerate(sizes):
        page = fb.create_page(name=f"Bench Page {index + 1}")
        answer = api(
            "POST",
            "/profiles",
            json={
                "name": f"Bench {index + 1}",
                "page_id": page["id"],
                "page_access_token": page["token"],
            },
        )
        if answer.status_code != 201:
            raise RuntimeError(
                f"profile not created: {answer.status_code} {answer.get_data(as_text=True)}"
            )
        profile_id = answer.get_json()["id"]
        psids = fb.add_people(
            page["id"], [{"last_interaction_ms": now_ms, "receipts": "none"}] * size
        )
        contacts = [f"c{next_contact + i:06d}" for i in range(size)]
        next_contact += size
        events = [
            Event("optin", page["id"], psid, now_ms, profile=profile_id, contact=cid)
            for cid, psid in zip(contacts, psids, strict=True)
        ]
        for start in range(0, size, 2000):  # an opt-in names a contact we hold
            store.contacts.merge_many(
                {cid: {"FIRSTNAME": f"Person {cid}"} for cid in contacts[start : start + 2000]}
            )
            store.inbound.apply(events[start : start + 2000])
        nodes.append(
            {
                "id": f"n{index + 1}",
                "type": "messenger",
                "profile_id": profile_id,
                "tag": TAG,
                "message": MESSAGE,
            }
        )
        runs_contacts.append(contacts)
        tasks += [[page["id"], page["token"], psid] for psid in psids]
    answer = api(
        "PUT", "/programs/bench", json={"name": "Bench", "status": "active", "nodes": nodes}
    )
    if answer.status_code not in (200, 201):
        raise RuntimeError(
            f"program not saved: {answer.status_code} {answer.get_data(as_text=True)}"
        )

    workers = Workers(env, tmp)
    stack.callback(workers.stop)
    workers.start(W)
    rq_connection = app.extensions["rq_queue"].connection
    workers.wait_registered(rq_connection)
    setup_s = time.monotonic() - setup_started
    print(
        f"set up {len(sizes)} Pages, {args.contacts} opted-in contacts and {W} worker(s) "
        f"in {setup_s:.1f} s",
        flush=True,
    )

    # -- baseline --------------------------------------------------------------------------
    bench_pid, redis_pid = os.getpid(), redis_server.process.pid
    worker_pids = [p.pid for p in workers.processes]

    def cpu_now() -> dict[str, float]:
        """CPU seconds so far: the simulator, this process (setup, polling), redis-server, the
        workers with their reaped work horses, and the whole machine."""
        return {
            "simulator": process_cpu(simulator.pid),
            "bench": process_cpu(bench_pid),
            "redis": process_cpu(redis_pid),
            "workers": sum(process_cpu(pid, children=True) for pid in worker_pids),
            "machine": machine_busy_seconds(),
        }

    cpu0 = cpu_now()
    base = run_baseline(simulator_url, tasks, in_flight, args.inline_baseline)
    cpu1 = cpu_now()
    if base["ok"] != args.contacts:
        raise RuntimeError(
            f"baseline: {base['ok']} of {args.contacts} accepted, errors {base['errors']}"
        )
    baseline_rate = base["ok"] / base["elapsed_s"]
    print(
        f"baseline: {base['ok']} sends in {base['elapsed_s']:.2f} s = {baseline_rate:.1f} msgs/s",
        flush=True,
    )

    # -- service ---------------------------------------------------------------------------
    idle_started = time.monotonic()
    earlier_jobs = workers.wait_idle(rq_connection)
    if earlier_jobs:
        print(
            f"waited {time.monotonic() - idle_started:.1f} s for the workers to be idle; "
            "jobs before the service phase: "
            f"{dict(Counter(n.rsplit('.', 1)[-1] for n in earlier_jobs))}",
            flush=True,
        )
    profiler = None
    if args.profile:
        profiler = Profiler(workers.processes[0].pid, tmp / "worker-1.pyspy.txt")
        stack.callback(profiler.stop)
        time.sleep(1.0)  # let py-spy attach before the first job
    cpu2 = cpu_now()
    latency_before = store.metrics.read("graph_latency")
    redis_meter = RedisMeter(store.redis)
    redis_meter.start()
    first_post_epoch = time.time()
    started = time.perf_counter()
    run_sizes = post_runs(api, nodes, runs_contacts)
    posted_s = time.perf_counter() - started
    deadline = started + 60 + 10 * args.contacts / min(ideal, baseline_rate)
    wait_done(store, list(run_sizes), deadline, args.poll_ms, tmp)
    service_s = time.perf_counter() - started
    service_rate = args.contacts / service_s

    batches = sum(math.ceil(n / args.batch_size) for n in run_sizes.values())
    wait_quiet(rq_connection)
    cpu3 = cpu_now()
    redis_usage = redis_meter.stop()
    latency_after = store.metrics.read("graph_latency")
    if profiler:
        profiler.stop()

    counts = run_counts(api, run_sizes)
    sends = fb.sends()
    sim_service_n, sim_service_rate, steady_service_rate = simulator_rate(sends, service=True)
    _, sim_base_rate, steady_base_rate = simulator_rate(sends, service=False)
    stats = job_stats(rq_connection, run_sizes, args.batch_size, latency_s, C, first_post_epoch)
    traced = (
        traced_phase(args, api, store, nodes, runs_contacts, rq_connection, tmp)
        if args.trace_contacts
        else None
    )

    # -- report ----------------------------------------------------------------------------
    per_worker = service_rate / W
    bookkeeping = stats.gap_seconds / stats.job_seconds if stats.job_seconds else float("nan")
    in_job = (
        (stats.job_seconds - stats.ideal_job_seconds) / stats.job_seconds
        if stats.job_seconds
        else float("nan")
    )
    whole = (service_s - args.contacts * latency_s / in_flight) / service_s
    jobs_per_worker = stats.jobs / W
    per_job_gap_ms = 1000 * stats.gap_seconds / stats.gaps if stats.gaps else float("nan")
    width = 52
    out = print
    out()
    out(
        f"send throughput: {args.contacts} contacts over {args.pages} Pages "
        f"({min(sizes)}-{max(sizes)} per run, {len(run_sizes)} runs), "
        f"{W} worker(s) x {C} in flight, simulator latency {args.latency_ms} ms"
    )
    out(
        f"  RUN_BATCH_SIZE {args.batch_size} -> {batches} batches in {stats.jobs} jobs "
        f"({jobs_per_worker:.0f} per worker), RUN_PARALLEL_BATCHES {args.parallel_batches}, "
        f"SEND_RATE_PER_PAGE {args.rate_per_page}/s, "
        f"baseline {'in this process' if args.inline_baseline else 'in a child process'}, "
        f"{os.cpu_count()} CPUs shared by everything; code {code_version()}"
    )
    out()
    out(f"{'':{width}}{'msgs/s':>10}{'x ideal':>10}")
    rows = [
        (f"ideal ({in_flight} in flight / {args.latency_ms} ms)", ideal),
        (f"baseline: requests.Session, {in_flight} threads", baseline_rate),
        ("baseline, simulator side (first..last send)", sim_base_rate),
        ("baseline, simulator side, steady (no first/last s)", steady_base_rate),
        ("service: first POST .. all runs done", service_rate),
        ("service, simulator side (first..last send)", sim_service_rate),
        ("service, simulator side, steady (no first/last s)", steady_service_rate),
        (f"service per worker ({W})", per_worker),
    ]
    for label, value in rows:
        of_ideal = value / ideal * (W if label.startswith("service per") else 1)
        out(f"{label:{width}}{value:10.1f}{of_ideal:10.2f}")
    out()
    out(
        f"service wall time: {service_s:.2f} s "
        f"(POSTing the {len(run_sizes)} runs took {posted_s:.2f} s; first job started "
        f"{1000 * stats.first_start_after_post_s:.0f} ms after the first POST); "
        f"baseline {base['elapsed_s']:.2f} s"
    )
    out(
        f"outcomes: {dict(counts)}; simulator accepted {sim_service_n} service sends; "
        f"jobs finished {stats.jobs} (not 'done': {stats.not_done}), failed {stats.failed_jobs}"
    )
    if stats.other_jobs:
        out(
            "other jobs that held a worker during the service phase: "
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stats.other_jobs.items())
        )
    if len(stats.per_worker_messages) > 1:
        out(
            "messages per worker: "
            + ", ".join(
                f"{n / service_s:.1f} msgs/s ({n})" for n in stats.per_worker_messages.values()
            )
        )
    out(
        f"RQ bookkeeping between jobs: {per_job_gap_ms:.1f} ms per job, "
        f"{100 * bookkeeping:.1f} % of job time "
        f"({stats.gap_seconds:.2f} s over {stats.job_seconds:.2f} s in {stats.jobs} jobs)"
    )
    in_job_s = stats.job_seconds - stats.ideal_job_seconds
    out(
        f"in-job overhead beyond contacts x latency / concurrency: {100 * in_job:.1f} % "
        "of job time "
        f"({in_job_s:.2f} s; {1000 * in_job_s / max(1, stats.jobs):.0f} ms per job)"
    )
    out(f"all overhead, (wall - contacts x latency / in flight) / wall: {100 * whole:.1f} %")
    graph_calls = latency_after.get("count", 0) - latency_before.get("count", 0)
    service_round_trip_ms = (
        1000 * (latency_after.get("sum", 0) - latency_before.get("sum", 0)) / max(1, graph_calls)
    )
    out(
        f"per send, in ms: the Send API round trip as the client times it (the simulator holds "
        f"each {args.latency_ms} ms): baseline {1000 * base['round_trip_s'] / base['ok']:.1f}, "
        f"service {service_round_trip_ms:.1f} (over {graph_calls:.0f} calls); "
        "a thread's whole cycle (in flight / rate): "
        f"baseline {1000 * in_flight / baseline_rate:.1f}, "
        f"service {1000 * in_flight / service_rate:.1f}"
    )
    service_cpu = {k: cpu3[k] - cpu2[k] for k in cpu3}
    service_other = service_cpu["machine"] - sum(
        v for k, v in service_cpu.items() if k != "machine"
    )
    out(
        f"CPU during the service phase ({os.cpu_count()} CPUs x {service_s:.1f} s = "
        f"{os.cpu_count() * service_s:.1f} CPU-s available): workers incl. work horses "
        f"{cpu_share(service_cpu['workers'], args.contacts)}, "
        f"simulator {cpu_share(service_cpu['simulator'], args.contacts)}, bench process (polling) "
        f"{service_cpu['bench']:.1f} s, redis-server {service_cpu['redis']:.1f} s; "
        f"other processes on the machine {max(0.0, service_other):.1f} s"
    )
    base_cpu = {k: cpu1[k] - cpu0[k] for k in cpu1}
    client_cpu = base["cpu_s"]
    base_other = (
        base_cpu["machine"]
        - sum(v for k, v in base_cpu.items() if k != "machine")
        - (0.0 if args.inline_baseline else client_cpu)
    )
    out(
        f"CPU during the baseline ({base['elapsed_s']:.1f} s): "
        f"client {cpu_share(client_cpu, args.contacts)}"
        f"{' (inline: in the bench process)' if args.inline_baseline else ''}, "
        f"simulator {cpu_share(base_cpu['simulator'], args.contacts)}; "
        f"other processes on the machine {max(0.0, base_other):.1f} s"
    )
    for line in redis_lines(args, redis_usage, traced):
        out(line)
    out()
    out(f"ratio service/baseline: {service_rate / baseline_rate:.2f}")
    out(f"ratio service/ideal: {service_rate / ideal:.2f}")
    if args.concurrency == 16 and args.latency_ms == 50:
        out(
            f"targets: >= {TARGET_OF_IDEAL} x ideal: "
            f"{mark(service_rate / ideal >= TARGET_OF_IDEAL)}; "
            f">= {TARGET_PER_WORKER:.0f} msgs/s per worker: "
            f"{mark(per_worker >= TARGET_PER_WORKER)}; "
            f"RQ bookkeeping <= {100 * TARGET_BOOKKEEPING:.0f} %: "
            f"{mark(bookkeeping <= TARGET_BOOKKEEPING)}"
        )
    if profiler:
        out()
        out("profile (py-spy):")
        for line in profile_lines(profiler.out):
            out("  " + line)
        out("  (sampling slows the worker: the figures above are not the benchmark's)")
    ok = counts.get("sent", 0) == args.contacts and stats.failed_jobs == 0
    ok = ok and (traced is None or traced.counts.get("sent", 0) == traced.sends)
    if not ok:
        out(f"PROBLEM: not every contact was sent (logs in {tmp})")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline_child:
        return baseline_child_main()
    return run_main(
        lambda stack, tmp: run(args, stack, tmp),
        "bench-send-",
        args.keep,
        "workers, simulator and Redis",
    )


if __name__ == "__main__":
    sys.exit(main())
