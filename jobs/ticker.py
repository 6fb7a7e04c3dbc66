"""Periodic work, run by a thread in every worker process; a Redis lock per task makes one
worker in the whole deployment do each task per interval (tick:{name} in storage/keys.py).

The tasks are short Redis sweeps, so they run in the thread itself; anything slow they find
goes to RQ as ordinary jobs.

A task may also have work to do when workers start (`at_start`): the profile check, whose
periodic lock outlives a restart (it is in Redis), so without it a restart would leave every
profile's health as it was for up to PROFILE_CHECK_MINUTES, "ok" for a token Facebook has since
refused. Workers starting within START_WINDOW_S of each other share one such run.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask
from redis.exceptions import RedisError

from jobs import callbacks, profile_checks, runs
from storage import get_storage

log = logging.getLogger(__name__)
START_WINDOW_S = 10  # the workers of one deployment start within seconds of each other


@dataclass(frozen=True)
class Task:
    name: str
    every_s: float
    run: Callable[[], object]
    at_start: Callable[[], object] | None = None  # run once when the workers start


def default_tasks(app: Flask) -> list[Task]:
    check_every = app.config["SETTINGS"].profile_check_minutes * 60
    return [
        Task("resume_runs", 5, runs.resume_runs),
        Task("expire_unknown", 10, runs.expire_unknown),
        Task("queue_callbacks", 2, callbacks.queue_callbacks),
        Task(
            "check_profiles",
            check_every,
            profile_checks.queue_checks,
            at_start=profile_checks.queue_start_checks,
        ),
        Task("retention", 3600, profile_checks.retention_pass),
        Task("apply_parked_webhooks", 1, apply_parked_webhooks),
    ]


def apply_parked_webhooks() -> None:
    """Webhook writes a web process parked and stopped before applying (storage/inbound.py):
    normally the web processes apply them within milliseconds and this finds none."""
    get_storage().inbound.drain_inbox()


class Ticker:
    """Run each task every `every_s` seconds somewhere in the deployment, inside `app`."""

    def __init__(self, app: Flask, tasks: list[Task] | None = None, poll_s: float = 1.0):
        self.app = app
        self.tasks = tasks if tasks is not None else default_tasks(app)
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ticker", daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        self.tick_at_start()
        while not self._stop.wait(self.poll_s):
            self.tick()

    def tick_at_start(self) -> list[str]:
        """Run the tasks' start-up work unless another worker just did; return their names."""
        return self._run(
            [
                (f"{t.name}:start", START_WINDOW_S, functools.partial(self._start, t, t.at_start))
                for t in self.tasks
                if t.at_start
            ]
        )

    @staticmethod
    def _start(task: Task, at_start: Callable[[], object]) -> None:
        at_start()
        # the start-up run stands for this interval's run
        get_storage().take_tick(task.name, int(task.every_s * 1000))

    def tick(self) -> list[str]:
        """Run the tasks that are due and not taken by another worker; return their names."""
        return self._run([(t.name, t.every_s, t.run) for t in self.tasks])

    def _run(self, due: list[tuple[str, float, Callable[[], object]]]) -> list[str]:
        ran = []
        with self.app.app_context():
            store = get_storage()
            for name, every_s, run in due:
                try:
                    if store.take_tick(name, int(every_s * 1000)):
                        run()
                        ran.append(name)
                except RedisError as exc:
                    log.warning(
                        "periodic %s skipped: Redis unavailable (%s)", name, type(exc).__name__
                    )
                except Exception:
                    log.exception("periodic %s failed", name)
        return ran
