"""`make run`: start Redis if REDIS_URL and REDIS_SENTINELS are unset, then the Procfile's
processes; stop them in order.

One `make run` per checkout: a lock on var/make-run.pid, held while the launcher lives, makes a
second one refuse at once, before it touches anything (it used to delete the first one's Redis
socket). The embedded Redis keeps its data in var/redis (append-only) so a second run continues
where the first stopped. In sandbox mode the Facebook simulator runs too, keeping what it issued
in var/sandbox-state.json.

The launcher runs the processes itself (honcho SIGKILLs everything 5 s after a Ctrl-C, and stops
the simulator together with the worker that is still sending to it). Each gets a session of its
own, so the terminal's Ctrl-C reaches only the launcher, which then stops the worker first (it
finishes the batches it holds, up to a batch's time at the Page rate), then web and simulator,
then Redis; a second Ctrl-C stops them at once. A stop asked for exits 0, so make prints no
"Error 130" (it still dies of the SIGINT it got itself, as the shell expects).
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from bot.config import Settings, read_dotenv
from bot.errors import ConfigError
from storage.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
STOP_WAIT_S = 35  # web: gunicorn's graceful_timeout (30 s) for requests in flight, and a margin
_print_lock = threading.Lock()


class AlreadyRunning(Exception):
    """Another launcher holds the lock of this var/ directory."""

    def __init__(self, pid: str) -> None:
        super().__init__(f"make run is already running (pid {pid or 'unknown'})")


def say(line: str) -> None:
    """Print a line whole, even while the children's lines are relayed."""
    with _print_lock:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except OSError:  # the reader is gone (`make run | tee` after Ctrl-C): stop them anyway
            pass


def lock_var_dir(var_dir: Path) -> IO[str]:
    """Take var/make-run.pid for this process's lifetime, or raise AlreadyRunning.

    flock, not the file's existence: the kernel drops the lock when its holder dies however it
    dies, so a file left by a killed run blocks nothing. The file is never deleted (deleting it
    would let two runs lock two different files)."""
    var_dir.mkdir(parents=True, exist_ok=True)
    # Not inherited by children; held (not closed) for the launcher's lifetime, so no `with`.
    handle = open(var_dir / "make-run.pid", "a+", encoding="ascii")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip()
        handle.close()
        raise AlreadyRunning(pid) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def child_environment(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """What web, worker and simulator need to agree on (sandbox secrets included)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **env,
        "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
        "PORT": str(settings.port),
        "PYTHONUNBUFFERED": "1",
    }
    if settings.sandbox:
        env.update(
            SANDBOX="1",
            FB_APP_ID=settings.fb_app_id,
            FB_APP_SECRET=settings.fb_app_secret,
            SANDBOX_WEBHOOK_URL=f"http://127.0.0.1:{settings.port}/webhook",
            GRAPH_API_URL=settings.graph_api_url,
        )
    return env


def main() -> int:
    env = {**read_dotenv(ROOT / ".env"), **os.environ}  # the real environment wins, as in Settings
    pending = {"REDIS_URL": "unix:///pending"} if wants_embedded_redis(env) else {}
    try:  # validate before starting anything; the embedded Redis URL is not known yet
        settings = Settings.from_env({**env, **pending})
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    var_dir = Path(env.get("VAR_DIR") or ROOT / "var")
    try:
        lock = lock_var_dir(var_dir)
    except AlreadyRunning as exc:
        print(exc, file=sys.stderr)
        return 1
    with lock:
        try:
            return _serve(settings, env, var_dir)
        except KeyboardInterrupt:  # Ctrl-C while Redis or the demo data were loading: all stopped
            return 0


def wants_embedded_redis(env: dict[str, str]) -> bool:
    """No Redis named, neither a single one nor Sentinel: `make run` starts its own."""
    return not (env.get("REDIS_URL", "").strip() or env.get("REDIS_SENTINELS", "").strip())


def _serve(settings: Settings, env: dict[str, str], var_dir: Path) -> int:
    server = None
    if wants_embedded_redis(env):
        server = EmbeddedRedis(var_dir / "redis")
        try:
            env["REDIS_URL"] = server.start()
        except RuntimeError as exc:
            print(f"launch: {exc}", file=sys.stderr)
            return 1
        say(
            f"launch: embedded Redis at {env['REDIS_URL']} (data in {server.data_dir}, append-only)"
        )
    try:
        if settings.sandbox:
            env["SANDBOX_SEED"] = str(_load_demo(env, var_dir))
            env["SANDBOX_STATE"] = str(var_dir / "sandbox-state.json")
        return _run_processes(settings, child_environment(settings, env))
    finally:
        if server:
            say("launch: stopping: Redis...")
            server.stop()
            say("launch: embedded Redis stopped")


def _load_demo(env: dict[str, str], var_dir: Path) -> Path:
    """Demo data in Redis and the simulator's seed file (sandbox mode only)."""
    import storage
    from bot import demo
    from bot.crypto import TokenCipher

    settings = Settings.from_env(env)
    store = storage.Storage(
        storage.connect(settings),
        cipher=TokenCipher(settings.token_encryption_keys),
        tz=settings.stats_timezone,
    )
    try:
        profile_id = demo.load(store)
    finally:
        store.redis.close()
    say(
        f"launch: demo data loaded (profile {profile_id}, program {demo.PROGRAM_ID!r}, "
        f"node {demo.NODE_ID!r})"
    )
    return demo.write_seed(var_dir / "sandbox-seed.json")


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP (the terminal closed), counted: the first asks for an orderly
    stop, the next for haste."""

    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1
        self.event.set()


def _run_processes(settings: Settings, env: dict[str, str]) -> int:
    names = ["web", "worker"] + (["sandbox"] if settings.sandbox else [])
    mode = "sandbox mode (Facebook simulator)" if settings.sandbox else "live Facebook"
    say(f"launch: {mode}; web on http://127.0.0.1:{settings.port}")
    stop = StopSignals()
    children, relays = start_processes(names, env)
    try:
        exited = _wait_for_stop_or_exit(children, stop)
        if exited:
            say(f"launch: {exited} exited with {children[exited].returncode}; stopping the others")
        # The worker may finish the batches it holds: a batch takes its size / the Page's rate.
        grace_s = math.ceil(settings.run_batch_size / settings.send_rate_per_page) + 5
        stop_processes(children, grace_s, stop)
    finally:  # in their own sessions, nothing else would stop them if the launcher failed
        for process in children.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    for relay in relays:  # their last lines before the launcher's own
        relay.join(5)
    if exited:
        return children[exited].returncode or 1
    return 0  # a stop asked for: make then prints no "Error 130"


def read_procfile(path: Path) -> dict[str, str]:
    """The Procfile's `name: command` lines."""
    commands = {}
    for line in path.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            commands[name.strip()] = command.strip()
    return commands


def start_processes(
    names: list[str], env: dict[str, str]
) -> tuple[dict[str, subprocess.Popen], list[threading.Thread]]:
    """Start the Procfile's processes, each in a session of its own; threads relay their output."""
    commands = read_procfile(ROOT / "Procfile")
    width = max(map(len, names))
    children, relays = {}, []
    for name in names:
        # exec: the signals the launcher sends reach the process itself, not a shell.
        process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {commands[name]}"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        relays.append(
            threading.Thread(target=_relay, args=(name.ljust(width), process.stdout), daemon=True)
        )
        relays[-1].start()
        say(f"launch: {name} started (pid {process.pid})")
        children[name] = process
    return children, relays


def _relay(prefix: str, stream: IO[bytes]) -> None:
    for line in iter(stream.readline, b""):
        say(f"{time.strftime('%H:%M:%S')} {prefix} | {line.decode(errors='replace').rstrip()}")


def _wait_for_stop_or_exit(children: dict[str, subprocess.Popen], stop: StopSignals) -> str | None:
    """Wait for a stop signal (None) or for a process to exit (its name)."""
    while not stop.event.wait(0.2):
        for name, process in children.items():
            if process.poll() is not None:
                return name
    return None


def stop_processes(children: dict[str, subprocess.Popen], grace_s: int, stop: StopSignals) -> None:
    """The worker first (the simulator must outlive its sends, web its receipts), then the rest."""
    hurry_after = stop.count  # one more signal from here on means "at once"
    worker = children.get("worker")
    if worker and worker.poll() is None:
        say(
            f"launch: stopping: worker finishing its batch (up to {grace_s} s; "
            "Ctrl-C again to stop at once)..."
        )
        worker.send_signal(signal.SIGTERM)
        if not _wait_or_kill(worker, grace_s, stop, hurry_after):
            say(
                "launch: worker killed; its unfinished batch is taken up at the next start "
                "(sends in flight become 'unknown', never resent)"
            )
    others = [name for name, process in children.items() if process.poll() is None]
    if others:
        say(f"launch: stopping: {', '.join(others)}...")
    for name in others:
        children[name].send_signal(signal.SIGTERM)
    for name in others:
        if not _wait_or_kill(children[name], STOP_WAIT_S, stop, hurry_after):
            say(f"launch: {name} killed")


def _wait_or_kill(
    process: subprocess.Popen, timeout_s: float, stop: StopSignals, hurry_after: int
) -> bool:
    """Wait until the process exits; SIGKILL its whole group past the timeout or on another
    Ctrl-C. True if it exited by itself."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        if stop.count > hurry_after or time.monotonic() > deadline:
            os.killpg(
                process.pid, signal.SIGKILL
            )  # its session's group: a work horse, gunicorn's workers
            process.wait()
            return False
        time.sleep(0.1)
    return True


if __name__ == "__main__":
    sys.exit(main())
