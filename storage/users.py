"""People who signed in with Facebook, their Facebook logins in progress, data deletions.

Keys: user:{fb_user_id} (name, Pages with their tasks — never a token), login:{nonce} (the
Pages and encrypted Page tokens of one Facebook login, for 15 minutes, until a Page is
chosen), deletion:{code} (the outcome of a data deletion request, shown at its status URL).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from redis import Redis

from storage import keys
from storage.profiles import Cipher
from storage.redis_types import text_map

LOGIN_TTL_S = 15 * 60
DELETION_TTL_S = 90 * 86400


class UserPage(TypedDict):
    """A Page of a signed-in user, with their tasks on it."""

    id: str
    name: str
    tasks: list[str]


class User(TypedDict):
    """A Facebook user who signed in (`Users.get`)."""

    id: str
    name: str
    pages: list[UserPage]


class LoginPage(TypedDict):
    """A Page of a pending Facebook login, as Facebook listed it (token left out)."""

    id: str
    name: str | None
    tasks: list[str] | None


class Users:
    """Facebook users, their pending logins and their deletion requests."""

    def __init__(self, redis: Redis, cipher: Cipher) -> None:
        self.redis = redis
        self.cipher = cipher

    def save(self, fb_user_id: str, name: str, pages: Iterable[Mapping[str, Any]]) -> None:
        """Remember who they are and which Pages they have which tasks on (no tokens)."""
        slim = [
            {"id": p["id"], "name": p.get("name", ""), "tasks": list(p.get("tasks", []))}
            for p in pages
        ]
        self.redis.hset(
            keys.user(fb_user_id),
            mapping={
                "id": fb_user_id,
                "name": name,
                "pages": json.dumps(slim),
                "updated_at": int(time.time()),
            },
        )

    def get(self, fb_user_id: str) -> User | None:
        data = text_map(self.redis.hgetall(keys.user(fb_user_id)))
        if not data:
            return None
        return {
            "id": data["id"],
            "name": data.get("name", ""),
            "pages": json.loads(data.get("pages", "[]")),
        }

    def forget(self, fb_user_id: str) -> bool:
        return bool(self.redis.delete(keys.user(fb_user_id)))

    def start_login(self, nonce: str, fb_user_id: str, pages: Iterable[Mapping[str, Any]]) -> None:
        """Keep a login's Pages with their tokens, encrypted, until the user picks one."""
        sealed = [
            {
                **{k: p.get(k) for k in ("id", "name", "tasks")},
                "token": self.cipher.encrypt(p["access_token"]),
            }
            for p in pages
            if p.get("access_token")
        ]
        self.redis.set(
            keys.login(nonce), json.dumps({"user": fb_user_id, "pages": sealed}), ex=LOGIN_TTL_S
        )

    def login_pages(self, nonce: str) -> tuple[str, list[LoginPage]] | None:
        """(user id, Pages without tokens) of a login still pending."""
        raw = self.redis.get(keys.login(nonce)) if nonce else None
        if raw is None:
            return None
        data = json.loads(raw)
        pages: list[LoginPage] = [
            {"id": p["id"], "name": p["name"], "tasks": p["tasks"]} for p in data["pages"]
        ]
        return data["user"], pages

    def login_page_token(self, nonce: str, page_id: str) -> str | None:
        """The decrypted token of one Page of a pending login (never log or show it)."""
        raw = self.redis.get(keys.login(nonce)) if nonce else None
        for page in json.loads(raw)["pages"] if raw else []:
            if page["id"] == page_id:
                return self.cipher.decrypt(page["token"])
        return None

    def end_login(self, nonce: str) -> None:
        self.redis.delete(keys.login(nonce))

    def record_deletion(self, code: str, result: dict[str, Any]) -> None:
        self.redis.set(keys.deletion(code), json.dumps(result), ex=DELETION_TTL_S)

    def deletion(self, code: str) -> dict[str, Any] | None:
        """The deletion's result as recorded (JSON), None once it has expired."""
        raw = self.redis.get(keys.deletion(code))
        result: dict[str, Any] | None = json.loads(raw) if raw else None
        return result
