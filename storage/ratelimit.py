"""Per-Page send pacing shared by every worker (keys rate:{page_id}, rate:{page_id}:rest).

Facebook allows 300 calls/s per Page, but above ~40 messages/s a Page's inbox stops working
(MESSENGER.md), so the default is 20/s. Each send's slot on the Page's timeline is reserved by
the claim that lets it leave (storage/lua/claim.lua, Runs.claim). Rate-limit errors and high
usage headers make the Page rest (`rest`): no new slot before the rest ends, and a sender whose
slot came during a rest reserves a new one instead of sending.
"""

from __future__ import annotations

from redis import Redis

from storage import keys, scripts

# Pace 4 % under the configured rate: a send leaves a little after its slot (thread wake-up,
# network), and without this margin a clock second could see one message over the limit.
HEADROOM = 0.96


class PageRateLimiter:
    """A Page's shared send timeline: its pace and its rests (claims reserve the slots)."""

    def __init__(self, redis: Redis, per_second: float) -> None:
        self.redis = redis
        self.interval_us = max(1, round(1_000_000 / (per_second * HEADROOM)))
        self._reserve = scripts.register(redis, "rate_reserve")

    def keys(self, page_id: str) -> list[str]:
        """The Page's timeline and rest keys (claims reserve their slots with them)."""
        return [keys.rate(page_id), keys.rate_rest(page_id)]

    def rest(self, page_id: str, ms: int) -> None:
        """Let nothing leave for this Page for `ms` from now."""
        self._reserve(keys=self.keys(page_id), args=[0, max(1, int(ms))])
