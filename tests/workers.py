"""Real worker processes (`python -m jobs.worker`) for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench._harness import kill_worker, stop_workers

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcesses:
    """Start workers with a given environment; stop (or kill) them; read their logs."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []

    def start(self, **overrides: str) -> subprocess.Popen:
        with open(self.log_dir / f"worker-{len(self.processes)}.log", "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "jobs.worker"],
                cwd=ROOT,
                env={**self.env, **overrides},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        """SIGKILL the worker and its work horse."""
        kill_worker(process)

    def stop_all(self) -> None:
        stop_workers(self.processes)

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.log_dir.glob("worker-*.log")))
