"""`python -m jobs.worker`: an RQ worker (with the scheduler) for the service's queues."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time

from redis.exceptions import RedisError
from rq import Worker
from rq.exceptions import StopRequested

from bot.app import create_app
from bot.config import settings_or_exit
from bot.tasks import QUEUES
from jobs import shift
from jobs.job import job_class
from jobs.ticker import Ticker

log = logging.getLogger("jobs.worker")
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def die_with(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process as soon as its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.error("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os._exit(1)


class MessengerWorker(Worker):
    """RQ's forking worker, plus: on a warm shutdown (SIGTERM, Ctrl-C) the job in progress is
    told (SIGUSR1), so a shift finishes the batches it holds but takes no new ones; and the
    work horse dies with the worker.

    RQ puts the horse in a process group of its own, so a process manager that stops the worker
    by its group (SIGTERM, then SIGKILL: honcho, supervisord's killasgroup, systemd) would leave
    it sending, unseen. Killed with its worker, the horse's unsent contacts stay unclaimed and
    its batches are taken up when their leases lapse; only requests on their way are unknown."""

    def main_work_horse(self, job, queue):
        die_with(self.pid)  # self.pid is still the worker's: it was set before the fork
        super().main_work_horse(job, queue)

    def handle_warm_shutdown_request(self):
        super().handle_warm_shutdown_request()
        if self.horse_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.horse_pid, signal.SIGUSR1)

    # A Redis error (a restart, a failover) kills RQ's scheduler process while the worker waits
    # and goes on; RQ looks at it again only every ten minutes (maintenance), when its locks
    # have lapsed. Meanwhile no scheduled job would run: restart it as soon as Redis answers.
    @property
    def should_run_maintenance_tasks(self):
        return super().should_run_maintenance_tasks or self._scheduler_died()

    def run_maintenance_tasks(self):
        if self._scheduler_died():
            release_scheduler_locks(self)  # RQ then takes them again and starts a scheduler
        super().run_maintenance_tasks()
        if self._scheduler_died():  # another worker's scheduler took them: RQ's own fallback
            self.scheduler._process = None  # (every ten minutes), not a look at every job

    def _scheduler_died(self) -> bool:
        process = self.scheduler._process if self.scheduler else None  # RQ keeps it private
        return process is not None and not process.is_alive()


def main() -> int:
    settings = settings_or_exit()
    app = create_app(settings)
    connection = app.extensions["rq_queue"].connection  # bytes in, bytes out, as RQ wants
    signal.signal(signal.SIGUSR1, lambda *_: shift.STOPPING.set())  # inherited by each work horse
    ticker = Ticker(app).start()
    try:
        while True:
            worker = MessengerWorker(list(QUEUES), connection=connection, job_class=job_class(app))
            if work_until_stopped(worker, settings.log_level):
                break
            wait_for_redis(connection)  # RQ quits on a Redis error: work again once it is back
            release_scheduler_locks(worker)
    except StopRequested:  # SIGTERM while waiting for Redis
        pass
    finally:
        ticker.stop()
    return 0


def work_until_stopped(worker: MessengerWorker, log_level: str) -> bool:
    """Run an RQ worker; True if it stopped because it was asked to, False if Redis failed it."""
    log.info("worker %s listening on %s", worker.name, ", ".join(QUEUES))
    try:
        worker.work(with_scheduler=True, logging_level=log_level)
    except RedisError as error:  # in RQ's own teardown, with Redis gone
        log.error("worker %s stopped by Redis: %s", worker.name, error)
        return False
    return (
        worker._shutdown_requested_date is not None
    )  # set by SIGTERM/SIGINT (RQ has no public flag)


def release_scheduler_locks(worker: MessengerWorker) -> None:
    """Free the scheduler locks of a worker that Redis failed, for the next one to take.

    Its scheduler process is gone (stopped by RQ's teardown, or dead of the same error) but its
    locks stay for a minute (their TTL), and RQ tries to take them again only every ten
    minutes: until then no scheduled job (a batch paused for its Page, a callback's retry)
    would run after a Redis restart or failover. Only locks still held in its name go."""
    if worker.scheduler is None:
        return
    try:
        worker.scheduler.release_locks()
    except RedisError as error:  # gone again: they lapse by themselves
        log.warning("scheduler locks of %s not released: %s", worker.name, error)


def wait_for_redis(connection, pause_s: float = 1.0) -> None:
    """Until Redis answers again (a restart, a failover); the running job's lease lapses meanwhile
    and `resume_runs` hands its batch on."""
    while True:
        try:
            connection.ping()
            return
        except RedisError as error:
            log.warning("Redis unreachable (%s): retrying in %.0f s", error, pause_s)
            time.sleep(pause_s)


if __name__ == "__main__":
    sys.exit(main())
