"""Errors the storage layer raises for its callers to turn into answers."""
from __future__ import annotations

from bot.errors import BotError


class StorageError(BotError):
    """Base of storage errors."""


class PageTaken(StorageError):
    """The Facebook Page already belongs to another profile."""

    def __init__(self, page_id: str, owner_id: str):
        super().__init__(f"page {page_id} already belongs to profile {owner_id}")
        self.page_id = page_id
        self.owner_id = owner_id
