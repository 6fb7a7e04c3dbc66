"""What the benchmarks share: the service's environment, private Redis / simulator / app, worker
processes (their stop and kill helpers serve tests/workers.py too), CPU accounting, py-spy
profiles, `--quick` sizes and the `main()` wrapper.

Not a benchmark (the leading underscore keeps `python -m bench` from running it). Only the
standard library is imported at the top: `send_throughput --baseline-child` imports this module
too and should stay light; the project and psutil are imported where they are used.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_SECRET = "bench-app-secret"
API_TOKEN = "bench-api-token"
SECRET_KEY = "bench-secret-key"
GRAPH_VERSION = "v26.0"
QUEUE = "messenger"


# -- configuration -----------------------------------------------------------------------------


def service_env(redis_url: str, graph_url: str, **overrides: str) -> dict[str, str]:
    """The environment of the app and of the worker processes: outside sandbox mode, explicit
    secrets, LOG_LEVEL=WARNING; `overrides` add to it or replace entries."""
    return {
        "REDIS_URL": redis_url,
        "SANDBOX": "0",
        "SECRET_KEY": SECRET_KEY,
        "API_TOKEN": API_TOKEN,
        "ADMIN_PASSWORD": "bench-admin",
        "FB_APP_ID": "100000000000001",
        "FB_APP_SECRET": APP_SECRET,
        "FB_VERIFY_TOKEN": "bench-verify-token",
        "TOKEN_ENCRYPTION_KEY": "q8d5wH4bPZ0bV1N6oQ0m0c2u4nJkK9m1XG2b4B2l3bA=",
        "GRAPH_API_URL": graph_url,
        "GRAPH_API_VERSION": GRAPH_VERSION,
        "LOG_LEVEL": "WARNING",
        **overrides,
    }


def parse_sizes(
    parser: argparse.ArgumentParser, argv: list[str] | None, quick: dict
) -> argparse.Namespace:
    """Parse `argv`; with `--quick` (the parser's own flag) the attributes in `quick` take
    their smoke sizes."""
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in quick.items():
            setattr(args, name, value)
    return args


# -- private servers (each stopped by `stack`) -------------------------------------------------


def start_redis(stack: ExitStack, tmp: Path, appendonly: bool = False):
    """A redis-server of our own on a free TCP port (never the shared 6379), without AOF unless
    `appendonly` (then `appendfsync everysec`, as production is advised to run)."""
    from storage.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp / "redis", appendonly=appendonly, use_socket=False)
    server.start()
    stack.callback(server.stop)
    return server


def start_simulator(stack: ExitStack, control_timeout: float = 30.0, **config):
    """The Facebook simulator in a process of its own (`sandbox.process`; no echoes, delivery or
    read receipts) and a client to drive it: (process, url, control)."""
    from sandbox.client import SandboxControl
    from sandbox.process import SandboxProcess

    config = {
        "app_secret": APP_SECRET,
        "echo": False,
        "delivery_delay_ms": None,
        "read_delay_ms": None,
        **config,
    }
    process = stack.enter_context(SandboxProcess(**config))
    control = SandboxControl(process.url, timeout=control_timeout)
    stack.callback(control.close)
    return process, process.url, control


def start_app(stack: ExitStack, env: dict[str, str]):
    """`bot.app.create_app` with settings from `env` only (no .env file); `stack` closes its
    clients."""
    from bot.app import create_app
    from bot.config import Settings

    app = create_app(Settings.from_env(env, dotenv=False))
    stack.callback(app.extensions["storage"].redis.close)
    stack.callback(app.extensions["graph"].close)
    return app


# -- worker processes --------------------------------------------------------------------------


def kill_worker(process: subprocess.Popen) -> None:
    """SIGKILL a worker and its work horse (which RQ puts in a process group of its own)."""
    import psutil

    family = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGKILL)
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait()
    psutil.wait_procs(family, timeout=5)


def stop_workers(processes: list[subprocess.Popen], grace_s: float = 15.0) -> None:
    """SIGTERM (RQ's warm shutdown: the current job ends), then SIGKILL after `grace_s`."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            kill_worker(process)


class Workers:
    """`python -m jobs.worker` processes with the bench's environment; logs in `log_dir`."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []

    def start(self, count: int) -> None:
        for _ in range(count):
            with open(self.log_dir / f"worker-{len(self.processes) + 1}.log", "w") as log:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "jobs.worker"],
                        cwd=ROOT,
                        env=self.env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def wait_registered(self, connection, timeout: float = 60.0) -> None:
        """Until every worker has registered with RQ (imports done, listening)."""
        from rq import Worker

        deadline = time.monotonic() + timeout
        while len(Worker.all(connection=connection)) < len(self.processes):
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"worker exited with {process.returncode}:\n{self.logs()[-3000:]}"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"workers did not register within {timeout} s:\n{self.logs()[-3000:]}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (RQ's warm shutdown: the current job ends), SIGKILL after 15 s."""
        stop_workers(self.processes)

    def wait_idle(self, connection, quiet_s: float = 1.5, timeout: float = 300.0) -> list[str]:
        """Until no job has been queued or running for `quiet_s` (a new worker's ticker queues
        its periodic jobs on its first tick, 1 s after start); returns the jobs that ran."""
        from rq import Queue, Worker
        from rq.job import Job
        from rq.registry import FinishedJobRegistry

        queue = Queue(QUEUE, connection=connection)
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            if queue.count or any(
                w.get_state() != "idle" for w in Worker.all(connection=connection)
            ):
                quiet_since = time.monotonic()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers were still busy after {timeout} s")
            time.sleep(0.05)
        ids = FinishedJobRegistry(QUEUE, connection=connection).get_job_ids()
        return [j.func_name for j in Job.fetch_many(ids, connection=connection) if j]

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.log_dir.glob("worker-*.log")))


# -- CPU accounting ----------------------------------------------------------------------------


def process_cpu(pid_or_process, children: bool = False) -> float:
    """User + system CPU seconds of a process (a pid or a `psutil.Process`), with `children`
    also those of its children it has reaped (RQ's work horses, recycled gunicorn workers);
    0.0 once it is gone."""
    import psutil

    try:
        process = (
            psutil.Process(pid_or_process) if isinstance(pid_or_process, int) else pid_or_process
        )
        t = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.user + t.system + ((t.children_user + t.children_system) if children else 0.0)


def wait_for_parked_writes(store, timeout_s: float = 10.0) -> None:
    """Wait until the web processes have applied the webhook writes they parked (within
    milliseconds: storage/inbound.py); raise if any is left, or was set aside as failed."""
    deadline = time.monotonic() + timeout_s
    while store.metrics.gauges()["webhook_writes_parked"] and time.monotonic() < deadline:
        time.sleep(0.01)
    gauges = store.metrics.gauges()
    parked, set_aside = gauges["webhook_writes_parked"], gauges["webhook_writes_set_aside"]
    if parked or set_aside:
        raise RuntimeError(
            f"parked webhook writes: {parked} not applied after {timeout_s} s, {set_aside} failed"
        )


def python_speed_s(additions: int = 10_000_000, tries: int = 3) -> float:
    """Seconds a pure-Python loop of `additions` takes here, best of `tries`: this machine's
    speed varies from day to day (shared vCPUs), and every figure with it."""
    best = math.inf
    for _ in range(tries):
        started, total = time.perf_counter(), 0
        for i in range(additions):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


def wakeup_round_trip_us(round_trips: int = 20_000) -> float:
    """Microseconds for a byte to go to a child process and back over a socketpair: the cost of
    waking a sleeping process, which every request between our processes pays twice (and
    which, more than arithmetic, varies from day to day on this machine)."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the child echoes until the parent closes its end
        ours.close()
        while data := theirs.recv(16):
            theirs.sendall(data)
        os._exit(0)
    theirs.close()
    started = time.perf_counter()
    for _ in range(round_trips):
        ours.sendall(b"x")
        ours.recv(16)
    took = time.perf_counter() - started
    ours.close()
    os.waitpid(pid, 0)
    return took / round_trips * 1e6


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, all processes)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


# -- py-spy ------------------------------------------------------------------------------------


def py_spy() -> str | None:
    """The py-spy executable (on PATH or beside this Python), or None."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return exe if Path(exe).exists() else None


class Profiler:
    """py-spy sampling a process and its subprocesses (forked work horses, gunicorn workers),
    only threads holding the GIL (so roughly where the CPU goes; waiting on sockets is not
    sampled), into `out` in py-spy's raw format; its own messages in `out` with suffix .log."""

    RATE = 100

    def __init__(self, pid: int, out: Path):
        exe = py_spy()
        if exe is None:
            raise RuntimeError("--profile needs py-spy (.venv/bin/pip install py-spy)")
        self.out = out
        with open(out.with_suffix(".log"), "w") as log:
            self.process = subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--subprocesses",
                    "--gil",
                    "--rate",
                    str(self.RATE),
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def stop(self) -> None:
        """SIGINT: py-spy writes its file and exits (killed after 30 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def frame_file(frame: str) -> str:
    """The file of a py-spy frame `function (file:line)`; py-spy shortens it to the package part."""
    inner = frame[frame.rfind("(") + 1 :]
    return inner.rsplit(":", 1)[0] if ":" in inner else inner.rstrip(")")


def summarise_profile(
    path: Path,
    packages: list[tuple[str, str]],
    top: int,
    *,
    service: tuple[str, ...] = ("bot/", "storage/"),
    title: Callable[[int], str] | None = None,
    by_process: Callable[[int], str] | None = None,
) -> list[str]:
    """Lines of text: where the samples of a py-spy raw profile (`Profiler`) went.

    A sample is charged to the package of the frame nearest the leaf that belongs to one of
    `packages` ((label, file prefix) pairs, the first match wins), so a socket read inside
    urllib3 counts for urllib3; stacks of the standard library alone are charged to the leaf's
    file. Then the `top` functions by own time, and the `top` functions whose file starts with
    one of `service` by inclusive time.

    The first line is `title(total)` (default "N samples"). Without `by_process`, only samples
    with Python frames count and "; by package nearest the leaf:" ends that line. With it,
    every sample counts and the title is followed by the share of each label
    `by_process(processes named in the stack)` (a forked child's stack names its parent too).
    """
    if not path.exists():
        return [f"(no profile written; see {path.with_suffix('.log')})"]
    own, inclusive, by_package, where = Counter(), Counter(), Counter(), Counter()
    total = 0
    for line in path.read_text().splitlines():
        text, _, count = line.rpartition(" ")
        if not (text and count.isdigit()):
            continue
        frames, n = text.split(";"), int(count)
        if by_process:
            where[by_process(sum(1 for f in frames if f.startswith("process ")))] += n
            total += n
        code = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not code:
            continue
        if not by_process:
            total += n
        own[code[-1]] += n
        for name in set(code):
            inclusive[name] += n
        label = None
        for frame in reversed(code):
            label = next(
                (name for name, prefix in packages if frame_file(frame).startswith(prefix)), None
            )
            if label:
                break
        by_package[label or f"stdlib {frame_file(code[-1])}"] += n
    if not total:
        return ["(no samples)"]
    first = title(total) if title else f"{total} samples"
    if by_process:
        lines = [first] + [f"  {100 * c / total:5.1f} %  {name}" for name, c in where.most_common()]
        lines.append("by package nearest the leaf:")
    else:
        lines = [f"{first}; by package nearest the leaf:"]
    lines += [f"  {100 * c / total:5.1f} %  {name}" for name, c in by_package.most_common(top)]
    lines.append(f"top {top} functions, own time:")
    lines += [f"  {100 * c / total:5.1f} %  {name}" for name, c in own.most_common(top)]
    ours = [(n, c) for n, c in inclusive.most_common() if frame_file(n).startswith(service)]
    lines.append(f"top {top} service functions, inclusive:")
    lines += [f"  {100 * c / total:5.1f} %  {name}" for name, c in ours[:top]]
    return lines


# -- reporting ---------------------------------------------------------------------------------


def code_version() -> str:
    """The commit measured, and whether the work tree had changes on top of it."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head or 'unknown'}{' + uncommitted changes' if dirty else ''}"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=10
    ).stdout.strip()


def mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


# -- main() ------------------------------------------------------------------------------------


def run_main(
    run: Callable[[ExitStack, Path], int], prefix: str, keep: bool, what: str, kept: str = "logs"
) -> int:
    """Call `run(stack, tmp)` with a fresh temporary directory (`prefix`) and an ExitStack that
    stops whatever it started; returns the exit code: run's own, 130 when interrupted (Ctrl-C
    or SIGTERM; "interrupted; stopped {what}"), 1 on an exception (traceback printed). The
    directory ("{kept} kept in ...") stays when `keep` or on failure, else it is removed."""

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    code = 1
    try:
        with ExitStack() as stack:
            code = run(stack, tmp)
    except KeyboardInterrupt:
        print(f"interrupted; stopped {what}", file=sys.stderr)
        code = 130
    except Exception as exc:  # noqa: BLE001 - report, clean up (done above), exit non-zero
        traceback.print_exc()
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        if keep or code not in (0, 130):
            print(f"{kept} kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return code
