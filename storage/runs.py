"""Node runs: the contacts handed to a Messenger node and the one outcome each ends with.

Keys: run:{rid} (meta and counts), run:{rid}:contacts, run:{rid}:outcomes, run:{rid}:batches,
run:{rid}:lease:{n}, runs:active, runs:deadlines. Outcomes move inflight -> unknown -> final
(sent / warning / failed) and never back; `finish` (Lua, storage/lua/_lib.lua) records a final
outcome once, with its run counts and day statistics, so a retried job or a late echo cannot
count anything twice.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict, Unpack
from zoneinfo import ZoneInfo

from redis import Redis
from redis.client import Pipeline

from storage import keys, scripts
from storage.contacts import Contacts
from storage.errors import SendingPaused, StorageError
from storage.messages import expects_receipts
from storage.programs import Node
from storage.ratelimit import PageRateLimiter
from storage.redis_types import field_map, members, text, text_map, texts, texts_or_none
from storage.sending import SendingRules
from storage.stats import day_of, day_score
from storage.transactions import optimistic

FINAL = ("sent", "warning", "failed")
US = "\x1f"
CLAIM_PAUSED, CLAIM_PROBING = -2, -3  # claim.lua: the profile's sending is paused / being probed
# What a sent message went out as, kept short in its record ("k": a letter, then the template's
# name or the tag): "t", "uorder_update", "gACCOUNT_UPDATE".
SENT_AS_KINDS = {"t": "text", "u": "utility_template", "g": "tag"}
_SENT_AS_NAMES = {"utility_template": "template", "tag": "tag"}
_SENT_AS_CODES = {kind: code for code, kind in SENT_AS_KINDS.items()}


class OutcomeDetails(TypedDict, total=False):
    """What `Runs.outcome` takes besides run, contact and state (for `Runs.finish`)."""

    reason: str
    message_id: str
    detail: str
    recipient: str
    at_ms: int | None
    sent_as: str
    called: bool


def sent_as_code(kind: str, name: str = "") -> str:
    """The record's short form of what went out: kind text, utility_template (name) or tag (tag)."""
    return _SENT_AS_CODES[kind] + name


def _learning(rules: SendingRules | None) -> list[str | int]:
    """What the scripts that record outcomes take before them: the breaker's window (0: nothing
    to learn) and the rules, decoded only for a result that needs them (storage/lua/_lib.lua)."""
    return [rules.window_ms, rules.as_json] if rules else [0, "{}"]


@dataclass(frozen=True)
class Outcome:
    state: str  # inflight, unknown, sent, warning, failed
    reason: str = ""
    message_id: str = ""
    at_ms: int = 0
    detail: str = ""
    sent_as_code: str = ""  # see SENT_AS_KINDS; "" if not sent (or recorded before it was kept)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def sent_as(self) -> dict[str, str] | None:
        """{"kind": "text"}, {"kind": "utility_template", "template": name} or
        {"kind": "tag", "tag": tag}."""
        kind = SENT_AS_KINDS.get(self.sent_as_code[:1]) if self.state == "sent" else None
        if kind is None:
            return None
        name = _SENT_AS_NAMES.get(kind)
        return {"kind": kind, name: self.sent_as_code[1:]} if name else {"kind": kind}

    @classmethod
    def from_redis(cls, raw: str | None) -> Outcome | None:
        if raw is None:
            return None
        o = json.loads(raw)
        return cls(
            o["s"],
            o.get("r") or "",
            o.get("m") or "",
            int(o.get("t") or 0),
            o.get("d") or "",
            o.get("k") or "",
        )


@dataclass(frozen=True)
class Unconfirmed:
    """A run's open contacts when all of them are sends whose answer was lost: `count` of them,
    each settled by Facebook's echo (sent) or else, by `settle_by_ms` at the latest, failed
    (interrupted)."""

    count: int
    settle_by_ms: int


@dataclass(frozen=True)
class Run:
    run_id: str
    program_id: str
    node_id: str
    profile_id: str
    node: Node
    total: int
    batch_size: int
    batches: int
    state: str
    created_at_ms: int
    counts: dict[str, int] = field(default_factory=dict)
    callback_url: str = ""  # where the summary goes once the run is done (storage/callbacks.py)

    @property
    def pending(self) -> int:
        return self.total - sum(self.counts.get(k, 0) for k in FINAL)

    @classmethod
    def from_redis(cls, data: dict[str, str]) -> Run:
        return cls(
            run_id=data["run_id"],
            program_id=data["program_id"],
            node_id=data["node_id"],
            profile_id=data["profile_id"],
            node=Node.from_dict(json.loads(data["node"])),
            total=int(data["total"]),
            batch_size=int(data["batch_size"]),
            batches=int(data["batches"]),
            state=data["state"],
            created_at_ms=int(data["created_at"]),
            counts={k: int(data.get(k, 0)) for k in FINAL},
            callback_url=data.get("callback_url", ""),
        )


class Runs:
    """Create runs, claim and settle their contacts, and track batches."""

    def __init__(self, redis: Redis, tz: ZoneInfo, retention_days: int = 30) -> None:
        self.redis = redis
        self.tz = tz
        self.retention_s = retention_days * 86400
        self._finish = scripts.register(redis, "finish")
        self._claim = scripts.DirectScript(redis, "claim")  # one call per send: the lean path
        self._pending_state = scripts.register(redis, "set_pending_state")
        self._expire = scripts.register(redis, "expire_unknown")
        self._lease = scripts.register(redis, "lease")
        self._take_ready = scripts.register(redis, "take_ready")

    # -- creating and reading -------------------------------------------------------------------

    def create(
        self,
        run_id: str,
        program_id: str,
        node: Node,
        contacts: dict[str, dict[str, str]],
        batch_size: int,
        callback_url: str = "",
    ) -> tuple[Run, bool]:
        """Store a run and merge the contacts' fields, unless `run_id` exists: (run, created).
        A run that exists keeps what it was created with (its callback_url too)."""
        meta_key = keys.run(run_id)

        def write(pipe: Pipeline) -> bool:
            if pipe.exists(meta_key):
                return False
            pipe.multi()
            self._write_new(pipe, run_id, program_id, node, contacts, batch_size, callback_url)
            return True

        created, _ = optimistic(self.redis, meta_key, write, f"run {run_id} being created")
        return self._stored(run_id), created

    def _stored(self, run_id: str) -> Run:
        """A run known to exist (it expires only after its retention)."""
        run = self.get(run_id)
        if run is None:
            raise StorageError(f"run {run_id} vanished as it was created")
        return run

    def _write_new(
        self,
        pipe: Pipeline,
        run_id: str,
        program_id: str,
        node: Node,
        contacts: dict[str, dict[str, str]],
        batch_size: int,
        callback_url: str = "",
    ) -> None:
        ids = list(contacts)
        now_ms = int(time.time() * 1000)
        meta: dict[str, str | int] = {
            "run_id": run_id,
            "program_id": program_id,
            "node_id": node.id,
            "profile_id": node.profile_id,
            "node": json.dumps(node.to_dict()),
            "total": len(ids),
            "batch_size": batch_size,
            "batches": -(-len(ids) // batch_size),
            "state": "queued" if ids else "done",
            "created_at": now_ms,
            "sent": 0,
            "warning": 0,
            "failed": 0,
        }
        # A run of no contacts is done at once; `finish` (storage/lua/_lib.lua) makes the others
        # done, and due for their callback, with their last outcome.
        if not ids:
            meta["done_at"] = now_ms
        if callback_url:
            meta["callback_url"] = callback_url
        pipe.hset(keys.run(run_id), mapping=field_map(meta))
        for start in range(0, len(ids), 1000):
            pipe.rpush(keys.run_contacts(run_id), *ids[start : start + 1000])
        Contacts(self.redis).merge_many(contacts, pipeline=pipe)
        # The index forgets runs past retention (their keys have expired) as new ones come.
        run_index = keys.profile_runs(node.profile_id)
        pipe.zadd(run_index, {run_id: now_ms})
        pipe.zremrangebyscore(run_index, "-inf", now_ms - self.retention_s * 1000)
        if ids:
            pipe.zadd(keys.runs_active(), {run_id: now_ms})
        elif callback_url:
            pipe.zadd(keys.callbacks_due(), {run_id: now_ms}, nx=True)
        for key in (
            keys.run(run_id),
            keys.run_contacts(run_id),
            keys.run_outcomes(run_id),
            keys.run_batches(run_id),
        ):
            pipe.expire(key, self.retention_s)

    def get(self, run_id: str) -> Run | None:
        data = text_map(self.redis.hgetall(keys.run(run_id)))
        return Run.from_redis(data) if data else None

    def batch_contacts(self, run_id: str, batch: int, batch_size: int) -> list[str]:
        start = batch * batch_size
        return texts(self.redis.lrange(keys.run_contacts(run_id), start, start + batch_size - 1))

    def outcomes(self, run_id: str, contact_ids: list[str]) -> dict[str, Outcome | None]:
        if not contact_ids:
            return {}
        raw = texts_or_none(self.redis.hmget(keys.run_outcomes(run_id), contact_ids))
        return {cid: Outcome.from_redis(value) for cid, value in zip(contact_ids, raw, strict=True)}

    def page(
        self, run_id: str, cursor: int, limit: int
    ) -> tuple[list[tuple[str, Outcome | None]], int | None]:
        """Contacts in hand-over order with their outcomes, from `cursor`; and the next cursor."""
        ids = texts(self.redis.lrange(keys.run_contacts(run_id), cursor, cursor + limit - 1))
        outcomes = self.outcomes(run_id, ids)
        next_cursor = cursor + len(ids) if len(ids) == limit else None
        if next_cursor is not None and next_cursor >= self.redis.llen(keys.run_contacts(run_id)):
            next_cursor = None
        return [(cid, outcomes[cid]) for cid in ids], next_cursor

    def active(self) -> list[str]:
        return members(self.redis.zrange(keys.runs_active(), 0, -1))

    def unconfirmed(self, run: Run) -> Unconfirmed | None:
        """The run's open contacts if every one is unknown (in flight when its answer was
        lost): its batches are done, so only an echo or the deadline settles them. None while
        anything is left to send, or nothing is open."""
        if run.state == "done" or run.pending <= 0:
            return None
        batches = self.batch_states(run.run_id)
        if any(batches.get(str(n)) != "done" for n in range(run.batches)):
            return None
        # Their deadlines are in the deadline set every run shares: it holds only unknown
        # sends, so the scan is short, and it is made only for such a run.
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", run.run_id) + US + "*"
        deadlines = [
            float(score)
            for _, score in self.redis.zscan_iter(keys.deadlines(), match=pattern, count=1000)
        ]
        if len(deadlines) != run.pending:
            return None
        return Unconfirmed(len(deadlines), int(max(deadlines)))

    def mark_running(self, run_id: str) -> None:
        self.redis.eval(
            "if redis.call('HGET', KEYS[1], 'state') == 'queued' then "
            "redis.call('HSET', KEYS[1], 'state', 'running') end",
            1,
            keys.run(run_id),
        )

    # -- batches and leases ---------------------------------------------------------------------

    def batch_states(self, run_id: str) -> dict[str, str]:
        return text_map(self.redis.hgetall(keys.run_batches(run_id)))

    def set_batch(self, run_id: str, batch: int, state: str, job_id: str | None = None) -> None:
        mapping = {str(batch): state}
        if job_id:
            mapping[f"job:{batch}"] = job_id
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(keys.run_batches(run_id), mapping=field_map(mapping))
        # Both hashes come to exist after the run's creation set its TTLs: they get theirs here
        # (a batch is set queued before its sends and done after their outcomes).
        for key in (keys.run_batches(run_id), keys.run_outcomes(run_id)):
            pipe.expire(key, self.retention_s)
        pipe.execute()

    def expire_untimed_once(self) -> int:
        """`expire_untimed`, the first time only (the retention pass asks every hour)."""
        if self.redis.exists(keys.migrated("run_ttls")):
            return 0
        fixed = self.expire_untimed()
        self.redis.set(keys.migrated("run_ttls"), fixed)
        return fixed

    def expire_untimed(self, chunk: int = 1000) -> int:
        """Give run hashes made before 2026-12-06 without a TTL one (their run's, or delete
        them when the run is gone). Returns how many were fixed; scans every run key once."""
        fixed = 0
        for pattern in (keys.run_outcomes("*"), keys.run_batches("*")):
            for key in self.redis.scan_iter(match=pattern, count=chunk):
                if self.redis.ttl(key) != -1:
                    continue
                run_ttl = self.redis.ttl(keys.run(_run_id_of(text(key) or "", pattern)))
                if run_ttl > 0:
                    self.redis.expire(key, run_ttl)
                else:
                    self.redis.delete(key)
                fixed += 1
        return fixed

    def mark_ready(self, run: Run, batch: int, from_ms: int) -> None:
        """A queued batch any sending worker may take from `from_ms` (see take_ready)."""
        self.redis.zadd(
            keys.runs_ready(), {f"{run.profile_id}{US}{run.run_id}{US}{batch}": from_ms}
        )

    def unmark_ready(self, run: Run, batch: int) -> None:
        self.redis.zrem(keys.runs_ready(), f"{run.profile_id}{US}{run.run_id}{US}{batch}")

    def take_ready(
        self, how_many: int, token: str, lease_ms: int, skip_profiles: set[str]
    ) -> list[tuple[str, int]]:
        """Lease up to `how_many` ready batches of profiles not in `skip_profiles`:
        [(run id, batch)]."""
        taken: list[str] = self._take_ready(
            args=[
                int(time.time() * 1000),
                how_many,
                lease_ms,
                token,
                json.dumps(sorted(skip_profiles)),
            ]
        )
        return [(taken[i], int(taken[i + 1])) for i in range(0, len(taken), 2)]

    def claim_batch(self, run_id: str, batch: int) -> bool:
        """Mark a batch queued unless it already is (or is done): True if we should queue it."""
        return bool(self.redis.hsetnx(keys.run_batches(run_id), str(batch), "queued"))

    def count_resume(self, run_id: str, batch: int) -> int:
        return int(self.redis.hincrby(keys.run_batches(run_id), f"resumes:{batch}", 1))

    def forget_active(self, run_id: str) -> None:
        self.redis.zrem(keys.runs_active(), run_id)

    def acquire_lease(self, run_id: str, batch: int, token: str, ttl_ms: int) -> bool:
        return bool(self.redis.set(keys.run_lease(run_id, batch), token, nx=True, px=ttl_ms))

    def renew_lease(self, run_id: str, batch: int, token: str, ttl_ms: int) -> bool:
        return bool(self._lease(keys=[keys.run_lease(run_id, batch)], args=[token, ttl_ms]))

    def release_lease(self, run_id: str, batch: int, token: str) -> None:
        self._lease(keys=[keys.run_lease(run_id, batch)], args=[token, 0])

    def lease_held(self, run_id: str, batch: int) -> bool:
        return bool(self.redis.exists(keys.run_lease(run_id, batch)))

    # -- per-contact outcomes -------------------------------------------------------------------

    def claim(
        self,
        run_id: str,
        contact: str,
        deadline_ms: int,
        pace: tuple[PageRateLimiter, str] | None = None,
        sent_as: str = "",
        sending: tuple[str, int] | None = None,
        *,
        slot_held: bool = False,
        longest_wait_ms: float = 60_000,
        outcomes: Sequence[str] = (),
        rules: SendingRules | None = None,
    ) -> float | None:
        """Mark a contact in flight as its send leaves (storage/lua/claim.lua): 0 once claimed,
        None if it already has an outcome or someone else's claim. `deadline_ms` is when it is
        failed (interrupted) if it becomes unknown (`mark_unknown`) and no echo settles it.
        With `pace` = (PageRateLimiter, page id) it claims only when the Page's send slot has
        come: the first call reserves the next slot and, unless that slot is now, returns the ms
        to wait for it, claiming nothing; the call made again with `slot_held` once they have
        passed claims (or, if the Page was told to rest meanwhile, reserves a new slot and
        returns its wait). A wait over `longest_wait_ms` is returned with no slot reserved.
        `sent_as` (see SENT_AS_KINDS) stays with the claim, for an echo that settles a send
        whose answer was lost. With `sending` = (profile id, probe timeout ms), raises
        SendingPaused (and claims nothing) while the profile's sending is paused or a probe send
        is out (its `probing` says which; storage/sending.py).
        `outcomes` (from `outcome`) are recorded first, in the same round trip, as `finish_many`
        records them with `rules`: answers of earlier sends that were waiting to be written."""
        # The claim's own id lets a call made again after a lost reply find the claim its own;
        # the deadline ("e") is set only if the send becomes unknown (set_pending_state.lua).
        record = json.dumps(
            {
                "s": "inflight",
                "t": int(time.time() * 1000),
                "c": os.urandom(6).hex(),
                "k": sent_as,
                "e": deadline_ms,
            }
        )
        limiter, page_id = pace if pace else (None, "")
        timeline = limiter.keys(page_id) if limiter else [keys.rate("-"), keys.rate_rest("-")]
        breaker = [keys.sending(sending[0])] if sending else []
        wait_us = int(
            self._claim(
                keys=[keys.run_outcomes(run_id), *timeline, *breaker],
                args=[
                    contact,
                    record,
                    f"{run_id}{US}{contact}",
                    limiter.interval_us if limiter else 0,
                    sending[1] if sending else 0,
                    int(slot_held),
                    int(longest_wait_ms * 1000),
                    *(_learning(rules) + list(outcomes) if outcomes else []),
                ],
            )
        )
        if wait_us in (CLAIM_PAUSED, CLAIM_PROBING):
            raise SendingPaused(run_id, contact, probing=wait_us == CLAIM_PROBING)
        if wait_us < 0:
            return None
        return wait_us / 1000

    def release_claims(self, run_id: str, contacts: list[str]) -> int:
        """Forget in-flight claims whose request never left, or that Facebook refused (so they
        are sent again, by this sender or a later job)."""
        return self._set_pending(run_id, "inflight", "", contacts)

    def mark_unknown(self, run_id: str, contacts: list[str]) -> int:
        """In flight when their answer was lost or their worker died: the send may have left.
        Never resent; settled by Facebook's echo or, at the deadline its claim was given, failed
        (interrupted) by `expire_unknown`."""
        return self._set_pending(run_id, "inflight", "unknown", contacts)

    def _set_pending(self, run_id: str, source: str, target: str, contacts: list[str]) -> int:
        if not contacts:
            return 0
        day = day_of(int(time.time() * 1000), self.tz)
        return int(
            self._pending_state(
                keys=[keys.run_outcomes(run_id), keys.deadlines()],
                args=[source, target, run_id, day, day_score(day), *contacts],
            )
        )

    def finish(
        self, run_id: str, contact: str, state: str, **details: Unpack[OutcomeDetails]
    ) -> bool:
        """Record the contact's final outcome once (run counts, day statistics, receipts); False
        if it already had one. `details` are those of `outcome`."""
        return self.finish_many([self.outcome(run_id, contact, state, **details)]) == 1

    def finish_many(self, outcomes: list[str], rules: SendingRules | None = None) -> int:
        """Record many outcomes (from `outcome`) in one round trip; returns how many were new.
        With `rules`, the outcomes of sends that called Facebook also feed the profile's sending
        breaker and its unreachable recipients (storage/sending.py)."""
        if not outcomes:
            return 0
        return int(self._finish(args=[*_learning(rules), *outcomes]))

    def outcome(
        self,
        run_id: str,
        contact: str,
        state: str,
        *,
        reason: str = "",
        message_id: str = "",
        detail: str = "",
        recipient: str = "",
        at_ms: int | None = None,
        sent_as: str = "",
        called: bool = False,
    ) -> str:
        """One final outcome as `finish_many` takes it (`sent_as`: see SENT_AS_KINDS; `called`:
        Facebook was called for it, so the result says something about the Page)."""
        at_ms = at_ms if at_ms is not None else int(time.time() * 1000)
        day = day_of(at_ms, self.tz)
        return json.dumps(
            {
                **({"fb": True} if called else {}),
                "run": run_id,
                "contact": contact,
                "state": state,
                "reason": reason,
                "mid": message_id,
                "at": at_ms,
                "detail": detail[:500],
                "day": day,
                "score": str(day_score(day)),  # only a ZADD's score: no number to format
                "rcpt": recipient,
                "k": sent_as,
                "receipts": state == "sent" and bool(recipient) and expects_receipts(recipient),
            }
        )

    def expire_unknown(self, now_ms: int | None = None, limit: int = 500) -> int:
        """Unknown sends past their deadline become failed/interrupted."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        day = day_of(now_ms, self.tz)
        return int(self._expire(args=[now_ms, day, day_score(day), limit]))


def _run_id_of(key: str, pattern: str) -> str:
    """The run id in a key matched by a `keys.run_*("*")` pattern."""
    prefix, _, suffix = pattern.partition("*")
    return key[len(prefix) : len(key) - len(suffix)]
