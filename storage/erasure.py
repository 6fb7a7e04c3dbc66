"""Erasing a person (DELETE /contacts/<id>, Facebook's data deletion): the storage steps.

bot/erasure.py orders them. Counters keep their numbers (they hold no personal data); every
row, outcome and record that names the contact, its PSIDs or user_refs is removed or made
anonymous, and so are its events in webhook writes set aside as failed. What stays: the count
of erasures per cause, and for ERASED_REMEMBERED_DAYS a keyed fingerprint of the contact id so
that an older opt-in replayed by Facebook does not recreate it (apply_events.lua).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from redis import Redis
from redis.client import Pipeline

from storage import keys, scripts
from storage.consent import OPTED_IN, OPTED_OUT
from storage.inbound import INBOX_FAILED_TTL_S, ParkedEvent
from storage.redis_types import members, text, text_map, texts
from storage.runs import Outcome
from storage.transactions import optimistic

# A run's place of an erased contact: "#" is not allowed in contact ids, so it names nobody.
TOMBSTONE = "#erased:"
_ROW_KINDS = ("sent", "warning", "failed")  # lists whose rows name the contact
_PER_REASON = ("warning:", "failed:")  # and the per-reason lists of the last two
_FOREVER_MS = 2**62


class Erasure:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._from_run = scripts.register(redis, "erase_from_run")
        self._rows = scripts.register(redis, "erase_rows")
        self._age = scripts.register(redis, "age_receipts")
        self._forget = scripts.register(redis, "forget_recipient")

    def run_ids(self, pid: str) -> list[str]:
        """Every run of the profile still kept (and those listed before 2026-11-26)."""
        kept = members(self.redis.zrange(keys.profile_runs(pid), 0, -1))
        return sorted(set(kept) | set(texts(list(self.redis.smembers(keys.profile_runs_v1(pid))))))

    def unsettled_runs(self, cid: str, run_ids: list[str]) -> list[str]:
        """Active runs that may still send to the contact (read only; `from_run` re-checks)."""
        active = set(members(self.redis.zrange(keys.runs_active(), 0, -1)))
        return [r for r in run_ids if r in active and self._pending_in(r, cid)]

    def _pending_in(self, run_id: str, cid: str) -> bool:
        if self.redis.lpos(keys.run_contacts(run_id), cid) is None:
            return False
        outcome = Outcome.from_redis(text(self.redis.hget(keys.run_outcomes(run_id), cid)))
        return outcome is None or not outcome.final

    def from_run(self, run_id: str, cid: str) -> int:
        """Places erased from the run; -1 if it may still send to the contact (nothing done)."""
        return int(
            self._from_run(
                keys=[
                    keys.run_contacts(run_id),
                    keys.run_outcomes(run_id),
                    keys.run_recovered(run_id),
                    keys.runs_active(),
                ],
                args=[cid, run_id, TOMBSTONE],
            )
        )

    def rows(self, pid: str, cid: str) -> int:
        """Statistics rows naming the contact, made anonymous, one day at a time."""
        erased = 0
        for day in members(self.redis.zrange(keys.stat_days(pid), 0, -1)):
            counters = texts(self.redis.hkeys(keys.day_counters(pid, day)))
            kinds = [*_ROW_KINDS, *(name for name in counters if name.startswith(_PER_REASON))]
            lists = [keys.day_rows(pid, day, kind) for kind in kinds]
            erased += int(self._rows(keys=lists, args=[cid]))
        return erased

    def recipient(self, pid: str, rcpt: str) -> int:
        """Everything the profile holds under one PSID or user_ref; messages still awaiting a
        receipt count as "no receipt" first, so the day's figures settle."""
        self._age(args=[pid, _FOREVER_MS, rcpt])
        return int(self._forget(args=[pid, rcpt]))

    def unmatched(self, pid: str) -> list[str]:
        return members(self.redis.zrange(keys.unmatched(pid), 0, -1))

    def drop_unmatched(self, pid: str, entries: list[str]) -> int:
        return int(self.redis.zrem(keys.unmatched(pid), *entries)) if entries else 0

    def set_aside_events(self, names: Callable[[ParkedEvent], bool]) -> int:
        """Events that `names` (an event as parked: storage/inbound.py) picks out, removed from
        the parked webhook writes set aside as failed (kept a week for the operator to apply
        again); the rest of each write stays. Returns how many were removed."""
        key = keys.inbox_failed()

        def rewrite(pipe: Pipeline) -> int:  # again if a write is set aside meanwhile
            kept, removed = _without_events(texts(pipe.lrange(key, 0, -1)), names)
            if removed:
                ttl = int(pipe.ttl(key))
                pipe.multi()
                pipe.delete(key)
                if kept:
                    pipe.rpush(key, *kept)
                    pipe.expire(key, ttl if ttl > 0 else INBOX_FAILED_TTL_S)
            return removed

        return optimistic(self.redis, key, rewrite, "the writes set aside")[0]

    def consent(self, pid: str, cid: str) -> int:
        pipe = self.redis.pipeline()
        pipe.delete(keys.consent_log(pid, cid))
        pipe.srem(keys.consent_state(pid, OPTED_IN), cid)
        pipe.srem(keys.consent_state(pid, OPTED_OUT), cid)
        return sum(int(n) for n in pipe.execute())

    def contact(self, cid: str, cause: str, fingerprint: str, now_ms: int) -> int:
        """The contact's own record goes last; the erasure is counted and remembered."""
        pipe = self.redis.pipeline()
        pipe.delete(keys.contact(cid))
        pipe.hincrby(keys.metric("erasures"), cause, 1)
        pipe.zadd(keys.erased(), {fingerprint: now_ms})
        return int(pipe.execute()[0])

    def count(self) -> dict[str, int]:
        return {k: int(v) for k, v in text_map(self.redis.hgetall(keys.metric("erasures"))).items()}

    def forget_erased(self, now_ms: int) -> int:
        """Retention: fingerprints older than ERASED_REMEMBERED_DAYS."""
        before_ms = now_ms - keys.ERASED_REMEMBERED_DAYS * 86_400_000
        return int(self.redis.zremrangebyscore(keys.erased(), "-inf", f"({before_ms}"))


def _without_events(
    writes: list[str], names: Callable[[ParkedEvent], bool]
) -> tuple[list[str | bytes], int]:
    """The writes without the events `names` picks out, and how many those were. A write left
    with no event still counts its webhooks' kinds when applied, so it stays; one that is not
    JSON (no write of ours) stays as it is."""
    kept: list[str | bytes] = []
    removed = 0
    for write in writes:
        try:
            events, kinds = orjson.loads(write)
            left = [event for event in events if not (isinstance(event, dict) and names(event))]
        except (TypeError, ValueError):  # orjson.JSONDecodeError is a ValueError
            kept.append(write)
            continue
        removed += len(events) - len(left)
        kept.append(write if len(left) == len(events) else orjson.dumps([left, kinds]))
    return kept, removed
