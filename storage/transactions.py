"""Optimistic transactions: read with WATCH, write with MULTI, all again if the key changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError

from storage.errors import StorageError

T = TypeVar("T")
WATCH_ATTEMPTS = 20  # a key this busy is a bug (or an attack): give up rather than spin


def optimistic(
    redis: Redis, key: str, step: Callable[[Pipeline], T], what: str
) -> tuple[T, list[Any]]:
    """Run `step` on a pipeline watching `key`: it reads (answered at once), then, if it has
    anything to write, calls `pipe.multi()` and queues the writes. All again if `key` changed
    before they were made, up to WATCH_ATTEMPTS times. Returns what `step` returned and the
    replies of the queued commands (none if it queued nothing); raises StorageError naming
    `what` if the key never stayed still."""
    with redis.pipeline() as pipe:
        for _ in range(WATCH_ATTEMPTS):
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]  # unannotated in redis-py
                value = step(pipe)
                if not pipe.explicit_transaction:
                    return value, []  # nothing to write
                return value, pipe.execute()
            except WatchError:
                continue
    raise StorageError(f"{what} kept changing; abandoned")
