"""Recover what an outage failed: send again exactly the contacts of a profile's runs, created in
a window, whose outcome is `failed` for a reason about the Page or Facebook (policy.RECOVERABLE;
`interrupted` only when asked, as those may have reached Facebook). Never a contact that was
sent, is unknown, or got a warning.

Each original run with such contacts gets one recovering run (`<recovery id>.<n>`, same program
and node): an ordinary run, so each contact is judged again now (opt-in, 24-hour window,
template, the breaker) and sent at most once. The same request again is the same recovery.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import TypedDict

from flask import current_app

from bot import policy
from bot.config import Settings
from bot.runs import start_batches
from storage import Storage, get_storage
from storage.recoveries import Recovery
from storage.runs import Outcome, Run

log = logging.getLogger(__name__)


class RecoveryCounts(TypedDict):
    sent: int
    warning: int
    failed: int
    pending: int


def recovery_id(profile_id: str, since_ms: int, until_ms: int | None, interrupted: bool) -> str:
    """The same request (profile, window as given, interrupted or not) is the same recovery."""
    asked = f"{profile_id}|{since_ms}|{'open' if until_ms is None else until_ms}|{int(interrupted)}"
    return "rec_" + hashlib.sha256(asked.encode()).hexdigest()[:20]


def reasons_for(include_interrupted: bool) -> frozenset[str]:
    return policy.RECOVERABLE | (
        policy.RECOVERABLE_IF_ASKED if include_interrupted else frozenset()
    )


def count_recoverable(
    profile_id: str, since: datetime, until: datetime | None, include_interrupted: bool
) -> int:
    """How many contacts a recovery of this window would send again now (a preview)."""
    store = get_storage()
    reasons = reasons_for(include_interrupted)
    return sum(
        sum(1 for _ in store.recoveries.failed_contacts(run_id, reasons))
        for run_id in store.recoveries.runs_between(profile_id, _ms(since), _ms_or_now(until))
    )


def recover(
    profile_id: str, since: datetime, until: datetime | None, include_interrupted: bool
) -> tuple[Recovery, bool]:
    """Start (or find) the recovery of this window (`until` None: up to now):
    (recovery, created)."""
    store = get_storage()
    rid = recovery_id(
        profile_id, _ms(since), None if until is None else _ms(until), include_interrupted
    )
    recovery, created = store.recoveries.begin(
        rid, profile_id, _ms(since), _ms_or_now(until), include_interrupted
    )
    if recovery.state == "preparing":  # new, or its preparation was cut short: finish it
        _prepare(store, current_app.config["SETTINGS"], recovery)
        recovery = store.recoveries.get(rid) or recovery
    return recovery, created


def _prepare(store: Storage, settings: Settings, recovery: Recovery) -> None:
    reasons = reasons_for(recovery.include_interrupted)
    runs: dict[str, str] = {}
    originals = store.recoveries.runs_between(
        recovery.profile_id, recovery.since_ms, recovery.until_ms
    )
    for index, run_id in enumerate(originals):
        by_run = f"{recovery.recovery_id}.{index}"
        if _recover_run(store, settings, run_id, by_run, reasons):
            runs[by_run] = run_id
    store.recoveries.prepared(recovery.recovery_id, runs)
    log.info(
        "recovery %s of profile %s: %d runs, %d contacts",
        recovery.recovery_id,
        recovery.profile_id,
        len(runs),
        sum(run.total for run in _runs(store, runs)),
    )


def _recover_run(
    store: Storage, settings: Settings, run_id: str, by_run: str, reasons: frozenset[str]
) -> bool:
    """Create `by_run` for `run_id`'s recoverable failures (or finish what a cut-short
    preparation began); True if there is such a run."""
    original = store.runs.get(run_id)
    if original is None:
        return False
    existing = store.runs.get(by_run)
    if existing is None:
        failures = list(store.recoveries.failed_contacts(run_id, reasons))
        if not failures:
            return False
        contacts: dict[str, dict[str, str]] = {cid: {} for cid, _ in failures}
        run, created = store.runs.create(
            by_run, original.program_id, original.node, contacts, settings.run_batch_size
        )
    else:  # made before the preparation was cut short: its contacts may still be unmarked
        run, created = existing, False
        ids = store.runs.batch_contacts(by_run, 0, existing.total)
        failures = [(cid, o) for cid, o in store.runs.outcomes(run_id, ids).items() if o]
    store.recoveries.mark(original.profile_id, run_id, by_run, failures)
    if created:
        start_batches(store, run)
    return True


def _runs(store: Storage, runs: dict[str, str]) -> list[Run]:
    return [run for by_run in runs if (run := store.runs.get(by_run))]


class RecoveryStatus(TypedDict):
    recovery_id: str
    profile_id: str
    state: str  # preparing, sending, done
    since: datetime
    until: datetime
    include_interrupted: bool
    contacts: int
    counts: RecoveryCounts
    runs: list[dict[str, object]]


def status(recovery: Recovery) -> RecoveryStatus:
    store = get_storage()
    counts: RecoveryCounts = {"sent": 0, "warning": 0, "failed": 0, "pending": 0}
    runs, total = [], 0
    for by_run, original in recovery.runs.items():
        run = store.runs.get(by_run)
        if run is None:  # past retention
            continue
        counts["sent"] += run.counts.get("sent", 0)
        counts["warning"] += run.counts.get("warning", 0)
        counts["failed"] += run.counts.get("failed", 0)
        counts["pending"] += run.pending
        runs.append({"run_id": by_run, "recovers_run": original, "total": run.total})
        total += run.total
    done = recovery.state == "sending" and counts["pending"] == 0
    return {
        "recovery_id": recovery.recovery_id,
        "profile_id": recovery.profile_id,
        "state": "done" if done else recovery.state,
        "since": datetime.fromtimestamp(recovery.since_ms / 1000, UTC),
        "until": datetime.fromtimestamp(recovery.until_ms / 1000, UTC),
        "include_interrupted": recovery.include_interrupted,
        "contacts": total,
        "counts": counts,
        "runs": runs,
    }


def contacts_page(
    recovery: Recovery, cursor: int, limit: int
) -> tuple[list[tuple[str, str, Outcome | None]], int | None]:
    """Per-contact outcomes across the recovery's runs, in order: (run, contact, outcome), and
    the next cursor (a position in that order)."""
    store = get_storage()
    rows: list[tuple[str, str, Outcome | None]] = []
    offset = cursor
    total = 0
    for run in _runs(store, recovery.runs):
        total += run.total
        if offset >= run.total:
            offset -= run.total
            continue
        if len(rows) < limit:
            page, _ = store.runs.page(run.run_id, offset, limit - len(rows))
            rows += [(run.run_id, cid, outcome) for cid, outcome in page]
        offset = 0
    next_cursor = cursor + len(rows)
    return rows, next_cursor if next_cursor < total else None


def recovered(run_id: str, contacts: list[str]) -> dict[str, tuple[str, str, Outcome | None]]:
    """Contacts of `run_id` a recovery sent again: (recovery id, its run, the new outcome)."""
    store = get_storage()
    by_run = store.recoveries.recovered_by(run_id, contacts)
    found: dict[str, tuple[str, str, Outcome | None]] = {}
    for run in set(by_run.values()):
        mine = [cid for cid, by in by_run.items() if by == run]
        for cid, outcome in store.runs.outcomes(run, mine).items():
            found[cid] = (run.rsplit(".", 1)[0], run, outcome)
    return found


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _ms_or_now(when: datetime | None) -> int:
    return _ms(when) if when is not None else int(time.time() * 1000)
