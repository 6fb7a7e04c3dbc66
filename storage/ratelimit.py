"""Per-Page send pacing shared by every worker (key rate:{page_id}).

Facebook allows 300 calls/s per Page, but above ~40 messages/s a Page's inbox stops working
(MESSENGER.md), so the default is 20/s. Rate-limit errors and high usage headers push that
Page's timeline out (`pause`), which slows every worker sending to it.
"""
from __future__ import annotations

from storage import keys, scripts


class PageRateLimiter:
    """Reserve send slots on a Page's shared timeline."""

    def __init__(self, redis, per_second: float):
        self.redis = redis
        self.interval_ms = max(1, round(1000 / per_second))
        self._reserve = scripts.register(redis, "rate_reserve")

    def reserve(self, page_id: str) -> int:
        """Milliseconds to wait before this send may leave (the slot is then ours)."""
        return int(self._reserve(keys=[keys.rate(page_id)], args=[self.interval_ms, 0]))

    def pause(self, page_id: str, ms: int) -> None:
        """Let nothing leave for this Page for `ms` from now (on top of what is reserved)."""
        self._reserve(keys=[keys.rate(page_id)], args=[0, max(0, int(ms))])
