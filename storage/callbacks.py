"""Run callbacks: which runs owe the program engine their summary, and what became of it.

A run created with a `callback_url` enters runs:callbacks_due when it is done (`finish` in
storage/lua/_lib.lua; a run of no contacts at creation, storage/runs.py), scored by when it is
due. Attempts are taken, begun and settled by storage/lua/callback.lua, which keeps a success
recorded once: a delivered run leaves the set, and its hash says so, so it is never posted
again. Recorded in the run's hash (keys.run): callback_state (absent while the first attempt is
due, then retrying, delivered or failed), callback_attempts, callback_attempted_at,
callback_delivered_at or callback_failed_at, callback_error (the last failure, no secret in it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from redis import Redis

from storage import keys, scripts
from storage.redis_types import scanned_map, scored, text_map, texts_or_none

Settled = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True)
class Attempt:
    """What `begin` found: `status` "go" (post now, as attempt `number`, fenced by `claim`), or
    why not: "delivered" / "failed" (settled already), "stale" (another attempt has it), "gone"
    (the run expired)."""

    status: str
    number: int = 0
    claim: int = 0


@dataclass(frozen=True)
class CallbackRun:
    """A done run as its summary tells it."""

    run_id: str
    program_id: str
    node_id: str
    profile_id: str
    url: str
    total: int
    counts: dict[str, int]  # sent, warning, failed
    reasons: dict[str, dict[str, int]]  # warning / failed -> reason -> contacts
    created_at_ms: int
    done_at_ms: int


@dataclass(frozen=True)
class CallbackState:
    """The run hash's callback fields (for the API and tests)."""

    state: str  # "" (first attempt due or running), retrying, delivered, failed
    attempts: int
    delivered_at_ms: int | None
    error: str
    due_at_ms: int | None  # its score in runs:callbacks_due, while it has one


class Callbacks:
    """Take due callbacks, fence their attempts and record how each ended."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = scripts.register(redis, "callback")

    def take_due(self, now_ms: int, lease_ms: int, limit: int = 500) -> tuple[list[str], int]:
        """Runs whose callback is due, each claimed for `lease_ms` (taken again after it unless
        begun): (run ids, their claim, which the attempt hands to `begin`)."""
        taken: list[str] = self._script(
            keys=[keys.callbacks_due()], args=["take", now_ms, lease_ms, limit]
        )
        return taken, now_ms + lease_ms

    def begin(self, run_id: str, claim: int, now_ms: int, lease_ms: int) -> Attempt:
        """Start an attempt taken with `claim`: counted, and its lease renewed under a new claim
        (a worker killed while posting leaves the run to be taken again after `lease_ms`)."""
        status, number, fence = self._script(
            keys=[keys.run(run_id), keys.callbacks_due()],
            args=["begin", run_id, claim, now_ms, lease_ms],
        )
        return Attempt(str(status), int(number), int(fence))

    def delivered(self, run_id: str, claim: int, now_ms: int) -> bool:
        """The engine accepted the summary: recorded once (False if it already was)."""
        return self._settle(run_id, claim, "delivered", now_ms)

    def retry(self, run_id: str, claim: int, now_ms: int, next_ms: int, error: str) -> bool:
        """The attempt failed: due again at `next_ms` (False if another attempt has the run)."""
        return self._settle(run_id, claim, "retry", now_ms, next_ms, error)

    def give_up(self, run_id: str, claim: int, now_ms: int, error: str) -> bool:
        """The attempt failed and no other will be made."""
        return self._settle(run_id, claim, "failed", now_ms, 0, error)

    def _settle(
        self,
        run_id: str,
        claim: int,
        outcome: Settled,
        now_ms: int,
        next_ms: int = 0,
        error: str = "",
    ) -> bool:
        return bool(
            self._script(
                keys=[keys.run(run_id), keys.callbacks_due()],
                args=["settle", run_id, claim, outcome, now_ms, next_ms, error[:500]],
            )
        )

    def run(self, run_id: str) -> CallbackRun | None:
        """The run's summary: counts from its hash, failure reasons counted there too, warning
        reasons counted over its outcomes (a run holds at most 10 000)."""
        data = text_map(self.redis.hgetall(keys.run(run_id)))
        if not data or not data.get("callback_url"):
            return None
        counts = {k: int(data.get(k, 0)) for k in ("sent", "warning", "failed")}
        failed = {
            name.removeprefix("failed:"): int(value)
            for name, value in data.items()
            if name.startswith("failed:")
        }
        warned = self._warning_reasons(run_id) if counts["warning"] else {}
        return CallbackRun(
            run_id=run_id,
            program_id=data["program_id"],
            node_id=data["node_id"],
            profile_id=data["profile_id"],
            url=data["callback_url"],
            total=int(data["total"]),
            counts=counts,
            reasons={"warning": warned, "failed": failed},
            created_at_ms=int(data["created_at"]),
            done_at_ms=int(data.get("done_at") or data["created_at"]),
        )

    def _warning_reasons(self, run_id: str) -> dict[str, int]:
        """Warning outcomes by reason (HSCAN may repeat a contact: each is counted once)."""
        seen: dict[str, str] = {}
        cursor = 0
        while True:
            cursor, chunk = scanned_map(
                self.redis.hscan(keys.run_outcomes(run_id), cursor, count=1000)
            )
            seen.update(chunk)
            if cursor == 0:
                break
        reasons: dict[str, int] = {}
        for raw in seen.values():
            outcome = json.loads(raw)
            if outcome.get("s") == "warning":
                reason = str(outcome.get("r") or "")
                reasons[reason] = reasons.get(reason, 0) + 1
        return reasons

    def state(self, run_id: str) -> CallbackState:
        state, attempts, delivered, error = texts_or_none(
            self.redis.hmget(
                keys.run(run_id),
                ["callback_state", "callback_attempts", "callback_delivered_at", "callback_error"],
            )
        )
        score = self.redis.zscore(keys.callbacks_due(), run_id)
        return CallbackState(
            state=state or "",
            attempts=int(attempts or 0),
            delivered_at_ms=int(delivered) if delivered else None,
            error=error or "",
            due_at_ms=None if score is None else int(score),
        )

    def due(self) -> list[tuple[str, int]]:
        """Every run still owing its callback, with when it is due, soonest first."""
        return [
            (run_id, int(score))
            for run_id, score in scored(
                self.redis.zrange(keys.callbacks_due(), 0, -1, withscores=True)
            )
        ]
