"""Messenger profiles: one Facebook Page each, with its own FBOPTIN_XXX field.

Keys: profile:{pid}, page:{page_id}, profiles, seq:profile (see storage/keys.py).
The Page token is stored only encrypted; `page_token` is the one place that decrypts it.
"""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass
from typing import Protocol

from redis import Redis

from storage import keys, scripts
from storage.errors import PageTaken, ProfileInUse, StorageError
from storage.redis_types import members, scanned_map, text, text_map, text_set, texts

STATUSES = ("enabled", "disabled")
DAY_KINDS = ("sent", "delivered", "read", "warning", "failed")
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
    connected_by: str = ""  # app-scoped id of the Facebook user whose login gave the token

    @classmethod
    def from_redis(cls, data: dict[str, str]) -> Profile:
        checked = data.get("health_checked_at")
        return cls(
            id=data["id"],
            name=data["name"],
            page_id=data["page_id"],
            page_name=data.get("page_name", ""),
            status=data["status"],
            optin_field=keys.optin_field(data["id"]),
            health=data.get("health", "ok"),
            health_reason=data.get("health_reason", ""),
            health_checked_at=int(checked) if checked else None,
            created_at=int(data["created_at"]),
            connected_by=data.get("connected_by", ""),
        )

    @property
    def enabled(self) -> bool:
        return self.status == "enabled"


class Cipher(Protocol):
    """Encrypts Page tokens at rest (bot.crypto.TokenCipher)."""

    def encrypt(self, token: str) -> str: ...
    def decrypt(self, stored: str) -> str: ...
    def rotate(self, stored: str) -> str: ...  # the same token, encrypted with the newest key


class Profiles:
    """Create, read and list profiles."""

    def __init__(self, redis: Redis, cipher: Cipher) -> None:
        self.redis = redis
        self.cipher = cipher
        self._create = scripts.register(redis, "create_profile")
        self._status = scripts.register(redis, "profile_status")

    def create(
        self,
        *,
        name: str,
        page_id: str,
        page_name: str,
        page_token: str,
        status: str = "enabled",
        connected_by: str = "",
        now: float | None = None,
    ) -> Profile:
        """Store a new profile; raise PageTaken when the Page already has one."""
        created_at = int(now if now is not None else time.time())
        fields = [
            "name",
            name,
            "page_id",
            page_id,
            "page_name",
            page_name,
            "status",
            status,
            "health",
            "ok",
            "token",
            self.cipher.encrypt(page_token),
            "health_checked_at",
            str(created_at),
            "connected_by",
            connected_by,
        ]
        reply: list[str] = self._create(
            keys=[keys.page_owner(page_id), keys.profile_seq(), keys.profiles()],
            args=[keys.profile("%s"), created_at, *fields],
        )
        outcome, ident = reply
        if outcome == "taken":
            raise PageTaken(page_id, ident)
        profile = self.get(ident)
        if profile is None:  # deleted (or created as "deleting") before we read it back
            raise StorageError(f"profile {ident} was deleted as it was created")
        return profile

    def get(self, pid: str, *, deleting: bool = False) -> Profile | None:
        """The profile, or None (also while it is being deleted, unless `deleting`)."""
        data = text_map(self.redis.hgetall(keys.profile(pid)))
        if not data or (data.get("status") == "deleting" and not deleting):
            return None
        return Profile.from_redis(data)

    def list(self) -> list[Profile]:
        ids = members(self.redis.zrange(keys.profiles(), 0, -1))
        pipe = self.redis.pipeline(transaction=False)
        for pid in ids:
            pipe.hgetall(keys.profile(pid))
        return [Profile.from_redis(data) for data in pipe.execute() if data]

    def owner_of_page(self, page_id: str) -> str | None:
        return text(self.redis.get(keys.page_owner(page_id)))

    def page_token(self, pid: str) -> str | None:
        """The decrypted Page access token (never log or show it)."""
        token = text(self.redis.hget(keys.profile(pid), "token"))
        return self.cipher.decrypt(token) if token else None

    def flag_unhealthy(self, pid: str, health: str, reason: str, now: float | None = None) -> bool:
        """Move a healthy profile to `health`; False if it was already flagged (it flips once)."""
        if health not in HEALTH:
            raise ValueError(f"unknown health {health!r}")
        script = (
            "if redis.call('HGET', KEYS[1], 'health') ~= 'ok' then return 0 end "
            "redis.call('HSET', KEYS[1], 'health', ARGV[1], 'health_reason', ARGV[2], "
            "'health_checked_at', ARGV[3]) return 1"
        )
        return bool(
            self.redis.eval(
                script,
                1,
                keys.profile(pid),
                health,
                reason[:500],
                int(now if now is not None else time.time()),
            )
        )

    def touch_checked(self, pid: str, now: float | None = None) -> None:
        self.redis.hset(
            keys.profile(pid), "health_checked_at", int(now if now is not None else time.time())
        )

    def set_health(self, pid: str, health: str, reason: str = "", now: float | None = None) -> None:
        if health not in HEALTH:
            raise ValueError(f"unknown health {health!r}")
        self.redis.hset(
            keys.profile(pid),
            mapping={
                "health": health,
                "health_reason": reason,
                "health_checked_at": int(now if now is not None else time.time()),
            },
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def rename(self, pid: str, name: str) -> None:
        self.redis.hset(keys.profile(pid), "name", name)

    def set_status(self, pid: str, status: str) -> bool:
        """Enable or disable; ProfileInUse when disabling one that active programs use.
        False if the profile does not exist."""
        return self._change_status(pid, status)

    def begin_delete(self, pid: str) -> bool:
        """Hide the profile and free its Page at once (ProfileInUse if active programs use it);
        `purge` removes the rest. False if it does not exist."""
        return self._change_status(pid, "deleting")

    def _change_status(self, pid: str, status: str) -> bool:
        result: list[str] = self._status(args=[pid, status])
        if result[0] == "in_use":  # then (program id, name) pairs
            raise ProfileInUse(list(zip(result[1::2], result[2::2], strict=True)))
        return result[0] == "ok"

    def replace_token(
        self, pid: str, page_token: str, connected_by: str, now: float | None = None
    ) -> None:
        """A new token after reauthorisation: the profile is healthy again."""
        self.redis.hset(
            keys.profile(pid),
            mapping={
                "token": self.cipher.encrypt(page_token),
                "connected_by": connected_by,
                "health": "ok",
                "health_reason": "",
                "health_checked_at": int(now if now is not None else time.time()),
            },
        )

    def forget_connector(self, pid: str) -> None:
        self.redis.hset(keys.profile(pid), "connected_by", "")

    def connected_by_user(self, fb_user_id: str) -> builtins.list[Profile]:
        return [p for p in self.list() if p.connected_by == fb_user_id]

    def rotate_tokens(self) -> int:
        """Re-encrypt every stored token with the newest key (after adding a key). Returns count."""
        rotated = 0
        for pid in members(self.redis.zrange(keys.profiles(), 0, -1)):
            stored = text(self.redis.hget(keys.profile(pid), "token"))
            if stored:
                self.redis.hset(keys.profile(pid), "token", self.cipher.rotate(stored))
                rotated += 1
        return rotated

    def purge(self, pid: str, chunk: int = 1000) -> None:
        """Remove everything a deleted profile left: statistics, runs, opt-in values, token."""
        data = text_map(self.redis.hgetall(keys.profile(pid)))
        if data.get("status") != "deleting":
            return
        field = keys.optin_field(pid)
        cursor = 0
        while True:  # forget the opt-in values this profile gave contacts, in chunks
            cursor, items = scanned_map(self.redis.hscan(keys.recipients(pid), cursor, count=chunk))
            pipe = self.redis.pipeline(transaction=False)
            for contact in set(items.values()):
                pipe.hdel(keys.contact(contact), field)
            pipe.execute()
            if cursor == 0:
                break
        doomed: list[str] = []
        for state in ("opted_in", "opted_out"):  # each contact's consent ledger
            for contact in self.redis.sscan_iter(keys.consent_state(pid, state), count=chunk):
                doomed.append(keys.consent_log(pid, text(contact) or ""))
        days = members(self.redis.zrange(keys.stat_days(pid), 0, -1))
        for day in days:
            counters = texts(self.redis.hkeys(keys.day_counters(pid, day)))
            kinds = set(DAY_KINDS) | {
                name for name in counters if ":" in name
            }  # per-reason lists too
            doomed += [keys.day_counters(pid, day)] + [
                keys.day_rows(pid, day, kind) for kind in kinds
            ]
        run_index, old_run_index = keys.profile_runs(pid), keys.profile_runs_v1(pid)
        run_ids = set(members(self.redis.zrange(run_index, 0, -1)))
        for run_id in run_ids | text_set(self.redis.smembers(old_run_index)):
            doomed += [
                keys.run(run_id),
                keys.run_contacts(run_id),
                keys.run_outcomes(run_id),
                keys.run_batches(run_id),
            ]
        page_id = data.get("page_id", "")
        doomed += keys.profile_scoped(pid) + [
            run_index,
            old_run_index,
            keys.rate(page_id),
            keys.rate_rest(page_id),
        ]
        for start in range(0, len(doomed), chunk):
            self.redis.unlink(
                *doomed[start : start + chunk]
            )  # UNLINK: big lists are freed in the background
        self.redis.unlink(keys.profile(pid))
