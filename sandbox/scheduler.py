"""One background thread running due callbacks from a heap (echoes, receipts, retries)."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Scheduler:
    """Run callbacks after a delay on a single daemon thread, in due order."""

    def __init__(self, name: str = "sandbox-scheduler") -> None:
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()  # breaks ties so callbacks are never compared
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._busy = False

    def schedule(self, delay_s: float, callback: Callable[[], None]) -> None:
        """Run callback once, delay_s seconds from now (ignored after stop)."""
        with self._cond:
            if self._stopped:
                return
            due = time.monotonic() + max(0.0, delay_s)
            heapq.heappush(self._heap, (due, next(self._seq), callback))
            if self._thread is None:
                # Started lazily so an app that never sends never owns a thread.
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def pending(self) -> int:
        """Return how many callbacks are waiting or running."""
        with self._cond:
            return len(self._heap) + (1 if self._busy else 0)

    def clear(self) -> None:
        """Drop every waiting callback (a running one finishes)."""
        with self._cond:
            self._heap.clear()
            self._cond.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Make everything due now and wait until idle; return False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._heap or self._busy:
                if self._stopped:
                    return False
                now = time.monotonic()
                self._heap = [(min(due, now), seq, cb) for due, seq, cb in self._heap]
                heapq.heapify(self._heap)
                self._cond.notify_all()
                remaining = deadline - now
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the thread after its current callback; waiting callbacks are dropped."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _next(self) -> Callable[[], None] | None:
        """Wait for the earliest due callback; None once stopped."""
        with self._cond:
            while not self._stopped:
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait <= 0:
                    self._busy = True
                    return heapq.heappop(self._heap)[2]
                self._cond.wait(wait)
            return None

    def _run(self) -> None:
        """Loop until stopped; one failing callback must not kill later receipts."""
        while (callback := self._next()) is not None:
            try:
                callback()
            except Exception:
                log.exception("sandbox scheduled callback failed")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
