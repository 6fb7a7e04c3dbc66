"""`python -m jobs.worker`: an RQ worker (with the scheduler) for the service's queues."""
from __future__ import annotations

import logging
import sys

import os
import signal

from rq import Worker

import storage
from bot.config import settings_or_exit
from jobs import QUEUES, context, shift
from jobs.ticker import Ticker

log = logging.getLogger("jobs.worker")


class MessengerWorker(Worker):
    """RQ's forking worker, plus: on a warm shutdown (SIGTERM, Ctrl-C) the job in progress is
    told (SIGUSR1), so a shift finishes the batches it holds but takes no new ones."""

    def handle_warm_shutdown_request(self):
        super().handle_warm_shutdown_request()
        if self.horse_pid:
            try:
                os.kill(self.horse_pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass


def main() -> int:
    settings = settings_or_exit()
    from bot import create_app
    context.use_app(create_app(settings))
    connection = storage.connect(settings.redis_url, decode=False)
    signal.signal(signal.SIGUSR1, lambda *_: shift.STOPPING.set())  # inherited by each work horse
    worker = MessengerWorker(list(QUEUES), connection=connection)
    log.info("worker %s listening on %s", worker.name, ", ".join(QUEUES))
    ticker = Ticker().start()
    try:
        worker.work(with_scheduler=True, logging_level=settings.log_level)
    finally:
        ticker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
