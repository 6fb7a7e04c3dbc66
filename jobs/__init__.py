"""RQ jobs: node runs, retries and periodic work; enqueue helpers for the program engine."""
from __future__ import annotations

from rq import Queue

QUEUES = ("messenger", "maintenance")  # in priority order: sends first, housekeeping after


def queue(connection, name: str = "messenger") -> Queue:
    """An RQ queue on the bytes Redis client (RQ stores bytes, storage uses text)."""
    return Queue(name, connection=connection)


def enqueue_run(program_id: str, node_id: str, contacts: list[dict], run_id: str | None = None) -> dict:
    """The program engine's Python entry point: hand contacts to a Messenger node.

    `contacts` is a list of `{"id": ..., "fields": {...}}` (at most 10 000); returns
    `{"run_id", "created", "duplicates_ignored"}` at once, the sending happens in RQ jobs.
    Raises `jobs.runs.RunRejected` (an ApiError with status, code, message, details).
    """
    from jobs import context
    from jobs.runs import accept_run_request
    with context.get_app().app_context():
        return accept_run_request(program_id, node_id, {"contacts": contacts, "run_id": run_id})
