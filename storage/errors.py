"""Errors the storage layer raises for its callers to turn into answers."""

from __future__ import annotations


class BotError(Exception):
    """Base of every error this project raises on purpose (defined here, the lowest layer, so
    that storage's errors share it; bot.errors has the rest)."""


class StorageError(BotError):
    """Base of storage errors."""


class PageTaken(StorageError):
    """The Facebook Page already belongs to another profile."""

    def __init__(self, page_id: str, owner_id: str):
        super().__init__(f"page {page_id} already belongs to profile {owner_id}")
        self.page_id = page_id
        self.owner_id = owner_id


class ProfileUnavailable(StorageError):
    """A node names a profile that is missing or disabled."""

    def __init__(self, profile_id: str, why: str):
        super().__init__(f"profile {profile_id} is {why}")
        self.profile_id = profile_id
        self.why = why


class ProfileInUse(StorageError):
    """The profile is used by active programs: [(program id, name)]."""

    def __init__(self, programs: list[tuple[str, str]]):
        super().__init__(
            "profile used by active programs: " + ", ".join(name for _, name in programs)
        )
        self.programs = programs


class SendingPaused(StorageError):
    """The profile's sending is paused (its breaker), or a probe send is testing whether it may
    resume (`probing`): the contact was not claimed."""

    def __init__(self, run_id: str, contact: str, *, probing: bool = False):
        state = "being probed" if probing else "paused"
        super().__init__(f"sending {state}: run {run_id} contact {contact} not claimed")
        self.probing = probing
