"""Connecting a Facebook Page as a Messenger profile (API now; Facebook Login pages later).

Checks the token against the Graph API (it must be that Page's), refuses a Page that already
has a profile, subscribes our app to the Page's webhook fields, then stores the profile with
its token encrypted. Facebook is called before anything is written, so a refusal writes nothing.
"""
from __future__ import annotations

import logging

from flask import current_app

from bot import graph
from bot.errors import ApiError
from storage import get_storage
from storage.errors import PageTaken
from storage.profiles import Profile

log = logging.getLogger(__name__)


def page_taken(page_id: str, owner_id: str) -> ApiError:
    return ApiError(409, "page_taken", f"Facebook Page {page_id} already belongs to profile {owner_id}; "
                                       "a Page can have only one profile", {"profile_id": owner_id})


def connect_page(*, name: str, page_id: str, page_token: str, status: str) -> Profile:
    """Create a profile for a Page after Facebook confirms the token; ApiError otherwise."""
    store = get_storage()
    owner = store.profiles.owner_of_page(page_id)
    if owner:
        raise page_taken(page_id, owner)
    client: graph.GraphClient = current_app.extensions["graph"]
    try:
        page = client.page(page_id, page_token)
        if str(page.get("id")) != page_id:
            raise ApiError(422, "page_mismatch", "The access token does not belong to that Page")
        client.subscribe(page_id, page_token)
    except graph.TokenError as exc:
        raise ApiError(422, "invalid_token", "Facebook refused the Page access token: " + exc.summary()) from None
    except (graph.RetryableError, graph.AmbiguousError) as exc:
        raise ApiError(502, "facebook_unavailable", "Facebook could not be reached: " + exc.summary()) from None
    except graph.GraphError as exc:
        raise ApiError(422, "page_not_accessible",
                       "Facebook refused access to that Page with this token: " + exc.summary()) from None
    try:
        profile = store.profiles.create(name=name, page_id=page_id, page_name=str(page.get("name", "")),
                                        page_token=page_token, status=status)
    except PageTaken as exc:  # another request connected the same Page meanwhile
        raise page_taken(page_id, exc.owner_id) from None
    log.info("profile %s connected to page %s", profile.id, page_id)
    return profile
