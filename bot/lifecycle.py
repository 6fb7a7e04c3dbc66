"""Enabling, disabling and deleting profiles: the rules, shared by the API and the pages.

A profile used by a node of an active program can be neither disabled nor deleted (the refusal
names the programs); deleting removes its statistics, runs, PSID index, opt-in values and
token, and unsubscribes our app from the Page while the token still works. Its FBOPTIN_XXX
name is never reused (profile ids only grow).
"""

from __future__ import annotations

import logging

from bot import tasks
from bot.errors import Conflict, not_found
from storage import get_storage
from storage.errors import ProfileInUse

log = logging.getLogger(__name__)


def in_use(error: ProfileInUse, action: str, profile_id: str) -> Conflict:
    """The refusal names the profile and the programs as people know them (ids are in the
    details)."""
    # Programs by name only: "Order updates (demo) (demo)" came from adding the id "demo" after
    # a name that already ended with it.
    names = [f"“{name}”" for name in sorted(name for _, name in error.programs)]
    if len(names) > 1:
        which = f"the active programs {', '.join(names[:-1])} and {names[-1]} use it"
    else:
        which = f"the active program {names[0]} uses it" if names else "an active program uses it"
    profile = get_storage().profiles.get(profile_id)
    subject = f"The profile “{profile.name}”" if profile else "The profile"
    return Conflict(
        "profile_in_use",
        f"{subject} cannot be {action}: {which}",
        {"programs": [{"id": prog_id, "name": name} for prog_id, name in error.programs]},
    )


def set_status(profile_id: str, status: str) -> None:
    try:
        found = get_storage().profiles.set_status(profile_id, status)
    except ProfileInUse as error:
        raise in_use(error, "disabled", profile_id) from None
    if not found:
        raise not_found("profile", profile_id)


def delete(profile_id: str) -> None:
    """Hide the profile and free its Page now; the purge job removes everything else."""
    try:
        found = get_storage().profiles.begin_delete(profile_id)
    except ProfileInUse as error:
        raise in_use(error, "deleted", profile_id) from None
    if not found:
        raise not_found("profile", profile_id)
    tasks.enqueue(
        tasks.PURGE_PROFILE,
        profile_id,
        queue_name="maintenance",
        job_id=f"purge-profile-{profile_id}",
        retry=None,
        result_ttl=86400,
    )
    log.info("profile %s deleted; purge queued", profile_id)
