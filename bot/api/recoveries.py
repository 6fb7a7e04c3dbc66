"""Recoveries API: a recovery's progress and each recovered contact's outcome."""

from __future__ import annotations

from bot import recovery
from bot.api import bp, load_args
from bot.api.contacts import check_id
from bot.api.runs import outcome_json
from bot.api.schemas import RecoveryStatusSchema, RunPageArgs
from bot.errors import not_found
from storage import get_storage


@bp.get("/recoveries/<recovery_id>")
def get_recovery(recovery_id: str):
    """State, counts, its runs, and per-contact outcomes (paged with `cursor`)."""
    found = get_storage().recoveries.get(check_id(recovery_id, "recovery"))
    if found is None:
        raise not_found("recovery", recovery_id)
    args = load_args(RunPageArgs())
    status = recovery.status(found)
    rows, next_cursor = recovery.contacts_page(found, args["cursor"], args["limit"])
    body = {
        **status,
        "runs": [{**run, "status_url": f"/api/v1/runs/{run['run_id']}"} for run in status["runs"]],
        "outcomes": [{"run_id": run_id, **outcome_json(cid, o)} for run_id, cid, o in rows],
        "next_cursor": None if next_cursor is None else str(next_cursor),
    }
    return RecoveryStatusSchema().dump(body)
