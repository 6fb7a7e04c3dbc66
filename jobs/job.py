"""The RQ job class every job runs as: inside the service's Flask app (settings, storage, the
Graph client), flushing the process's metrics when it ends. flask-rq's `FlaskJob` does the same.

The worker (`jobs.worker`) builds the app once and hands `job_class(app)` to RQ; tests that run
jobs in their own process do the same with their app. Jobs take ids, not objects, and re-read
state through `storage`.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from rq.job import Job

from bot import metrics
from storage import get_storage


class AppJob(Job):
    app: Flask  # set on the subclass `job_class` makes

    def perform(self) -> Any:
        with self.app.app_context():
            try:
                return super().perform()
            finally:
                metrics.flush(get_storage())  # latencies and retries gathered while it ran


def job_class(app: Flask) -> type[AppJob]:
    """The job class for a worker serving `app`."""
    return type("AppJob", (AppJob,), {"app": app})
