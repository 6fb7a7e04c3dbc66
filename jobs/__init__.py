"""RQ jobs: node runs, retries and periodic work; the program engine's Python entry point.

Jobs are named by their dotted path when queued (bot/tasks.py), so nothing outside jobs/
imports this package but the worker and the program engine's `enqueue_run`.
"""
from __future__ import annotations

from bot.runs import accept_run_request
from bot.tasks import QUEUES, queue
from jobs import context

__all__ = ["QUEUES", "queue", "enqueue_run"]


def enqueue_run(program_id: str, node_id: str, contacts: list[dict], run_id: str | None = None) -> dict:
    """The program engine's Python entry point: hand contacts to a Messenger node.

    `contacts` is a list of `{"id": ..., "fields": {...}}` (at most 10 000); returns
    `{"run_id", "created", "duplicates_ignored"}` at once, the sending happens in RQ jobs.
    Raises a `bot.errors.DomainError` (`NotFound`, `Malformed`, `Invalid`, `Conflict`: its
    code, message and details) when the request is refused.
    """
    with context.get_app().app_context():
        return accept_run_request(program_id, node_id, {"contacts": contacts, "run_id": run_id})
