"""Node runs as RQ jobs: accept a run, split it into batches, process and resume them.

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
from datetime import datetime, timedelta, timezone

from flask import current_app
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from bot import logs
from bot.errors import ApiError
from jobs import context
from jobs.shift import Shift
from storage import Storage, get_storage
from storage.runs import Run

log = logging.getLogger(__name__)

MAX_RESUMES = 5
BATCH_RETRY = Retry(max=3, interval=[5, 30, 120])


class RunRejected(ApiError):
    """The program engine's request cannot become a run (unknown node, inactive program...)."""


def accept_run(program_id: str, node_id: str, contacts: dict[str, dict[str, str]],
               run_id: str | None = None) -> tuple[Run, bool]:
    """Store the run and queue its first batches; a known run_id changes nothing: (run, created)."""
    store, settings = get_storage(), current_app.config["SETTINGS"]
    program = store.programs.get(program_id)
    node = program.node(node_id) if program else None
    if node is None:
        raise RunRejected(404, "not_found", f"program {program_id!r} has no node {node_id!r}")
    run_id = run_id or uuid.uuid4().hex
    existing = store.runs.get(run_id)
    if existing is None and program.status != "active":
        raise RunRejected(409, "program_not_active",
                          f"program {program_id!r} is {program.status}; only active programs send")
    run, created = (existing, False) if existing else store.runs.create(
        run_id, program_id, node, contacts, settings.run_batch_size)
    if (run.program_id, run.node_id) != (program_id, node_id):
        raise RunRejected(409, "run_id_conflict", f"run {run_id!r} belongs to another node")
    if created:
        for batch in range(min(settings.run_parallel_batches, run.batches)):
            queue_batch(store, run_id, batch)
    return run, created


def rq_queue() -> Queue:
    return current_app.extensions["rq_queue"]


def queue_batch(store: Storage, run_id: str, batch: int, delay_s: float = 0, *, force: bool = False) -> None:
    """Put one batch on the queue (once, unless `force`: a resume after its worker died)."""
    if not force and not store.runs.claim_batch(run_id, batch):
        return
    settings = current_app.config["SETTINGS"]
    options = dict(job_id=f"run-{run_id}-{batch}-{uuid.uuid4().hex[:8]}", retry=BATCH_RETRY,
                   job_timeout=max(600, int(settings.run_batch_size / settings.send_rate_per_page * 4)),
                   result_ttl=3600, failure_ttl=7 * 86400, description=f"run {run_id} batch {batch}")
    if delay_s > 0:
        job = rq_queue().enqueue_in(timedelta(seconds=delay_s), run_batch, run_id, batch, **options)
    else:
        job = rq_queue().enqueue(run_batch, run_id, batch, **options)
    store.runs.set_batch(run_id, batch, "queued", job.id)
    run = store.runs.get(run_id)
    if run is not None:
        store.runs.mark_ready(run, batch, int((time.time() + delay_s) * 1000))


@context.in_app_context
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
    shift = Shift(store, settings, current_app.extensions["graph"], token, lease_ms, _settle)
    shift.on_taken = lambda taken_run, taken_batch: _drop_queued_job(store, taken_run, taken_batch)
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
        log.info("run %s batch %s: %d contacts wait %.0f s for the Page", run.run_id, batch, len(untouched), delay)
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
            if states.get(str(batch)) == "queued" and _stalled(store, run_id, batch, states.get(f"job:{batch}")):
                _resume(store, run, batch, int(states.get(f"resumes:{batch}", 0)))
                resumed += 1
        if not states and run.batches:  # accepted, but the first batches were never queued
            for batch in range(min(current_app.config["SETTINGS"].run_parallel_batches, run.batches)):
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
        log.error("run %s batch %s failed %d times; its unsent contacts are failed", run.run_id, batch, MAX_RESUMES)
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
        return time.time() - job.started_at.replace(tzinfo=timezone.utc).timestamp() > grace_s
    return True


def expire_unknown() -> int:
    """Unknown sends past their deadline become failed/interrupted (never resent)."""
    settled = get_storage().runs.expire_unknown()
    if settled:
        log.warning("%d sends never confirmed by Facebook are now failed/interrupted", settled)
    return settled


# -- the program engine's requests --------------------------------------------------------------

def _contacts_by_id(items: list[dict]) -> tuple[dict[str, dict[str, str]], int]:
    """Contacts keyed by id (a contact listed twice is sent once; its last fields win)."""
    contacts: dict[str, dict[str, str]] = {}
    for item in items:
        contacts[item["id"]] = {**contacts.get(item["id"], {}), **item["fields"]}
    return contacts, len(items) - len(contacts)


def _validated(schema, body) -> dict:
    from marshmallow import ValidationError
    if not isinstance(body, dict):
        raise RunRejected(400, "invalid_json", "The request body must be a JSON object")
    try:
        return schema.load(body)
    except ValidationError as exc:
        raise RunRejected(422, "validation_failed", "The request is not valid", {"fields": exc.messages}) from None


def accept_run_request(program_id: str, node_id: str, body: dict) -> dict:
    """Validate a run request (API or Python entry point) and accept it."""
    from bot.api.schemas import RunRequestSchema
    data = _validated(RunRequestSchema(), body)
    contacts, duplicates = _contacts_by_id(data["contacts"])
    run, created = accept_run(program_id, node_id, contacts, data["run_id"])
    return {"run_id": run.run_id, "status_url": f"/api/v1/runs/{run.run_id}", "created": created,
            "duplicates_ignored": duplicates if created else 0}


def preview(program_id: str, node_id: str, body: dict) -> list[dict]:
    """What each contact would get from the node now (outcome and rendered text); sends nothing.
    The body is a run's (its run_id is checked, then ignored: a preview records nothing)."""
    from bot import policy
    from bot.api.schemas import PreviewRequestSchema
    from bot.reasons import reason_text
    data = _validated(PreviewRequestSchema(), body)
    store = get_storage()
    program = store.programs.get(program_id)
    node = program.node(node_id) if program else None
    if node is None:
        raise RunRejected(404, "not_found", f"program {program_id!r} has no node {node_id!r}")
    contacts, _ = _contacts_by_id(data["contacts"])
    profile = store.profiles.get(node.profile_id)
    stored = store.contacts.get_many(list(contacts))
    merged = {cid: ({**stored.get(cid, {}), **fields} if cid in stored or fields else None)
              for cid, fields in contacts.items()}
    optin = profile.optin_field if profile else ""
    seen = store.inbound.last_seen_many(node.profile_id, [f[optin] for f in merged.values() if f and f.get(optin)])
    now = time.time()
    settings = current_app.config["SETTINGS"]
    answer = []
    for cid, fields in merged.items():
        decision = policy.decide(node, profile, fields, seen.get((fields or {}).get(optin, "")),
                                 now_ms=int(now * 1000), today=datetime.fromtimestamp(now, timezone.utc).date(),
                                 retirement=policy.retirement_on(settings.tag_retirement_date))
        answer.append({"id": cid, "outcome": decision.outcome, "reason_code": decision.reason,
                       "reason": reason_text(decision.reason) if decision.reason else "",
                       "messaging_type": decision.messaging_type, "text": decision.text,
                       "template": decision.template})
    return answer
