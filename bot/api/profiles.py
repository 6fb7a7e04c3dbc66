"""Profiles API: connect a Page, list and read profiles. Tokens are never answered."""
from __future__ import annotations

from datetime import datetime, timezone

from bot.api import bp, load_body
from bot.api.schemas import ProfileCreateSchema, ProfileSchema
from bot.errors import not_found
from bot.onboarding import connect_page
from storage import get_storage
from storage.profiles import Profile


def profile_json(profile: Profile) -> dict:
    def when(seconds: int | None) -> datetime | None:
        return datetime.fromtimestamp(seconds, timezone.utc) if seconds is not None else None
    return ProfileSchema().dump({
        "id": profile.id, "name": profile.name, "page_id": profile.page_id, "page_name": profile.page_name,
        "status": profile.status, "optin_field": profile.optin_field, "health": profile.health,
        "health_reason": profile.health_reason, "health_checked_at": when(profile.health_checked_at),
        "created_at": when(profile.created_at)})


def get_profile_or_404(profile_id: str) -> Profile:
    profile = get_storage().profiles.get(profile_id) if profile_id.isdigit() else None
    if profile is None:
        raise not_found("profile", profile_id)
    return profile


@bp.post("/profiles")
def create_profile():
    body = load_body(ProfileCreateSchema())
    profile = connect_page(name=body["name"], page_id=body["page_id"],
                           page_token=body["page_access_token"], status=body["status"])
    return profile_json(profile), 201, {"Location": f"/api/v1/profiles/{profile.id}"}


@bp.get("/profiles")
def list_profiles():
    return {"profiles": [profile_json(p) for p in get_storage().profiles.list()]}


@bp.get("/profiles/<profile_id>")
def get_profile(profile_id: str):
    return profile_json(get_profile_or_404(profile_id))
