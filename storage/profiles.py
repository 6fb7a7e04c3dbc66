"""Messenger profiles: one Facebook Page each, with its own FBOPTIN_XXX field.

Keys: profile:{pid}, page:{page_id}, profiles, seq:profile (see storage/keys.py).
The Page token is stored only encrypted; `page_token` is the one place that decrypts it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from storage import keys, scripts
from storage.errors import PageTaken

STATUSES = ("enabled", "disabled")
HEALTH = ("ok", "needs_reauth", "disconnected", "blocked")


@dataclass(frozen=True)
class Profile:
    id: str
    name: str
    page_id: str
    page_name: str
    status: str
    optin_field: str
    health: str
    health_reason: str
    health_checked_at: int | None
    created_at: int

    @classmethod
    def from_redis(cls, data: dict[str, str]) -> "Profile":
        checked = data.get("health_checked_at")
        return cls(
            id=data["id"], name=data["name"], page_id=data["page_id"],
            page_name=data.get("page_name", ""), status=data["status"],
            optin_field=keys.optin_field(data["id"]), health=data.get("health", "ok"),
            health_reason=data.get("health_reason", ""),
            health_checked_at=int(checked) if checked else None,
            created_at=int(data["created_at"]),
        )

    @property
    def enabled(self) -> bool:
        return self.status == "enabled"


class Profiles:
    """Create, read and list profiles."""

    def __init__(self, redis, cipher):
        self.redis = redis
        self.cipher = cipher
        self._create = scripts.register(redis, "create_profile")

    def create(self, *, name: str, page_id: str, page_name: str, page_token: str,
               status: str = "enabled", now: float | None = None) -> Profile:
        """Store a new profile; raise PageTaken when the Page already has one."""
        created_at = int(now if now is not None else time.time())
        fields = ["name", name, "page_id", page_id, "page_name", page_name, "status", status,
                  "health", "ok", "token", self.cipher.encrypt(page_token),
                  "health_checked_at", str(created_at)]
        outcome, ident = self._create(
            keys=[keys.page_owner(page_id), keys.profile_seq(), keys.profiles()],
            args=[keys.profile("%s"), created_at, *fields])
        if outcome == "taken":
            raise PageTaken(page_id, ident)
        return self.get(ident)

    def get(self, pid: str) -> Profile | None:
        data = self.redis.hgetall(keys.profile(pid))
        return Profile.from_redis(data) if data else None

    def list(self) -> list[Profile]:
        ids = self.redis.zrange(keys.profiles(), 0, -1)
        pipe = self.redis.pipeline(transaction=False)
        for pid in ids:
            pipe.hgetall(keys.profile(pid))
        return [Profile.from_redis(data) for data in pipe.execute() if data]

    def owner_of_page(self, page_id: str) -> str | None:
        return self.redis.get(keys.page_owner(page_id))

    def page_token(self, pid: str) -> str | None:
        """The decrypted Page access token (never log or show it)."""
        token = self.redis.hget(keys.profile(pid), "token")
        return self.cipher.decrypt(token) if token else None

    def flag_unhealthy(self, pid: str, health: str, reason: str, now: float | None = None) -> bool:
        """Move a healthy profile to `health`; False if it was already flagged (so it flips once)."""
        if health not in HEALTH:
            raise ValueError(f"unknown health {health!r}")
        script = ("if redis.call('HGET', KEYS[1], 'health') ~= 'ok' then return 0 end "
                  "redis.call('HSET', KEYS[1], 'health', ARGV[1], 'health_reason', ARGV[2], "
                  "'health_checked_at', ARGV[3]) return 1")
        return bool(self.redis.eval(script, 1, keys.profile(pid), health, reason[:500],
                                    int(now if now is not None else time.time())))

    def set_health(self, pid: str, health: str, reason: str = "", now: float | None = None) -> None:
        if health not in HEALTH:
            raise ValueError(f"unknown health {health!r}")
        self.redis.hset(keys.profile(pid), mapping={
            "health": health, "health_reason": reason,
            "health_checked_at": int(now if now is not None else time.time())})
