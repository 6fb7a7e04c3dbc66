"""Prometheus metrics. The one module that names metrics; callers use its small functions."""
from __future__ import annotations

from collections import Counter as _Counter

from prometheus_client import Counter

WEBHOOK_EVENTS = Counter("messenger_webhook_events_total", "Webhook events received, by kind", ["kind"])
WEBHOOK_REJECTED = Counter("messenger_webhook_rejected_total", "Webhook POSTs refused, by cause", ["cause"])


def webhook_events(kinds: _Counter) -> None:
    for kind, count in kinds.items():
        WEBHOOK_EVENTS.labels(kind).inc(count)


def webhook_rejected(cause: str) -> None:
    WEBHOOK_REJECTED.labels(cause).inc()
