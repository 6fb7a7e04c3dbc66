"""The simulator in a process of its own, for tests and benchmarks: `SandboxProcess(**config)`
has the same `url`, `start`, `stop` and `with` as `SandboxServer`.

Facebook answers from its own machines, and so should the simulator. Inside the test process
its threads share that process's interpreter: a garbage collection or a busy test thread holds
every answer back, and the requests queued meanwhile are then counted in one second, so a Page
paced correctly looks over its rate. A process of its own measures arrivals as Facebook would.

The child reads its configuration as one JSON line on stdin, prints its URL, and serves until
stdin closes, so it ends with its parent even when the parent is killed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from sandbox.server import SandboxServer

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 10


class SandboxProcess:
    """`SandboxServer(**config)` served by a child process."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self._process: subprocess.Popen | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """Return the base URL (also the GRAPH_API_URL)."""
        if self._url is None:
            raise RuntimeError("simulator process not started")
        return self._url

    @property
    def pid(self) -> int:
        """The child's process id (the benchmarks count its CPU)."""
        if self._process is None:
            raise RuntimeError("simulator process not started")
        return self._process.pid

    def start(self) -> SandboxProcess:
        """Start the child on a free port and wait until it serves."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.process"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._process.stdin.write(json.dumps(self.config) + "\n")
        self._process.stdin.flush()
        url = self._process.stdout.readline().strip()
        if not url.startswith("http"):
            code = self._process.wait(STOP_TIMEOUT_S)
            raise RuntimeError(f"the simulator process did not start (exit code {code})")
        self._url = url
        return self

    def stop(self) -> None:
        """Close the child's stdin (it stops serving and exits); kill it if it does not."""
        process, self._process = self._process, None
        if process is None:
            return
        process.stdin.close()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_child() -> int:
    """The child's side: configuration from stdin, URL to stdout, serve until stdin closes."""
    config = json.loads(sys.stdin.readline())
    server = SandboxServer(**config).start()
    print(server.url, flush=True)
    sys.stdin.read()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(serve_child())
