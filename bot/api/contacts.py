"""Contacts API: the data fields personalisation reads, every FBOPTIN_XXX, consent and erasure."""

from __future__ import annotations

from flask import current_app

from bot import consent, erasure
from bot.api import bp, load_body
from bot.api.schemas import ContactPutSchema, OptOutSchema
from bot.csv_export import csv_response
from bot.errors import ApiError, not_found
from bot.optin_code import ref_field
from bot.validation import ID
from storage import get_storage


def check_id(ident: str, what: str = "contact") -> str:
    """Ids in URLs: 1-128 letters, digits and . _ : @ - (422 otherwise)."""
    if not ID.fullmatch(ident):
        raise ApiError(
            422,
            "validation_failed",
            f"{what.capitalize()} ids are 1-128 characters: letters, digits and . _ : @ -",
            {f"{what}_id": ident[:200]},
        )
    return ident


@bp.put("/contacts/<contact_id>")
def put_contact(contact_id: str):
    """Set a contact's data fields (opt-in fields are kept)."""
    check_id(contact_id)
    body = load_body(ContactPutSchema())
    fields = get_storage().contacts.replace(contact_id, body["fields"])
    return contact_json(contact_id, fields)


@bp.get("/contacts/<contact_id>")
def get_contact(contact_id: str):
    fields = get_storage().contacts.get(check_id(contact_id))
    if fields is None:
        raise not_found("contact", contact_id)
    return contact_json(contact_id, fields)


def contact_json(contact_id: str, fields: dict[str, str]) -> dict:
    """The contact with its data fields and, per profile, the signed ref its landing pages use."""
    refs = current_app.extensions["refs"]
    return {
        "id": contact_id,
        "fields": fields,
        "optin_refs": {
            ref_field(p.id): refs.sign(p.id, contact_id) for p in get_storage().profiles.list()
        },
    }


@bp.delete("/contacts/<contact_id>")
def erase_contact(contact_id: str):
    """Erase the person: fields, opt-in values, Messenger links, ledger, rows and outcomes."""
    refs = current_app.extensions["refs"]
    erased = erasure.erase_contact(get_storage(), refs, check_id(contact_id), cause="api")
    return {"contact_id": contact_id, "erased": erased}


@bp.get("/contacts/<contact_id>/consent")
def contact_consent(contact_id: str):
    """When and how the contact agreed to hear from each profile, and withdrew (oldest first)."""
    return consent.contact_consent(get_storage(), check_id(contact_id))


@bp.post("/contacts/<contact_id>/opt-out")
def opt_out(contact_id: str):
    """Withdraw the contact's consent to a profile: no Messenger message until they opt in again."""
    body = load_body(OptOutSchema())
    return consent.withdraw(get_storage(), check_id(contact_id), body["profile_id"], source="api")


@bp.get("/profiles/<profile_id>/consent.csv")
def consent_csv(profile_id: str):
    """The ledger of every contact of the profile, one row per event, streamed."""
    rows = consent.csv_rows(get_storage(), check_id(profile_id, "profile"))
    return csv_response(f"messenger-{profile_id}-consent.csv", consent.CSV_HEADER, rows)
