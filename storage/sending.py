"""Whether a profile may send now (its breaker), and the recipients it leaves alone.

The breaker's state lives in p:{pid}:sending while sending is paused, and nowhere otherwise.
Send results trip it inside the script that records them (storage/lua/finish.lua), claims
check it (storage/lua/claim.lua), Facebook's policy-block webhooks pause and resume it
(apply_events.lua): every worker sees one state. Which errors count, how many and for how long
are the domain's rules (bot/policy.py), handed in as `SendingRules`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from redis import Redis

from storage import keys
from storage.redis_types import text_map


@dataclass(frozen=True)
class SendingRules:
    """The breaker's and the unreachable list's rules, as the recording script takes them."""

    window_ms: int  # results counted over this long
    min_sends: int  # no trip on fewer results in the window
    bad_percent: int  # trip at this share of refusals (recipient and policy errors)
    cooldown_ms: int  # first pause; doubled after each failed probe
    max_cooldown_ms: int
    probe_timeout_ms: int  # a probe without an outcome this long: the next send probes
    unreachable_ms: int  # how long an unreachable recipient is left alone
    bad: frozenset[str]  # failure reasons that count as refusals
    trip: frozenset[str]  # failure reasons that pause at once (the Page is restricted)
    unreachable: frozenset[str]  # failure reasons that make the recipient unreachable
    withdraws: Mapping[str, str]  # failure reason -> consent withdrawn, with this ledger source

    @cached_property
    def as_json(self) -> str:
        def reason_set(reasons: frozenset[str]) -> dict[str, bool]:
            return dict.fromkeys(sorted(reasons), True)

        return json.dumps(
            {
                "window_ms": self.window_ms,
                "min_sends": self.min_sends,
                "bad_percent": self.bad_percent,
                "cooldown_ms": self.cooldown_ms,
                "max_cooldown_ms": self.max_cooldown_ms,
                "unreachable_ms": self.unreachable_ms,
                "bad": reason_set(self.bad),
                "trip": reason_set(self.trip),
                "unreachable": reason_set(self.unreachable),
                "withdraws": dict(sorted(self.withdraws.items())),
            }
        )


@dataclass(frozen=True)
class SendingState:
    state: str  # "open" (sending), "paused" or "probing" (one send tests whether it may resume)
    reason: str = ""  # what paused it: error_rate, page_blocked, messages_disabled, policy_block
    detail: str = ""
    since_ms: int | None = None
    resume_at_ms: int | None = None  # when a probe may go; None while paused: until lifted

    @classmethod
    def from_redis(cls, data: dict[str, str]) -> SendingState:
        if not data.get("state"):
            return OPEN

        def ms(name: str) -> int | None:
            return int(float(data[name])) if data.get(name) else None

        state, reason, detail = data["state"], data.get("reason", ""), data.get("detail", "")
        return cls(state, reason, detail, ms("since"), ms("resume_at"))


OPEN = SendingState("open")


class Sending:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def state(self, pid: str) -> SendingState:
        return SendingState.from_redis(text_map(self.redis.hgetall(keys.sending(pid))))

    def resume(self, pid: str) -> bool:
        """Resume sending now, whatever paused it; False if it was not paused."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(keys.sending(pid))
        pipe.delete(keys.send_window(pid))  # a fresh start: earlier refusals are forgotten
        paused, _ = pipe.execute()
        return bool(paused)

    def unreachable_until(self, pid: str, recipients: list[str]) -> dict[str, int]:
        """Recipients left alone, each with the time (ms) until when."""
        if not recipients:
            return {}
        scores = self.redis.zmscore(keys.unreachable(pid), recipients)
        return {r: int(s) for r, s in zip(recipients, scores, strict=True) if s is not None}

    def trim_unreachable(self, pid: str, now_ms: int | None = None) -> int:
        """Forget recipients whose time to be left alone is over."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        return int(self.redis.zremrangebyscore(keys.unreachable(pid), "-inf", now_ms))
