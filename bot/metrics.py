"""Prometheus metrics: the one module that names them.

Counts live in Redis (storage/metrics.py) so that every web and worker process adds to the
same numbers; Graph call latencies and retries are gathered in the process and flushed to
Redis in one round trip at the end of each job (jobs/job.py) or request. `/metrics` renders them
all, plus gauges read at scrape time (queue depth, runs in progress, unconfirmed sends).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import suppress
from typing import TYPE_CHECKING, TypedDict

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis.exceptions import RedisError

from storage import Storage
from storage.metrics import LATENCY_BUCKETS, latency_counts

if TYPE_CHECKING:
    from rq import Queue  # types only: bot.graph imports this module and rq is slow to import

_lock = threading.Lock()


class _Pending(TypedDict):
    latency: list[float]  # seconds, one per Graph call
    retries: list[str]  # one reason per retry


_pending: _Pending = {"latency": [], "retries": []}


def observe_graph_call(seconds: float) -> None:
    """A Graph API call took this long (any outcome)."""
    with _lock:
        _pending["latency"].append(seconds)


def count_retry(reason: str) -> None:
    with _lock:
        _pending["retries"].append(reason)


def flush(store: Storage) -> None:
    """Add what this process gathered to the shared counters (one round trip)."""
    with _lock:
        latency, retries = _pending["latency"], _pending["retries"]
        _pending["latency"], _pending["retries"] = [], []
    if not latency and not retries:
        return
    pipe = store.redis.pipeline(transaction=False)
    if latency:
        store.metrics.add("graph_latency", latency_counts(latency), pipeline=pipe)
    if retries:
        store.metrics.add("retries", {r: retries.count(r) for r in set(retries)}, pipeline=pipe)
    with suppress(RedisError):  # metrics must never fail a send
        pipe.execute()


def webhook_rejected(store: Storage, cause: str) -> None:
    with suppress(RedisError):  # Redis down is why it was rejected: the log line says so
        store.metrics.add("webhook_rejected", {cause: 1})


class _RedisCollector:
    """Reads the shared counters when Prometheus scrapes."""

    def __init__(self, store: Storage, queue: Queue) -> None:
        self.store, self.queue = store, queue

    def collect(self) -> Iterator[Metric]:
        read = self.store.metrics.read
        yield _counter(
            "messenger_webhook_events",
            "Webhook events received, by kind",
            "kind",
            read("webhook_events"),
        )
        yield _counter(
            "messenger_webhook_rejected",
            "Webhook POSTs refused, by cause",
            "cause",
            read("webhook_rejected"),
        )
        sends = CounterMetricFamily(
            "messenger_sends",
            "Contacts handed to nodes, by outcome and reason",
            labels=["outcome", "reason"],
        )
        for label, value in sorted(read("sends").items()):
            outcome, _, reason = label.partition("|")
            sends.add_metric([outcome, reason], value)
        yield sends
        yield _counter(
            "messenger_send_retries", "Send attempts retried, by reason", "reason", read("retries")
        )
        yield _counter(
            "messenger_sending_paused",
            "Times a profile's sending paused to protect its Page (its breaker tripped), by cause",
            "reason",
            read("breaker_trips"),
        )
        yield _counter(
            "messenger_consent_withdrawn",
            "Contacts whose consent to a profile was withdrawn, by source",
            "source",
            read("consent_withdrawn"),
        )
        yield _counter("messenger_erasures", "Contacts erased, by cause", "cause", read("erasures"))
        yield _histogram(read("graph_latency"))
        gauges = self.store.metrics.gauges()
        yield GaugeMetricFamily(
            "messenger_queue_depth", "Jobs waiting in the RQ queue", value=self.queue.count
        )
        yield GaugeMetricFamily(
            "messenger_runs_active", "Runs with contacts still pending", value=gauges["runs_active"]
        )
        yield GaugeMetricFamily(
            "messenger_sends_unconfirmed",
            "Sends whose answer was lost, awaiting the echo",
            value=gauges["sends_unconfirmed"],
        )
        yield GaugeMetricFamily(
            "messenger_webhook_writes_parked",
            "Webhook writes parked in Redis while webhooks crowd in, not applied yet",
            value=gauges["webhook_writes_parked"],
        )
        yield GaugeMetricFamily(
            "messenger_webhook_writes_set_aside",
            "Parked webhook writes that failed to apply, kept a week for the operator",
            value=gauges["webhook_writes_set_aside"],
        )


def _counter(
    name: str, documentation: str, label: str, values: dict[str, float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _histogram(values: dict[str, float]) -> HistogramMetricFamily:
    family = HistogramMetricFamily("messenger_graph_latency_seconds", "Graph API call latency")
    buckets = [(str(b), values.get(f"le:{b}", 0.0)) for b in LATENCY_BUCKETS]
    buckets.append(("+Inf", values.get("count", 0.0)))
    family.add_metric([], buckets, values.get("sum", 0.0))
    return family


def render(store: Storage, queue: Queue) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RedisCollector(store, queue))
    return generate_latest(registry)
