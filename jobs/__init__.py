"""RQ jobs: node runs, retries and periodic work; enqueue helpers for the program engine."""
from __future__ import annotations

from rq import Queue

QUEUES = ("messenger",)


def queue(connection, name: str = "messenger") -> Queue:
    """An RQ queue on the bytes Redis client (RQ stores bytes, storage uses text)."""
    return Queue(name, connection=connection)
