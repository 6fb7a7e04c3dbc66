"""The program engine's requests: hand contacts to a Messenger node (a run), or preview it.

A run is validated, stored and its first batches queued for the workers by the job's name
(`jobs.runs.run_batch`); the web app and `bot.engine.enqueue_run` both come here. Refusals are
domain errors (bot/errors.py): the HTTP layer gives them their status.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import TypedDict

from flask import current_app
from marshmallow import Schema, ValidationError
from rq import Retry

from bot import callbacks, policy, tasks
from bot.config import Settings
from bot.errors import Conflict, Invalid, Malformed, NotFound
from bot.reasons import reason_text
from bot.validation import PreviewRequestSchema, RunContact, RunRequest, RunRequestSchema
from storage import Storage, get_storage
from storage.runs import Run

BATCH_RETRY = Retry(max=3, interval=[5, 30, 120])


def accept_run(
    program_id: str,
    node_id: str,
    contacts: dict[str, dict[str, str]],
    run_id: str | None = None,
    callback_url: str = "",
) -> tuple[Run, bool]:
    """Store the run and queue its first batches; a known run_id changes nothing: (run, created).
    `callback_url` (checked by the caller: bot/callbacks.py `url_problem`) is where the run's
    summary is posted once it is done."""
    store = get_storage()
    settings: Settings = current_app.config["SETTINGS"]
    program = store.programs.get(program_id)
    node = program.node(node_id) if program else None
    if program is None or node is None:
        raise NotFound("not_found", f"program {program_id!r} has no node {node_id!r}")
    run_id = run_id or uuid.uuid4().hex
    existing = store.runs.get(run_id)
    if existing is None and program.status != "active":
        raise Conflict(
            "program_not_active",
            f"program {program_id!r} is {program.status}; only active programs send",
        )
    run, created = (
        (existing, False)
        if existing
        else store.runs.create(
            run_id, program_id, node, contacts, settings.run_batch_size, callback_url
        )
    )
    if (run.program_id, run.node_id) != (program_id, node_id):
        raise Conflict("run_id_conflict", f"run {run_id!r} belongs to another node")
    if created:
        start_batches(store, run)
    return run, created


def start_batches(store: Storage, run: Run) -> None:
    """Queue a new run's first batches (RUN_PARALLEL_BATCHES of them); each queues the next."""
    settings: Settings = current_app.config["SETTINGS"]
    for batch in range(min(settings.run_parallel_batches, run.batches)):
        queue_batch(store, run.run_id, batch)


# RQ job ids take letters, digits, _ and - only; run ids may also hold . : @ (the suffix keeps
# job ids unique whatever the replacement merges).
_JOB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def queue_batch(
    store: Storage, run_id: str, batch: int, delay_s: float = 0, *, force: bool = False
) -> None:
    """Put one batch on the queue (once, unless `force`: a resume after its worker died)."""
    if not force and not store.runs.claim_batch(run_id, batch):
        return
    settings: Settings = current_app.config["SETTINGS"]
    job = tasks.enqueue(
        tasks.RUN_BATCH,
        run_id,
        batch,
        delay_s=delay_s,
        job_id=f"run-{_JOB_ID_UNSAFE.sub('_', run_id)}-{batch}-{uuid.uuid4().hex[:8]}",
        retry=BATCH_RETRY,
        job_timeout=max(600, int(settings.run_batch_size / settings.send_rate_per_page * 4)),
        result_ttl=3600,
        failure_ttl=7 * 86400,
        description=f"run {run_id} batch {batch}",
    )
    store.runs.set_batch(run_id, batch, "queued", job.id)
    run = store.runs.get(run_id)
    if run is not None:
        store.runs.mark_ready(run, batch, int((time.time() + delay_s) * 1000))


# -- requests ---------------------------------------------------------------------------------


class RunAccepted(TypedDict):
    """The answer to a run request."""

    run_id: str
    status_url: str
    created: bool
    duplicates_ignored: int


class PreviewContact(TypedDict):
    """What one contact would get from a node now."""

    id: str
    outcome: str
    reason_code: str
    reason: str
    messaging_type: str
    text: str | None
    template: policy.TemplateMessage | None


def _contacts_by_id(items: list[RunContact]) -> tuple[dict[str, dict[str, str]], int]:
    """Contacts keyed by id (a contact listed twice is sent once; its last fields win)."""
    contacts: dict[str, dict[str, str]] = {}
    for item in items:
        contacts[item["id"]] = {**contacts.get(item["id"], {}), **item["fields"]}
    return contacts, len(items) - len(contacts)


def _validated(schema: Schema, body: object) -> RunRequest:
    """The body loaded by `schema` (RunRequestSchema or PreviewRequestSchema), or a refusal."""
    if not isinstance(body, dict):
        raise Malformed("invalid_json", "The request body must be a JSON object")
    try:
        data: RunRequest = schema.load(body)
    except ValidationError as exc:
        raise Invalid(
            "validation_failed", "The request is not valid", {"fields": exc.messages}
        ) from None
    return data


def accept_run_request(program_id: str, node_id: str, body: object) -> RunAccepted:
    """Validate a run request (API or Python entry point) and accept it."""
    data = _validated(RunRequestSchema(), body)
    callback_url = data["callback_url"] or ""
    if callback_url:
        problem = callbacks.url_problem(callback_url, current_app.config["SETTINGS"])
        if problem:
            raise Invalid(
                "validation_failed",
                "The request is not valid",
                {"fields": {"callback_url": [problem]}},
            )
    contacts, duplicates = _contacts_by_id(data["contacts"])
    run, created = accept_run(program_id, node_id, contacts, data["run_id"], callback_url)
    return {
        "run_id": run.run_id,
        "status_url": f"/api/v1/runs/{run.run_id}",
        "created": created,
        "duplicates_ignored": duplicates if created else 0,
    }


def preview(program_id: str, node_id: str, body: object) -> list[PreviewContact]:
    """What each contact would get from the node now (outcome and rendered text); sends nothing.
    The body is a run's (its run_id is checked, then ignored: a preview records nothing)."""
    data = _validated(PreviewRequestSchema(), body)
    store = get_storage()
    program = store.programs.get(program_id)
    node = program.node(node_id) if program else None
    if node is None:
        raise NotFound("not_found", f"program {program_id!r} has no node {node_id!r}")
    contacts, _ = _contacts_by_id(data["contacts"])
    profile = store.profiles.get(node.profile_id)
    stored = store.contacts.get_many(list(contacts))
    merged = {
        cid: ({**stored.get(cid, {}), **fields} if cid in stored or fields else None)
        for cid, fields in contacts.items()
    }
    optin = profile.optin_field if profile else ""
    recipients = [f[optin] for f in merged.values() if f and f.get(optin)]
    seen = store.inbound.last_seen_many(node.profile_id, recipients)
    unreachable = store.sending.unreachable_until(node.profile_id, recipients)
    opted_out = store.consent.opted_out(node.profile_id, list(merged))
    now = time.time()
    settings: Settings = current_app.config["SETTINGS"]
    answer: list[PreviewContact] = []
    for cid, fields in merged.items():
        recipient = (fields or {}).get(optin, "")
        decision = policy.decide(
            node,
            profile,
            fields,
            seen.get(recipient),
            now_ms=int(now * 1000),
            today=datetime.fromtimestamp(now, UTC).date(),
            retirement=policy.retirement_on(settings.tag_retirement_date),
            unreachable_until_ms=unreachable.get(recipient),
            opted_out=cid in opted_out,
        )
        answer.append(
            {
                "id": cid,
                "outcome": decision.outcome,
                "reason_code": decision.reason,
                "reason": reason_text(decision.reason) if decision.reason else "",
                "messaging_type": decision.messaging_type,
                "text": decision.text,
                "template": decision.template,
            }
        )
    return answer
