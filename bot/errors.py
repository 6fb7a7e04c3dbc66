"""The project's error types and the JSON error shape of the API.

Every API error answers `{"error": {"code", "message", "details"}}` (DESIGN.md §9); codes and
user-facing messages are defined where the error is raised, once.
"""
from __future__ import annotations

from typing import Any


class BotError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(BotError):
    """Settings are missing or malformed; `problems` has one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


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


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident!r} does not exist")


def invalid(details: dict[str, Any], message: str = "The request is not valid") -> ApiError:
    return ApiError(422, "validation_failed", message, details)
