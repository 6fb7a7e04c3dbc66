"""Data deletion requests (Facebook's callback): forget a Facebook user everywhere we can.

The request carries the app-scoped id from Facebook Login. We delete the sign-in record and
the person's link to profiles at once; then, per profile, Facebook's ID matching API tells us
the same person's PSID on that Page, and we delete the PSID links, interaction times and opt-in
values. A Page where Facebook cannot tell (dead token, another business) is listed in the
result so the status page is honest about it.
"""

from __future__ import annotations

import logging
import time

from flask import current_app

from bot import graph
from bot.crypto import TokenDecryptError
from storage import get_storage

log = logging.getLogger(__name__)


def delete_user_data(user_id: str, code: str) -> dict[str, object]:
    store, client = get_storage(), current_app.extensions["graph"]
    requested_at = int(time.time())
    deleted = {"account": store.users.forget(user_id), "profile_links": 0, "messenger_records": 0}
    unmatched_pages: list[str] = []
    for profile in store.profiles.list():
        if profile.connected_by == user_id:
            store.profiles.forget_connector(profile.id)
            deleted["profile_links"] += 1
        try:
            psids = client.ids_for_pages(
                user_id, profile.page_id, store.profiles.page_token(profile.id)
            )
        except (graph.GraphError, TokenDecryptError):
            unmatched_pages.append(profile.page_id)
            continue
        for psid in psids:
            deleted["messenger_records"] += store.inbound.forget_recipient(profile.id, psid)
    result = {
        "status": "completed",
        "requested_at": requested_at,
        "deleted": deleted,
        "unmatched_pages": unmatched_pages,
    }
    store.users.record_deletion(code, result)
    log.info("data deletion %s completed: %s", code, deleted)
    return result
