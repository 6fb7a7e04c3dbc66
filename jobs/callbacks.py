"""Run callbacks as RQ jobs: post a done run's summary to the program engine, and the periodic
task that queues the ones due (the summary, signature and URL rules: bot/callbacks.py; what is
recorded: storage/callbacks.py).

Crash-safe by construction: a run owing its callback stays in runs:callbacks_due until it is
delivered or given up; taking it, and beginning an attempt, only move its due time a lease
ahead (LEASE_MS, well over one attempt's 15 s), so a job lost on its way or a worker killed
mid-POST leaves it to be taken again. A success is recorded at most once and a delivered run is
never posted again; a POST whose 2xx answer was lost (the worker died before recording it) is
made again, so the engine may see a run's summary twice, and drops the repeat by `X-Run-Id`.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

from flask import current_app

from bot import callbacks, logs, tasks
from bot.config import Settings
from storage import get_storage

log = logging.getLogger(__name__)

LEASE_MS = 120_000
TAKE_LIMIT = 500  # runs queued per tick; the rest on the next


def _now_ms() -> int:
    return int(time.time() * 1000)


def queue_callbacks(now_ms: int | None = None) -> int:
    """Periodic: queue a job for every run whose callback is due; returns how many."""
    now_ms = _now_ms() if now_ms is None else now_ms
    run_ids, claim = get_storage().callbacks.take_due(now_ms, LEASE_MS, TAKE_LIMIT)
    for run_id in run_ids:
        tasks.enqueue(
            tasks.SEND_CALLBACK,
            run_id,
            claim,
            queue_name="maintenance",
            job_timeout=LEASE_MS // 1000,
            result_ttl=3600,
            failure_ttl=7 * 86400,
            description=f"callback of run {run_id}",
        )
    return len(run_ids)


def send_callback(run_id: str, claim: int, now_ms: int | None = None) -> str:
    """The RQ job: one attempt at posting a done run's summary, then delivered, retried later
    (backoff with jitter) or given up a day after the run's end. `claim` is the one the run
    was taken with: a job whose claim has moved on does nothing. `now_ms` fixes the clock."""
    logs.context_id.set(f"run:{run_id}")
    settings: Settings = current_app.config["SETTINGS"]
    store = get_storage().callbacks
    attempt = store.begin(run_id, claim, _now_ms() if now_ms is None else now_ms, LEASE_MS)
    if attempt.status != "go":
        return attempt.status
    run = store.run(run_id)
    if run is None:  # begun, so the run exists: only a callback_url removed by hand lands here
        store.give_up(run_id, attempt.claim, _now_ms(), "the run has no callback_url")
        return "no callback_url"
    host = urlsplit(run.url).hostname or "?"  # never the whole URL: it may carry a token
    delivery = callbacks.deliver(run, settings, attempt.number)
    ended_ms = _now_ms() if now_ms is None else now_ms
    if delivery.ok:
        store.delivered(run_id, attempt.claim, ended_ms)
        log.info("callback delivered to %s (attempt %d)", host, attempt.number)
        return "delivered"
    next_ms = callbacks.next_attempt_ms(attempt.number, ended_ms, run.done_at_ms)
    if next_ms is None:
        store.give_up(run_id, attempt.claim, ended_ms, delivery.error)
        log.error(
            "callback to %s given up after %d attempts: %s", host, attempt.number, delivery.error
        )
        return "given up"
    if not store.retry(run_id, attempt.claim, ended_ms, next_ms, delivery.error):
        return "superseded"  # our lease lapsed and another attempt has the run
    log.warning(
        "callback to %s failed (attempt %d: %s); next in %d s",
        host,
        attempt.number,
        delivery.error,
        (next_ms - ended_ms) // 1000,
    )
    return "retry"
