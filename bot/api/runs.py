"""Runs API: hand contacts to a Messenger node, watch their outcomes, preview a node."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot import recovery
from bot.api import bp, json_body, load_args
from bot.api.contacts import check_id
from bot.api.schemas import RunPageArgs
from bot.errors import not_found
from bot.reasons import reason_text
from bot.runs import accept_run_request, preview
from storage import get_storage
from storage.runs import Outcome, Unconfirmed


@bp.post("/programs/<program_id>/nodes/<node_id>/runs")
def create_run(program_id: str, node_id: str):
    """Accept up to 10 000 contacts; 202 at once, sending happens in RQ jobs."""
    accepted = accept_run_request(
        check_id(program_id, "program"), check_id(node_id, "node"), json_body()
    )
    return accepted, 202, {"Location": accepted["status_url"]}


@bp.post("/programs/<program_id>/nodes/<node_id>/preview")
def preview_node(program_id: str, node_id: str):
    return {
        "contacts": preview(check_id(program_id, "program"), check_id(node_id, "node"), json_body())
    }


def _with_recovery(
    contact: dict[str, Any], sent_again: tuple[str, str, Outcome | None] | None
) -> dict[str, Any]:
    """A failed contact a recovery sent again says so, and how it ended this time."""
    if sent_again is None:
        return contact
    recovery_id, run_id, outcome = sent_again
    again = outcome_json(contact["id"], outcome)
    return {**contact, "recovered_by": recovery_id, "recovery": {"run_id": run_id, **again}}


def outcome_json(contact_id: str, outcome: Outcome | None) -> dict:
    if outcome is None or not outcome.final:
        state = "unknown" if outcome and outcome.state == "unknown" else "pending"
        return {
            "id": contact_id,
            "outcome": state,
            "reason_code": "",
            "reason": "",
            "message_id": "",
            "detail": "",
            "at": None,
            "sent_as": None,
        }
    return {
        "id": contact_id,
        "outcome": outcome.state,
        "reason_code": outcome.reason,
        "reason": reason_text(outcome.reason) if outcome.reason else "",
        "message_id": outcome.message_id,
        "detail": outcome.detail,
        "at": datetime.fromtimestamp(outcome.at_ms / 1000, UTC).isoformat(),
        "sent_as": outcome.sent_as,
    }


def unknown_json(unconfirmed: Unconfirmed | None) -> dict | None:
    """A run whose only open contacts are `unknown` (their answer was lost) is not stuck: how
    many there are, and when the last is settled (by Facebook's echo, else failed/interrupted)."""
    if unconfirmed is None:
        return None
    settle_by = datetime.fromtimestamp(unconfirmed.settle_by_ms / 1000, UTC).isoformat()
    return {"count": unconfirmed.count, "settle_by": settle_by}


@bp.get("/runs/<run_id>")
def get_run(run_id: str):
    """State, counts and per-contact outcomes (paged with `cursor`); `unknown` says when the
    only open contacts are sends whose answer was lost (how many, settled by when)."""
    store = get_storage()
    run = store.runs.get(check_id(run_id, "run"))
    if run is None:
        raise not_found("run", run_id)
    args = load_args(RunPageArgs())
    cursor, limit = args["cursor"], args["limit"]
    rows, next_cursor = store.runs.page(run.run_id, cursor, limit)
    sent_again = recovery.recovered(run.run_id, [cid for cid, _ in rows])
    return {
        "run_id": run.run_id,
        "program_id": run.program_id,
        "node_id": run.node_id,
        "state": run.state,
        "counts": {**run.counts, "pending": run.pending},
        "unknown": unknown_json(store.runs.unconfirmed(run)),
        "contacts": [_with_recovery(outcome_json(cid, o), sent_again.get(cid)) for cid, o in rows],
        "next_cursor": None if next_cursor is None else str(next_cursor),
    }
