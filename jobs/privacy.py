"""Data deletion requests (Facebook's callback): forget a Facebook user everywhere we can.

The request carries the app-scoped id from Facebook Login. We delete the sign-in record and
the person's link to profiles at once; then, per profile, Facebook's ID matching API tells us
the same person's PSID on that Page, and the contact behind it is erased as
DELETE /contacts/<id> erases it (bot/erasure.py); a contact a run is still sending to makes the
job fail, and RQ's retry finishes it later. A Page where Facebook cannot tell (dead token,
another business) is listed in the result so the status page is honest about it.
"""

from __future__ import annotations

import logging
import time

from flask import current_app

from bot import consent, erasure, graph
from bot.crypto import TokenDecryptError
from storage import Storage, get_storage
from storage.profiles import Profile

log = logging.getLogger(__name__)


def _erase_person(store: Storage, profile_id: str, psid: str) -> int:
    """The contact behind the PSID is erased as DELETE /contacts/<id> would (bot/erasure.py);
    a PSID linked to no contact loses what the profile holds under it."""
    contact = store.inbound.contact_of(profile_id, psid)
    if contact is None:
        return store.erasure.recipient(profile_id, psid)
    refs = current_app.extensions["refs"]
    erased = erasure.erase_contact(store, refs, contact, cause="data_deletion")
    return sum(erased.values())


def delete_user_data(user_id: str, code: str) -> dict[str, object]:
    store = get_storage()
    requested_at = int(time.time())
    deleted = {"account": store.users.forget(user_id), "profile_links": 0, "messenger_records": 0}
    for profile in store.profiles.list():
        if profile.connected_by == user_id:
            store.profiles.forget_connector(profile.id)
            deleted["profile_links"] += 1
    matched, unmatched_pages = _psids_of(store, user_id)
    for profile, psid in matched:
        deleted["messenger_records"] += _erase_person(store, profile.id, psid)
    result = {
        "status": "completed",
        "requested_at": requested_at,
        "deleted": deleted,
        "unmatched_pages": unmatched_pages,
    }
    store.users.record_deletion(code, result)
    log.info("data deletion %s completed: %s", code, deleted)
    return result


def withdraw_consent_of_user(user_id: str) -> int:
    """Deauthorisation: the person removed our app on Facebook, so their consent to every
    profile is withdrawn (source `deauthorize`). Returns how many withdrawals were recorded."""
    store = get_storage()
    withdrawn = 0
    matched, _ = _psids_of(store, user_id)
    for profile, psid in matched:
        contact = store.inbound.contact_of(profile.id, psid)
        if contact is not None:
            answer = consent.withdraw(store, contact, profile.id, source="deauthorize")
            withdrawn += bool(answer["withdrawn"])
    log.info("deauthorisation: consent withdrawn on %d profiles", withdrawn)
    return withdrawn


def _psids_of(store: Storage, user_id: str) -> tuple[list[tuple[Profile, str]], list[str]]:
    """The person's PSID on each profile's Page (Facebook's ID matching API), and the Pages
    where Facebook could not tell (dead token, another business)."""
    client = current_app.extensions["graph"]
    matched: list[tuple[Profile, str]] = []
    unmatched_pages: list[str] = []
    for profile in store.profiles.list():
        try:
            psids = client.ids_for_pages(
                user_id, profile.page_id, store.profiles.page_token(profile.id)
            )
        except (graph.GraphError, TokenDecryptError):
            unmatched_pages.append(profile.page_id)
            continue
        matched += [(profile, psid) for psid in psids]
    return matched, unmatched_pages
