"""Protecting a business's Page: whether its profile may send now, in words, and resuming.

The breaker itself (pausing on a spike of refusals or a restriction, probing after a cool-down)
is storage's mechanism (storage/sending.py) run by the rules of bot/policy.py; this module is
what the API and the profile page show of it and the owner's one action on it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TypedDict

from bot.reasons import PAUSES
from storage import get_storage
from storage.sending import SendingState

log = logging.getLogger(__name__)


class SendingStatus(TypedDict):
    state: str  # open, paused or probing
    reason: str | None
    message: str | None  # why, for the page owner
    advice: str | None  # what they can do
    detail: str | None  # Facebook's words, or the counts that tripped it
    since: datetime | None
    resume_at: datetime | None  # when a probe send may go; None while paused: until lifted


def sending_status(profile_id: str) -> SendingStatus:
    return status_of(get_storage().sending.state(profile_id))


def status_of(state: SendingState) -> SendingStatus:
    pause = PAUSES.get(state.reason)
    return {
        "state": state.state,
        "reason": state.reason or None,
        "message": pause.text if pause else None,
        "advice": pause.advice if pause else None,
        "detail": state.detail or None,
        "since": _when(state.since_ms),
        "resume_at": _when(state.resume_at_ms),
    }


def resume(profile_id: str) -> bool:
    """Resume sending now, whatever paused it (if Facebook still refuses, the next refusals
    pause it again); False if it was not paused."""
    store = get_storage()
    resumed = store.sending.resume(profile_id)
    profile = store.profiles.get(profile_id)
    if profile and profile.health == "blocked":  # held as health before 2026-12-06
        store.profiles.set_health(profile_id, "ok")
        resumed = True
    if resumed:
        log.info("profile %s: sending resumed by hand", profile_id)
    return resumed


def _when(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else None
