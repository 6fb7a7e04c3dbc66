"""Profiles API: connect a Page, list and read profiles. Tokens are never answered."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app, request

from bot import lifecycle, onboarding, protection, recovery
from bot.api import bp, load_body
from bot.api.contacts import check_id
from bot.api.schemas import ProfileCreateSchema, ProfilePatchSchema, ProfileSchema, RecoverSchema
from bot.errors import not_found
from bot.optin_code import generic_ref, optin_html
from storage import get_storage
from storage.profiles import Profile


def profile_json(profile: Profile) -> dict:
    def when(seconds: float | None) -> datetime | None:
        return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None

    return ProfileSchema().dump(
        {
            "id": profile.id,
            "name": profile.name,
            "page_id": profile.page_id,
            "page_name": profile.page_name,
            "status": profile.status,
            "optin_field": profile.optin_field,
            "health": profile.health,
            "health_reason": profile.health_reason,
            "health_checked_at": when(profile.health_checked_at),
            "sending": protection.sending_status(profile.id),
            "created_at": when(profile.created_at),
        }
    )


def get_profile_or_404(profile_id: str) -> Profile:
    profile = get_storage().profiles.get(profile_id) if profile_id.isdigit() else None
    if profile is None:
        raise not_found("profile", profile_id)
    return profile


@bp.post("/profiles")
def create_profile():
    body = load_body(ProfileCreateSchema())
    profile = onboarding.connect_page(
        name=body["name"],
        page_id=body["page_id"],
        page_token=body["page_access_token"],
        status=body["status"],
        connected_by="api",
    )
    return profile_json(profile), 201, {"Location": f"/api/v1/profiles/{profile.id}"}


@bp.get("/profiles")
def list_profiles():
    return {"profiles": [profile_json(p) for p in get_storage().profiles.list()]}


@bp.get("/profiles/<profile_id>")
def get_profile(profile_id: str):
    return profile_json(get_profile_or_404(profile_id))


@bp.patch("/profiles/<profile_id>")
def update_profile(profile_id: str):
    """Rename, enable or disable, give a new Page token; disabling one used by an active program
    is 409 profile_in_use."""
    profile = get_profile_or_404(profile_id)
    body = load_body(ProfilePatchSchema())
    if "page_access_token" in body:  # checked with Facebook before anything else changes
        onboarding.replace_token(profile, body["page_access_token"])
    if "status" in body and body["status"] != profile.status:
        lifecycle.set_status(profile.id, body["status"])
    if "name" in body:
        get_storage().profiles.rename(profile.id, body["name"])
    return profile_json(get_profile_or_404(profile.id))


@bp.delete("/profiles/<profile_id>")
def delete_profile(profile_id: str):
    """Delete the profile and all its statistics (409 profile_in_use if active programs use it)."""
    lifecycle.delete(get_profile_or_404(profile_id).id)
    return "", 204


@bp.post("/profiles/<profile_id>/resume")
def resume_sending(profile_id: str):
    """Resume a paused profile's sending now, whatever paused it (200 either way)."""
    protection.resume(get_profile_or_404(profile_id).id)
    return profile_json(get_profile_or_404(profile_id))


@bp.post("/profiles/<profile_id>/recover")
def recover_sends(profile_id: str):
    """Send again the recoverable failures of the profile's runs created in the window: 202 with
    the recovery, or 200 with the same one when the same request comes again."""
    profile = get_profile_or_404(profile_id)
    body = load_body(RecoverSchema())
    found, created = recovery.recover(
        profile.id, body["since"], body["until"], body["include_interrupted"]
    )
    url = f"/api/v1/recoveries/{found.recovery_id}"
    contacts = recovery.status(found)["contacts"]
    answer = {"recovery_id": found.recovery_id, "contacts": contacts, "status_url": url}
    return answer, 202 if created else 200, {"Location": url}


@bp.get("/profiles/<profile_id>/optin-code")
def optin_code(profile_id: str):
    """The HTML a business pastes: for one contact (`contact_id`) or generic (a merge field)."""
    profile = get_profile_or_404(profile_id)
    contact_id = request.args.get("contact_id")
    ref = (
        current_app.extensions["refs"].sign(profile.id, check_id(contact_id))
        if contact_id
        else generic_ref(profile.id)
    )
    settings = current_app.config["SETTINGS"]
    html = optin_html(
        profile_name=profile.name,
        page_name=profile.page_name,
        page_id=profile.page_id,
        app_id=settings.fb_app_id,
        version=settings.graph_api_version,
        ref=ref,
    )
    return {"profile_id": profile.id, "contact_id": contact_id, "ref": ref, "html": html}
