"""`python -m jobs.worker`: an RQ worker (with the scheduler) for the service's queues."""
from __future__ import annotations

import logging
import sys

from rq import Worker

import storage
from bot.config import Settings
from bot.errors import ConfigError
from jobs import QUEUES, context
from jobs.ticker import Ticker

log = logging.getLogger("jobs.worker")


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    from bot import create_app
    context.use_app(create_app(settings))
    connection = storage.connect(settings.redis_url, decode=False)
    worker = Worker(list(QUEUES), connection=connection)
    log.info("worker %s listening on %s", worker.name, ", ".join(QUEUES))
    ticker = Ticker().start()
    try:
        worker.work(with_scheduler=True, logging_level=settings.log_level)
    finally:
        ticker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
