"""Connecting a Facebook Page as a Messenger profile (API and the Facebook Login pages).

Checks the token against the Graph API (it must be that Page's), refuses a Page that already
has a profile, subscribes our app to the Page's webhook fields, then stores the profile with
its token encrypted. Facebook is called before anything is written, so a refusal writes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app

from bot import graph, policy
from bot.errors import Conflict, Expired, Forbidden, Invalid, Unavailable
from storage import get_storage
from storage.errors import PageTaken
from storage.profiles import Profile
from storage.users import LoginPage

log = logging.getLogger(__name__)


def page_taken(page_id: str, owner_id: str) -> Conflict:
    """The refusal names the Page and its profile as people know them (ids are in the details)."""
    owner = get_storage().profiles.get(owner_id)
    if owner is None:  # deleted meanwhile: the names are gone
        message = "That Facebook Page already has a profile; a Page can have only one"
    else:
        message = (
            f"The Page “{owner.page_name or page_id}” already has the profile “{owner.name}”; "
            "a Page can have only one profile"
        )
    return Conflict("page_taken", message, {"profile_id": owner_id})


def connect_page(
    *, name: str, page_id: str, page_token: str, status: str, connected_by: str = ""
) -> Profile:
    """Create a profile for a Page after Facebook confirms the token; a `DomainError` otherwise."""
    store = get_storage()
    owner = store.profiles.owner_of_page(page_id)
    if owner:
        raise page_taken(page_id, owner)
    page = _checked_and_subscribed(page_id, page_token)
    try:
        profile = store.profiles.create(
            name=name,
            page_id=page_id,
            page_name=str(page.get("name", "")),
            page_token=page_token,
            status=status,
            connected_by=connected_by,
        )
    except PageTaken as exc:  # another request connected the same Page meanwhile
        raise page_taken(page_id, exc.owner_id) from None
    log.info("profile %s connected to page %s", profile.id, page_id)
    return profile


def _checked_and_subscribed(page_id: str, page_token: str) -> dict[str, Any]:
    """The Page as Facebook describes it to this token, after subscribing our app to it; a
    `DomainError` if the token is not that Page's or Facebook refuses."""
    client: graph.GraphClient = current_app.extensions["graph"]
    try:
        page = client.page(page_id, page_token)
        if str(page.get("id")) != page_id:
            raise Invalid("page_mismatch", "The access token does not belong to that Page")
        client.subscribe(page_id, page_token)
    except graph.TokenError as exc:
        raise Invalid(
            "invalid_token", "Facebook refused the Page access token: " + exc.summary()
        ) from None
    except (graph.RetryableError, graph.AmbiguousError) as exc:
        raise Unavailable(
            "facebook_unavailable", "Facebook could not be reached: " + exc.summary()
        ) from None
    except graph.GraphError as exc:
        raise Invalid(
            "page_not_accessible",
            "Facebook refused access to that Page with this token: " + exc.summary(),
        ) from None
    return page


def replace_token(profile: Profile, page_token: str) -> None:
    """Give a profile a new Page token through the API: it must be a token of the same Page
    (checked with Facebook, which also gets our app subscribed again); health back to ok."""
    _checked_and_subscribed(profile.page_id, page_token)
    get_storage().profiles.replace_token(profile.id, page_token, "api")
    log.info("profile %s has a new Page token (API)", profile.id)


def _login_expired() -> Expired:
    return Expired(
        "login_expired", "Your Facebook login has expired; please log in to Facebook again."
    )


def _login_page(nonce: str, page_id: str) -> tuple[str, LoginPage]:
    """(user id, the Page) from a Facebook login still pending, or a refusal."""
    login = get_storage().users.login_pages(nonce)
    if login is None:
        raise _login_expired()
    user_id, pages = login
    page = next((p for p in pages if p["id"] == page_id), None)
    if page is None:
        raise Invalid(
            "page_not_yours", "The Facebook account you logged in with has no role on that Page."
        )
    role = policy.role_from_tasks(page.get("tasks"))
    if not policy.can_connect(page.get("tasks")):
        has = f"you are {role}" if role != "none" else "you have no role"
        raise Forbidden(
            "role_insufficient",
            f"On the Page “{page['name']}” {has}: connecting a Page needs the "
            "Admin, Editor or Moderator role.",
            {"role": role},
        )
    return user_id, page


def _login_token(nonce: str, page_id: str) -> str:
    """The token of a Page `_login_page` returned, unless the login expired in between."""
    token = get_storage().users.login_page_token(nonce, page_id)
    if token is None:
        raise _login_expired()
    return token


def connect_from_login(nonce: str, page_id: str, *, name: str, status: str) -> Profile:
    """Create a profile from a Page of the user's Facebook login (role, Page, Facebook checked)."""
    user_id, page = _login_page(nonce, page_id)
    token = _login_token(nonce, page_id)
    profile = connect_page(
        name=name, page_id=page_id, page_token=token, status=status, connected_by=user_id
    )
    get_storage().users.end_login(nonce)
    return profile


def reauthorise(profile: Profile, nonce: str) -> None:
    """Give a profile the Page token of a fresh login (and subscribe the app again)."""
    user_id, page = _login_page(nonce, profile.page_id)
    token = _login_token(nonce, profile.page_id)
    client: graph.GraphClient = current_app.extensions["graph"]
    try:
        client.subscribe(profile.page_id, token)
    except graph.GraphError as exc:
        raise Invalid(
            "facebook_refused", "Facebook refused the new token: " + exc.summary()
        ) from None
    get_storage().profiles.replace_token(profile.id, token, user_id)
    get_storage().users.end_login(nonce)
    log.info("profile %s reauthorised", profile.id)
