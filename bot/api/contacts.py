"""Contacts API: the data fields personalisation reads, and every FBOPTIN_XXX."""

from __future__ import annotations

from flask import current_app

from bot.api import bp, load_body
from bot.api.schemas import ContactPutSchema
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
