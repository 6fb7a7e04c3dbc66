"""Consent you can prove: each contact's ledger per profile, and withdrawing consent.

The ledger itself is kept by storage/consent.py (opt-ins are recorded by the webhook script);
this module shapes it for the API and the CSV and withdraws consent for the API and the
profile page. A withdrawal clears the contact's FBOPTIN_XXX value; later Messenger nodes give
the warning `opted_out` (bot/policy.py) until the person opts in again through a button or link.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TypedDict

from bot.errors import not_found
from storage import Storage
from storage.consent import NEVER, OPTED_IN, OPTED_OUT, ConsentEvent, State
from storage.profiles import Profile

CSV_HEADER = (
    "contact_id",
    "profile_id",
    "state",
    "at",
    "type",
    "source",
    "verified",
    "recipient",
    "page_id",
)


class EventJson(TypedDict):
    at: str
    type: str
    source: str
    verified: bool
    recipient: str | None
    page_id: str


class ProfileConsent(TypedDict):
    profile_id: str
    state: State
    events: list[EventJson]


def _at(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _event_json(event: ConsentEvent) -> EventJson:
    return {
        "at": _at(event["at_ms"]),
        "type": event["type"],
        "source": event["source"],
        "verified": event["verified"],
        "recipient": event["recipient"] or None,
        "page_id": event["page_id"],
    }


def state_of(events: list[ConsentEvent], optin_value: str | None) -> State:
    """The last event decides; a value without a ledger is an opt-in older than the ledger."""
    if events:
        return OPTED_IN if events[-1]["type"] == "opt_in" else OPTED_OUT
    return OPTED_IN if optin_value else NEVER


def contact_consent(store: Storage, contact_id: str) -> dict[str, object]:
    """`GET /contacts/<id>/consent`: every profile's state and events, oldest first."""
    fields = store.contacts.get(contact_id)
    if fields is None:
        raise not_found("contact", contact_id)
    profiles = store.profiles.list()
    ledgers = store.consent.of_contact([p.id for p in profiles], contact_id)
    answer: list[ProfileConsent] = [
        {
            "profile_id": profile.id,
            "state": state_of(ledgers[profile.id], fields.get(profile.optin_field)),
            "events": [_event_json(e) for e in ledgers[profile.id]],
        }
        for profile in profiles
    ]
    return {"contact_id": contact_id, "profiles": answer}


def withdraw(
    store: Storage, contact_id: str, profile_id: str, *, source: str, now_ms: int | None = None
) -> dict[str, object]:
    """Withdraw a contact's consent to a profile (idempotent: `withdrawn` False if it was)."""
    profile = _profile(store, profile_id)
    at_ms = int(time.time() * 1000) if now_ms is None else now_ms
    result = store.consent.withdraw(
        profile.id, contact_id, source=source, page_id=profile.page_id, at_ms=at_ms
    )
    if result < 0:
        raise not_found("contact", contact_id)
    return {
        "contact_id": contact_id,
        "profile_id": profile.id,
        "state": OPTED_OUT,
        "withdrawn": result == 1,
    }


def csv_rows(store: Storage, profile_id: str) -> Iterator[tuple[object, ...]]:
    """One row per event of every contact with a ledger on the profile (404 before any row)."""
    return _rows(store, _profile(store, profile_id))


def _rows(store: Storage, profile: Profile) -> Iterator[tuple[object, ...]]:
    for chunk in store.consent.contacts(profile.id):
        for contact_id, events in store.consent.histories(profile.id, chunk).items():
            state = state_of(events, None)
            for e in events:
                row = _event_json(e)
                yield (
                    contact_id,
                    profile.id,
                    state,
                    row["at"],
                    row["type"],
                    row["source"],
                    "yes" if row["verified"] else "no",
                    row["recipient"] or "",
                    row["page_id"],
                )


def _profile(store: Storage, profile_id: str) -> Profile:
    profile = store.profiles.get(profile_id)
    if profile is None:
        raise not_found("profile", profile_id)
    return profile
