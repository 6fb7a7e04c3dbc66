"""Periodic work, run by a thread in every worker process; a Redis lock per task makes one
worker in the whole deployment do each task per interval (tick:{name} in storage/keys.py).

The tasks are short Redis sweeps, so they run in the thread itself; anything slow they find
goes to RQ as ordinary jobs.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from redis.exceptions import RedisError

from jobs import context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    name: str
    every_s: float
    run: Callable[[], object]


def default_tasks() -> list[Task]:
    from jobs import profile_checks, runs
    check_every = context.get_app().config["SETTINGS"].profile_check_minutes * 60
    return [Task("resume_runs", 5, runs.resume_runs), Task("expire_unknown", 10, runs.expire_unknown),
            Task("check_profiles", check_every, profile_checks.queue_checks),
            Task("trim_rows", 3600, profile_checks.trim_rows)]


class Ticker:
    """Run each task every `every_s` seconds somewhere in the deployment."""

    def __init__(self, tasks: list[Task] | None = None, poll_s: float = 1.0):
        self.tasks = tasks if tasks is not None else default_tasks()
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ticker", daemon=True)

    def start(self) -> "Ticker":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.tick()

    def tick(self) -> list[str]:
        """Run the tasks that are due and not taken by another worker; return their names."""
        ran = []
        with context.get_app().app_context():
            from storage import get_storage
            store = get_storage()
            for task in self.tasks:
                try:
                    if store.take_tick(task.name, int(task.every_s * 1000)):
                        task.run()
                        ran.append(task.name)
                except RedisError as exc:
                    log.warning("periodic %s skipped: Redis unavailable (%s)", task.name, type(exc).__name__)
                except Exception:  # noqa: BLE001 - one failing task must not stop the others
                    log.exception("periodic %s failed", task.name)
        return ran
