"""Node runs as RQ jobs: process a run's batches and resume them (accepting a run: bot/runs.py).

A run's batches form a chain: RUN_PARALLEL_BATCHES of them are queued at first, and each
finished batch queues the next, so one run holds at most that many workers (its Page's rate is
shared anyway) and other runs are not starved. A batch is processed under a lease that a
heartbeat keeps alive; if its worker dies, the lease lapses and `resume_runs` (periodic) or
RQ's abandoned-job retry queues it again; the contacts it had in flight become `unknown`.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC

from flask import current_app
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from bot import logs
from bot.runs import queue_batch
from jobs.shift import Shift
from storage import Storage, get_storage
from storage.runs import Run

log = logging.getLogger(__name__)

MAX_RESUMES = 5


def rq_queue() -> Queue:
    return current_app.extensions["rq_queue"]


def run_batch(run_id: str, batch: int) -> str:
    """The RQ job: send one batch of a run (idempotent; safe to run again after a crash).

    It works as a shift (jobs/shift.py): while it sends, it also takes ready batches of other
    Pages, so one worker keeps its SEND_CONCURRENCY sends in flight although each Page is paced."""
    store, settings = get_storage(), current_app.config["SETTINGS"]
    logs.context_id.set(f"run:{run_id}")  # every log line of this job names the run
    run = store.runs.get(run_id)
    if run is None:
        return "run expired"
    if store.runs.batch_states(run_id).get(str(batch)) == "done":
        return "already done"
    token, lease_ms = uuid.uuid4().hex, settings.run_lease_seconds * 1000
    if not store.runs.acquire_lease(run_id, batch, token, lease_ms):
        return "another worker has it"
    store.runs.unmark_ready(run, batch)
    shift = Shift(
        store,
        settings,
        current_app.extensions["graph"],
        token,
        lease_ms,
        _settle,
        on_taken=lambda taken_run, taken_batch: _drop_queued_job(store, taken_run, taken_batch),
    )
    ended = shift.run(run, batch)
    return ", ".join(f"{r.run_id}/{b}: {outcome}" for r, b, outcome in ended)


def _drop_queued_job(store: Storage, run_id: str, batch: int) -> None:
    """A batch taken by a shift needs no job of its own: spare a worker the empty fork.
    (If the shift dies, `resume_runs` queues the batch again.)"""
    job_id = store.runs.batch_states(run_id).get(f"job:{batch}")
    if job_id and rq_queue().remove(job_id):
        Job(job_id, connection=rq_queue().connection).delete(remove_from_queue=False)


def _settle(run: Run, batch: int, sender, contacts: list[str]) -> str:
    """A batch's end: 'done' (and the run's next batch queued), or 'paused' (queued again)."""
    store, settings = get_storage(), current_app.config["SETTINGS"]
    untouched = [cid for cid, o in store.runs.outcomes(run.run_id, contacts).items() if o is None]
    if sender.paused_ms or untouched:
        delay = sender.paused_ms / 1000 if sender.paused_ms else 1
        log.info(
            "run %s batch %s: %d contacts wait %.0f s for the Page",
            run.run_id,
            batch,
            len(untouched),
            delay,
        )
        queue_batch(store, run.run_id, batch, delay, force=True)
        return "paused"
    store.runs.set_batch(run.run_id, batch, "done")
    next_batch = batch + settings.run_parallel_batches
    if next_batch < run.batches:
        queue_batch(store, run.run_id, next_batch)
    return "done"


# -- periodic (jobs/ticker.py) ------------------------------------------------------------------


def resume_runs() -> int:
    """Queue again every batch whose worker died (no lease, job not waiting). Returns how many."""
    store = get_storage()
    resumed = 0
    for run_id in store.runs.active():
        run = store.runs.get(run_id)
        if run is None:
            store.runs.forget_active(run_id)
            continue
        states = store.runs.batch_states(run_id)
        for batch in range(run.batches):
            if states.get(str(batch)) == "queued" and _stalled(
                store, run_id, batch, states.get(f"job:{batch}")
            ):
                _resume(store, run, batch, int(states.get(f"resumes:{batch}", 0)))
                resumed += 1
        if not states and run.batches:  # accepted, but the first batches were never queued
            for batch in range(
                min(current_app.config["SETTINGS"].run_parallel_batches, run.batches)
            ):
                queue_batch(store, run_id, batch)
                resumed += 1
    if resumed:
        log.warning("resumed %d stalled batches", resumed)
    return resumed


def _resume(store: Storage, run: Run, batch: int, resumes_so_far: int) -> None:
    """Queue a stalled batch again; after MAX_RESUMES, give up on its contacts (a bug, logged)."""
    if resumes_so_far >= MAX_RESUMES:
        contacts = store.runs.batch_contacts(run.run_id, batch, run.batch_size)
        store.runs.mark_unknown(run.run_id, contacts)
        for cid, outcome in store.runs.outcomes(run.run_id, contacts).items():
            if outcome is None:
                store.runs.finish(run.run_id, cid, "failed", reason="internal_error")
        store.runs.set_batch(run.run_id, batch, "done")
        log.error(
            "run %s batch %s failed %d times; its unsent contacts are failed",
            run.run_id,
            batch,
            MAX_RESUMES,
        )
        return
    store.runs.count_resume(run.run_id, batch)
    queue_batch(store, run.run_id, batch, force=True)


def _stalled(store: Storage, run_id: str, batch: int, job_id: str | None) -> bool:
    if store.runs.lease_held(run_id, batch):
        return False
    try:
        job = Job.fetch(job_id, connection=rq_queue().connection) if job_id else None
    except NoSuchJobError:
        job = None
    if job is None:
        return True
    status = job.get_status(refresh=False)
    if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
        return False
    if status == JobStatus.STARTED and job.started_at is not None:  # give it time to take the lease
        grace_s = current_app.config["SETTINGS"].run_lease_seconds
        return time.time() - job.started_at.replace(tzinfo=UTC).timestamp() > grace_s
    return True


def expire_unknown() -> int:
    """Unknown sends past their deadline become failed/interrupted (never resent)."""
    settled = get_storage().runs.expire_unknown()
    if settled:
        log.warning("%d sends never confirmed by Facebook are now failed/interrupted", settled)
    return settled
