"""Profile jobs: purging a deleted profile (queued by bot/lifecycle.py)."""

from __future__ import annotations

import logging

from flask import current_app

from bot import graph
from bot.crypto import TokenDecryptError
from storage import get_storage

log = logging.getLogger(__name__)


def purge_profile(profile_id: str) -> str:
    """RQ job: unsubscribe the app from the Page (if the token still works); remove all data."""
    store = get_storage()
    profile = store.profiles.get(profile_id, deleting=True)
    if profile is None:
        return "nothing left"
    try:
        current_app.extensions["graph"].unsubscribe(
            profile.page_id, store.profiles.page_token(profile_id)
        )
    except graph.GraphError as error:  # a dead token, an unreachable Facebook: delete anyway
        log.info(
            "profile %s: could not unsubscribe the app from page %s (%s)",
            profile_id,
            profile.page_id,
            error.summary(),
        )
    except TokenDecryptError:
        log.info(
            "profile %s: token unreadable, app not unsubscribed from page %s",
            profile_id,
            profile.page_id,
        )
    store.profiles.purge(profile_id)
    return "purged"
