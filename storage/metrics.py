"""Counters and a latency histogram shared by every process, kept in Redis (metrics:{name}).

Prometheus' own client counts per process; web and worker processes (and RQ's forked work
horses) come and go, so /metrics reads these Redis hashes instead, and the numbers are right
whichever process serves the scrape. Hot paths add to them inside scripts they already run
(finish, apply_events), so metrics cost no extra round trip there.
"""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline

from storage import keys
from storage.redis_types import text_map

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Add to and read the shared counters."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def add(self, name: str, counts: dict[str, float], pipeline: Pipeline | None = None) -> None:
        client = pipeline if pipeline is not None else self.redis.pipeline(transaction=False)
        for label, amount in counts.items():
            if isinstance(amount, float) and not amount.is_integer():
                client.hincrbyfloat(keys.metric(name), label, amount)
            elif amount:
                client.hincrby(keys.metric(name), label, int(amount))
        if pipeline is None:
            client.execute()

    def read(self, name: str) -> dict[str, float]:
        return {
            label: float(value)
            for label, value in text_map(self.redis.hgetall(keys.metric(name))).items()
        }

    def gauges(self) -> dict[str, int]:
        """Sizes worth watching: runs not finished, sends awaiting Facebook's echo, webhook
        writes parked and not applied yet, parked writes set aside as failed."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(keys.runs_active())
        pipe.zcard(keys.deadlines())
        pipe.llen(keys.inbox())
        pipe.llen(keys.inbox_failed())
        active, unknown, parked, set_aside = pipe.execute()
        return {
            "runs_active": int(active),
            "sends_unconfirmed": int(unknown),
            "webhook_writes_parked": int(parked),
            "webhook_writes_set_aside": int(set_aside),
        }


def latency_counts(seconds: list[float]) -> dict[str, float]:
    """Histogram fields (cumulative buckets, sum, count) for some observed latencies."""
    counts: dict[str, float] = {
        f"le:{b}": sum(1 for s in seconds if s <= b) for b in LATENCY_BUCKETS
    }
    counts["sum"] = float(sum(seconds))
    counts["count"] = len(seconds)
    return counts
