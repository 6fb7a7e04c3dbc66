"""Handing work to the workers: RQ queues, and jobs named by their dotted path.

The web app and the domain enqueue a job by its name (RQ imports the function in the worker),
so nothing outside `jobs/` imports `jobs/` (tests/test_layers.py keeps it so).
"""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from redis import Redis
from rq import Queue
from rq.job import Job

QUEUES = ("messenger", "maintenance")  # in priority order: sends first, housekeeping after
RUN_BATCH = "jobs.runs.run_batch"
PURGE_PROFILE = "jobs.profiles.purge_profile"
DELETE_USER_DATA = "jobs.privacy.delete_user_data"
WITHDRAW_CONSENT_OF_USER = "jobs.privacy.withdraw_consent_of_user"
SEND_CALLBACK = "jobs.callbacks.send_callback"  # on "maintenance"
_APP_QUEUES = {"messenger": "rq_queue", "maintenance": "rq_maintenance"}  # app.extensions keys


def queue(connection: Redis, name: str = "messenger") -> Queue:
    """An RQ queue on the bytes Redis client (RQ stores bytes, storage uses text)."""
    return Queue(name, connection=connection)


def enqueue(
    job: str, *args: object, queue_name: str = "messenger", delay_s: float = 0, **options: object
) -> Job:
    """Put the job named `job` on the app's queue, now or after `delay_s` (RQ's options as is)."""
    target: Queue = current_app.extensions[_APP_QUEUES[queue_name]]
    if delay_s > 0:
        return target.enqueue_in(timedelta(seconds=delay_s), job, *args, **options)
    return target.enqueue(job, *args, **options)
