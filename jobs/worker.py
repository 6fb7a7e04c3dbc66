"""`python -m jobs.worker`: an RQ worker (with the scheduler) for the service's queues."""

from __future__ import annotations

import contextlib
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


class MessengerWorker(Worker):
    """RQ's forking worker, plus: on a warm shutdown (SIGTERM, Ctrl-C) the job in progress is
    told (SIGUSR1), so a shift finishes the batches it holds but takes no new ones."""

    def handle_warm_shutdown_request(self):
        super().handle_warm_shutdown_request()
        if self.horse_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.horse_pid, signal.SIGUSR1)


def main() -> int:
    settings = settings_or_exit()
    app = create_app(settings)
    connection = app.extensions["rq_queue"].connection  # bytes in, bytes out, as RQ wants
    signal.signal(signal.SIGUSR1, lambda *_: shift.STOPPING.set())  # inherited by each work horse
    ticker = Ticker(app).start()
    try:
        while not work_until_stopped(connection, app, settings.log_level):
            wait_for_redis(connection)  # RQ quits on a Redis error: work again once it is back
    except StopRequested:  # SIGTERM while waiting for Redis
        pass
    finally:
        ticker.stop()
    return 0


def work_until_stopped(connection, app, log_level: str) -> bool:
    """Run an RQ worker; True if it stopped because it was asked to, False if Redis failed it."""
    worker = MessengerWorker(list(QUEUES), connection=connection, job_class=job_class(app))
    log.info("worker %s listening on %s", worker.name, ", ".join(QUEUES))
    try:
        worker.work(with_scheduler=True, logging_level=log_level)
    except RedisError as error:  # in RQ's own teardown, with Redis gone
        log.error("worker %s stopped by Redis: %s", worker.name, error)
        return False
    return (
        worker._shutdown_requested_date is not None
    )  # set by SIGTERM/SIGINT (RQ has no public flag)


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
