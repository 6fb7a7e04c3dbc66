"""Erase a person: DELETE /contacts/<id>, and Facebook's data deletion for a matched PSID.

Afterwards nothing in Redis names them — contact id, PSIDs, user_refs or field values — while
the counters keep their numbers (storage/erasure.py says what stays and why). The steps go
from the run outcomes to the contact record itself, each idempotent, so an erasure cut short
is finished by asking again. A contact an active run may still send to is refused with 409
(nothing changed): its batch may hold it in memory, and an erasure racing a send would let the
send write the contact back.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from bot.errors import Conflict, not_found
from bot.refs import OptinRefs
from storage import Storage
from storage.consent import ConsentEvent
from storage.inbound import ParkedEvent
from storage.profiles import Profile

CAUSES = ("api", "data_deletion")


def erase_contact(
    store: Storage, refs: OptinRefs, contact_id: str, *, cause: str, now_ms: int | None = None
) -> dict[str, int]:
    """Erase the contact everywhere; what was removed or made anonymous, by kind."""
    if cause not in CAUSES:
        raise ValueError(f"unknown erasure cause {cause!r}")
    # Webhook writes still parked may name the person: applied first, so that they are
    # erased with the rest instead of writing the person back a moment later.
    store.inbound.drain_inbox()
    fields = store.contacts.get(contact_id) or {}
    profiles = store.profiles.list()
    run_ids = [run_id for p in profiles for run_id in store.erasure.run_ids(p.id)]
    _refuse_while_sending(store.erasure.unsettled_runs(contact_id, run_ids))
    erased: Counter[str] = Counter()
    for run_id in run_ids:
        places = store.erasure.from_run(run_id, contact_id)
        if places < 0:
            _refuse_while_sending([run_id])
        erased["run_outcomes"] += places > 0
    ledgers = store.consent.of_contact([p.id for p in profiles], contact_id)  # one round trip
    everywhere: set[str] = set()  # every PSID and user_ref that named the person, any profile
    for profile in profiles:
        recipients = _recipients(profile, ledgers[profile.id], fields)
        counts, named = _erase_from_profile(store, refs, profile, contact_id, recipients)
        erased += counts
        everywhere |= named
    erased["messenger_records"] += store.erasure.set_aside_events(
        _names_person(refs, contact_id, everywhere)
    )
    if not fields and not any(erased.values()):
        raise not_found("contact", contact_id)  # nothing names it: nothing counted either
    at_ms = int(time.time() * 1000) if now_ms is None else now_ms
    erased["contact"] = store.erasure.contact(
        contact_id, cause, refs.fingerprint(contact_id), at_ms
    )
    return {kind: erased[kind] for kind in _KINDS}


_KINDS = (
    "contact",
    "run_outcomes",
    "statistics_rows",
    "messenger_records",
    "unmatched_optins",
    "consent_records",
)


def _erase_from_profile(
    store: Storage, refs: OptinRefs, profile: Profile, contact_id: str, recipients: set[str]
) -> tuple[Counter[str], set[str]]:
    """What was erased from the profile, and the PSIDs and user_refs that named the person
    there: `recipients`, and an unmatched opt-in's user_ref when its ref named them."""
    erased: Counter[str] = Counter()
    erased["statistics_rows"] = store.erasure.rows(profile.id, contact_id)
    for rcpt in recipients:
        if store.inbound.contact_of(profile.id, rcpt) in (contact_id, None):
            erased["messenger_records"] += store.erasure.recipient(profile.id, rcpt)
    naming = [
        entry
        for entry in store.erasure.unmatched(profile.id)
        if _unmatched_names(refs, entry, contact_id, recipients)
    ]
    erased["unmatched_optins"] = store.erasure.drop_unmatched(profile.id, naming)
    erased["consent_records"] = store.erasure.consent(profile.id, contact_id)
    return erased, recipients | {entry.split("\x1f")[0] for entry in naming}


def _recipients(profile: Profile, ledger: list[ConsentEvent], fields: dict[str, str]) -> set[str]:
    """Every PSID or user_ref the contact had on the profile: its opt-in value now and every
    one its consent ledger names (the index forgets a value when another replaces it)."""
    found = {e["recipient"] for e in ledger}
    found.add(fields.get(profile.optin_field, ""))
    return found - {""}


def _unmatched_names(refs: OptinRefs, entry: str, contact_id: str, recipients: set[str]) -> bool:
    rcpt, ref, _ = (entry.split("\x1f") + ["", ""])[:3]
    return rcpt in recipients or refs.names(ref) == contact_id


def _names_person(
    refs: OptinRefs, contact_id: str, recipients: set[str]
) -> Callable[[ParkedEvent], bool]:
    """Whether a webhook event, as parked (storage/inbound.py Event), names the person: by
    contact id, PSID or user_ref, or by a ref that carries their id."""

    def names(event: ParkedEvent) -> bool:
        return (
            event.get("contact") == contact_id
            or event.get("rcpt") in recipients
            or f"user_ref:{event.get('user_ref', '')}" in recipients
            or refs.names(event.get("ref")) == contact_id
        )

    return names


def _refuse_while_sending(runs: list[str]) -> None:
    if runs:
        raise Conflict(
            "contact_being_sent",
            # no id in the text: a failed job keeps its error in Redis (the data deletion's)
            "The contact is still to be sent by a run; nothing was erased. "
            "Ask again once the run has handled it (GET /runs/<id> shows its progress).",
            {"runs": runs},
        )
