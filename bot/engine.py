"""The program engine's Python entry point: `enqueue_run`, for an engine deployed beside the
service that would rather call than POST. Same validation, same answer as the HTTP API's
`POST /programs/<p>/nodes/<n>/runs`; the sending happens in the workers' RQ jobs.
"""

from __future__ import annotations

import functools

from flask import Flask

from bot.app import create_app
from bot.runs import RunAccepted, accept_run_request


@functools.cache
def _service_app() -> Flask:
    return create_app()  # settings from the environment, as for the web app and the workers


def enqueue_run(
    program_id: str,
    node_id: str,
    contacts: list[dict],
    run_id: str | None = None,
    *,
    callback_url: str | None = None,
    app: Flask | None = None,
) -> RunAccepted:
    """Hand contacts to a Messenger node.

    `contacts` is a list of `{"id": ..., "fields": {...}}` (at most 10 000); returns
    `{"run_id", "created", "duplicates_ignored"}` at once. Raises a `bot.errors.DomainError`
    (`NotFound`, `Malformed`, `Invalid`, `Conflict`: its code, message and details) when the
    request is refused. With `callback_url` the run's summary is POSTed there when it is done
    (README, "Telling the program engine"). `app` defaults to one built once from the
    environment.
    """
    body: dict[str, object] = {"contacts": contacts, "run_id": run_id}
    if callback_url is not None:
        body["callback_url"] = callback_url
    with (app or _service_app()).app_context():
        return accept_run_request(program_id, node_id, body)
