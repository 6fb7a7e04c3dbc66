"""The project's error types and the JSON error shape of the API.

Every API error answers `{"error": {"code", "message", "details"}}` (DESIGN.md §9); codes and
user-facing messages are defined where the error is raised, once.
"""

from __future__ import annotations

from typing import Any

from storage.errors import BotError

__all__ = [
    "BotError",
    "ConfigError",
    "DomainError",
    "NotFound",
    "Malformed",
    "Invalid",
    "Conflict",
    "Forbidden",
    "Expired",
    "Unavailable",
    "ApiError",
    "not_found",
    "invalid",
]


class ConfigError(BotError):
    """Settings are missing or malformed; `problems` has one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


class DomainError(BotError):
    """A request the domain refuses: a code, a plain message to show as it is, and details.
    The HTTP layer gives each kind its status (bot/handlers.py); the domain knows none."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or {}


class NotFound(DomainError):
    """What the request names does not exist."""


class Malformed(DomainError):
    """The request is not the shape asked for at all (not a JSON object)."""


class Invalid(DomainError):
    """A field of the request breaks a rule; `details` names each."""


class Conflict(DomainError):
    """The request is well formed but the state of things refuses it."""


class Forbidden(DomainError):
    """The person asking lacks the right (a Page role too low to connect it)."""


class Expired(DomainError):
    """What the request relies on has lapsed (a Facebook login left pending too long)."""


class Unavailable(DomainError):
    """A service the request needs (Facebook) could not be reached; trying again may work."""


class ApiError(BotError):
    """An error answered to an API client with a status, a code and a plain message."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def not_found(what: str, ident: str) -> NotFound:
    return NotFound("not_found", f"{what} {ident!r} does not exist")


def invalid(details: dict[str, Any], message: str = "The request is not valid") -> Invalid:
    return Invalid("validation_failed", message, details)
