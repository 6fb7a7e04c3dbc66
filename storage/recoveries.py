"""Recoveries: sending again what an outage failed (the rules are bot/recovery.py's).

A recovery is a record (recovery:{id}) and one ordinary run per original run it recovers
from, whose contacts are the original's recoverable failures; the original run remembers which
run sent each contact again (run:{rid}:recovered), and the day each first failed counts it as
`recovered`. Everything is idempotent, so preparing the same recovery again completes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from redis import Redis

from storage import keys, scripts
from storage.redis_types import field_map, scanned_map, text_map, texts_or_none
from storage.runs import Outcome
from storage.stats import day_of, day_score


@dataclass(frozen=True)
class Recovery:
    recovery_id: str
    profile_id: str
    since_ms: int
    until_ms: int
    include_interrupted: bool
    state: str  # preparing, then sending (its runs do the rest)
    created_at_ms: int
    runs: dict[str, str] = field(default_factory=dict)  # recovering run id -> original run id

    @classmethod
    def from_redis(cls, data: dict[str, str]) -> Recovery:
        return cls(
            recovery_id=data["recovery_id"],
            profile_id=data["profile_id"],
            since_ms=int(data["since"]),
            until_ms=int(data["until"]),
            include_interrupted=data["include_interrupted"] == "1",
            state=data["state"],
            created_at_ms=int(data["created_at"]),
            runs=json.loads(data.get("runs") or "{}"),
        )


class Recoveries:
    def __init__(self, redis: Redis, tz: ZoneInfo, retention_days: int = 30) -> None:
        self.redis = redis
        self.tz = tz
        self.retention_s = retention_days * 86400
        self._mark = scripts.register(redis, "mark_recovered")

    def get(self, recovery_id: str) -> Recovery | None:
        data = text_map(self.redis.hgetall(keys.recovery(recovery_id)))
        return Recovery.from_redis(data) if data else None

    def begin(
        self, recovery_id: str, profile_id: str, since_ms: int, until_ms: int, interrupted: bool
    ) -> tuple[Recovery, bool]:
        """Create the record unless it exists: (recovery, created)."""
        key = keys.recovery(recovery_id)
        created = self.redis.hsetnx(key, "recovery_id", recovery_id)
        if created:
            now_ms = int(time.time() * 1000)
            fields: dict[str, str | int] = {
                "profile_id": profile_id,
                "since": since_ms,
                "until": until_ms,
                "include_interrupted": int(interrupted),
                "state": "preparing",
                "created_at": now_ms,
            }
            pipe = self.redis.pipeline()
            pipe.hset(key, mapping=field_map(fields))
            pipe.expire(key, self.retention_s)
            pipe.execute()
        recovery = self.get(recovery_id)
        if recovery is None:  # expired between the two calls: practically never
            raise LookupError(f"recovery {recovery_id} vanished")
        return recovery, bool(created)

    def prepared(self, recovery_id: str, runs: dict[str, str]) -> None:
        """Its runs exist and are queued: the recovery now sends."""
        self.redis.hset(
            keys.recovery(recovery_id), mapping={"runs": json.dumps(runs), "state": "sending"}
        )

    def runs_between(self, profile_id: str, since_ms: int, until_ms: int) -> list[str]:
        """The profile's runs created in the window, oldest first."""
        found = self.redis.zrangebyscore(keys.profile_runs(profile_id), since_ms, until_ms)
        return [str(r) for r in found]

    def failed_contacts(
        self, run_id: str, reasons: frozenset[str]
    ) -> Iterator[tuple[str, Outcome]]:
        """The run's contacts that failed for one of `reasons` and were not yet sent again."""
        cursor = 0
        while True:
            cursor, batch = scanned_map(
                self.redis.hscan(keys.run_outcomes(run_id), cursor, count=1000)
            )
            picked = [
                (cid, outcome)
                for cid, raw in batch.items()
                if (outcome := Outcome.from_redis(raw))
                and outcome.state == "failed"
                and outcome.reason in reasons
            ]
            if picked:
                done = texts_or_none(
                    self.redis.hmget(keys.run_recovered(run_id), [cid for cid, _ in picked])
                )
                yield from (pair for pair, by in zip(picked, done, strict=True) if by is None)
            if cursor == 0:
                return

    def mark(
        self, profile_id: str, run_id: str, by_run: str, failures: list[tuple[str, Outcome]]
    ) -> int:
        """`by_run` sends these contacts of `run_id` again; returns how many were new."""
        args: list[str | int] = [profile_id, by_run, self.retention_s]
        for cid, outcome in failures:
            day = day_of(outcome.at_ms, self.tz)
            args += [cid, day, day_score(day)]
        return int(self._mark(keys=[keys.run_recovered(run_id)], args=args))

    def recovered_by(self, run_id: str, contacts: list[str]) -> dict[str, str]:
        """Contacts of the run that a recovery sent again, each with the run that did."""
        if not contacts:
            return {}
        found = texts_or_none(self.redis.hmget(keys.run_recovered(run_id), contacts))
        return {cid: by for cid, by in zip(contacts, found, strict=True) if by}
