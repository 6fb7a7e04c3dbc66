"""People who signed in with Facebook, their Facebook logins in progress, data deletions.

Keys: user:{fb_user_id} (name, Pages with their tasks as Facebook last listed them and when,
the Pages they lost a managing role on, their Facebook login token encrypted: it re-checks
those roles), login:{nonce} (the Pages and encrypted Page tokens of one Facebook login, for 15
minutes, until a Page is chosen), deletion:{code} (the outcome of a data deletion request,
shown at its status URL).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from redis import Redis
from redis.exceptions import WatchError

from storage import keys
from storage.profiles import Cipher
from storage.redis_types import field_map, text, text_map

LOGIN_TTL_S = 15 * 60
DELETION_TTL_S = 90 * 86400


class UserPage(TypedDict):
    """A Page of a signed-in user, with their tasks on it."""

    id: str
    name: str
    tasks: list[str]


class LostPage(TypedDict):
    """A Page on which the user had a managing role and Facebook now gives them `role`."""

    id: str
    name: str
    role: str  # "none" when Facebook no longer lists the Page for them


class User(TypedDict):
    """A Facebook user who signed in (`Users.get`)."""

    id: str
    name: str
    pages: list[UserPage]
    lost: list[LostPage]
    checked_ms: int  # when Facebook last listed their Pages (0: never, or before it was kept)
    failed_ms: int  # when asking Facebook again last failed, since then (0: it has not)


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

    def save(
        self,
        fb_user_id: str,
        name: str,
        pages: Iterable[Mapping[str, Any]],
        *,
        lost: Iterable[LostPage] = (),
        login_token: str | None = None,
        now_ms: int | None = None,
    ) -> User:
        """Remember who they are and which Pages they have which tasks on, as Facebook just
        said; with `login_token`, the token to ask again with (encrypted; kept when None)."""
        user: User = {
            "id": fb_user_id,
            "name": name,
            "pages": [
                {"id": p["id"], "name": p.get("name", ""), "tasks": list(p.get("tasks", []))}
                for p in pages
            ],
            "lost": list(lost),
            "checked_ms": int(now_ms if now_ms is not None else time.time() * 1000),
            "failed_ms": 0,
        }
        fields: dict[str, str | int] = {
            "id": fb_user_id,
            "name": name,
            "pages": json.dumps(user["pages"]),
            "lost": json.dumps(user["lost"]),
            "checked_ms": user["checked_ms"],
            "failed_ms": 0,
        }
        if login_token:
            fields["login_token"] = self.cipher.encrypt(login_token)
        self.redis.hset(keys.user(fb_user_id), mapping=field_map(fields))
        return user

    def get(self, fb_user_id: str) -> User | None:
        data = text_map(self.redis.hgetall(keys.user(fb_user_id)))
        if "id" not in data:
            return None
        return {
            "id": data["id"],
            "name": data.get("name", ""),
            "pages": json.loads(data.get("pages", "[]")),
            "lost": json.loads(data.get("lost", "[]")),
            "checked_ms": int(data.get("checked_ms", 0)),
            "failed_ms": int(data.get("failed_ms", 0)),
        }

    def login_token(self, fb_user_id: str) -> str | None:
        """Their Facebook login token, decrypted (never log or show it); None if not kept."""
        stored = text(self.redis.hget(keys.user(fb_user_id), "login_token"))
        return self.cipher.decrypt(stored) if stored else None

    def rotate_tokens(self) -> int:
        """Re-encrypt every kept login token with the newest key (bot/rotate_tokens.py)."""
        rotated = 0
        for key in self.redis.scan_iter(match=keys.user("*"), count=500):
            stored = text(self.redis.hget(key, "login_token"))
            if stored:
                self.redis.hset(key, "login_token", self.cipher.rotate(stored))
                rotated += 1
        return rotated

    def recheck_failed(self, fb_user_id: str, now_ms: int | None = None) -> None:
        """Note that Facebook could not be asked about their Pages just now."""
        key, at = keys.user(fb_user_id), int(now_ms if now_ms is not None else time.time() * 1000)
        with self.redis.pipeline() as pipe:
            try:  # only on a record still there: a forgotten user must not come back as a stub
                pipe.watch(key)  # type: ignore[no-untyped-call]  # unannotated in redis-py
                if pipe.exists(key):
                    pipe.multi()
                    pipe.hset(key, "failed_ms", at)
                    pipe.execute()
            except WatchError:
                pass  # saved or forgotten meanwhile: that newer state stands

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
