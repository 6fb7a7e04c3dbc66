"""A worker's shift: sending its own batch and, as it goes, batches of other Pages.

Each Page is paced on its own (SEND_RATE_PER_PAGE), so one batch alone cannot keep a worker's
SEND_CONCURRENCY sends in flight. A shift keeps up to SEND_PAGES_PER_WORKER batches of
different Pages open, hands their contacts to the threads in turn, and whenever a batch ends
takes the next ready batch (storage `take_ready`), until none is left. Every batch it holds is
leased; if the worker dies the leases lapse and the batches are taken up again.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

from bot import metrics
from jobs.sender import BatchSender, Recorder
from storage import Storage
from storage.runs import Run

log = logging.getLogger(__name__)
LOOK_AGAIN_S = 0.25  # how often a shift with room looks for newly ready batches
STOPPING = threading.Event()  # set when the worker shuts down: finish what is open, take nothing new


@dataclass
class OpenBatch:
    run: Run
    number: int
    sender: BatchSender
    contacts: list[str]
    pending: deque = field(default_factory=deque)
    in_flight: int = 0

    @property
    def finished(self) -> bool:
        return not self.pending and not self.in_flight


class Shift:
    """Send the batches this job holds, taking more as they end; report each batch's end."""

    def __init__(self, store: Storage, settings, graph, token: str, lease_ms: int,
                 on_batch_end: Callable[[Run, int, BatchSender, list[str]], str]):
        self.store, self.settings, self.graph = store, settings, graph
        self.token, self.lease_ms, self.on_batch_end = token, lease_ms, on_batch_end
        self.open: list[OpenBatch] = []
        self.ended: list[tuple[Run, int, str]] = []
        self.leases = LeaseKeeper(store, token, lease_ms)
        self.recorder = Recorder(store)
        self._turn = 0
        self._looked_at = 0.0

    def run(self, first: Run, number: int) -> list[tuple[Run, int, str]]:
        """Send `first`'s batch `number` (already leased) and whatever else is ready."""
        try:
            self._open(first, number)
            self._take_more()
            self._send()
        finally:
            self.recorder.close()
            self.leases.stop()
            metrics.flush(self.store)
        return self.ended

    def _open(self, run: Run, number: int) -> None:
        self.leases.add(run.run_id, number)
        self.store.runs.mark_running(run.run_id)
        contacts = self.store.runs.batch_contacts(run.run_id, number, run.batch_size)
        stale = [cid for cid, o in self.store.runs.outcomes(run.run_id, contacts).items() if o and o.state == "inflight"]
        if stale:  # in flight when the previous worker died: they may have been sent
            self.store.runs.mark_unknown(run.run_id, stale)
            log.warning("run %s batch %s: %d sends in flight when their worker died are now unknown",
                        run.run_id, number, len(stale))
        sender = BatchSender(self.store, self.graph, self.settings, run)
        sender.recorder = self.recorder
        self.open.append(OpenBatch(run, number, sender, contacts, deque(sender.prepare(contacts))))

    def _take_more(self) -> None:
        room = self.settings.send_pages_per_worker - len(self.open)
        if room <= 0 or STOPPING.is_set():
            return
        self._looked_at = time.monotonic()
        busy = {batch.run.profile_id for batch in self.open}
        for run_id, number in self.store.runs.take_ready(room, self.token, self.lease_ms, busy):
            run = self.store.runs.get(run_id)
            if run is None:
                self.store.runs.release_lease(run_id, number, self.token)
                continue
            self.on_taken(run_id, number)
            self._open(run, number)

    def on_taken(self, run_id: str, number: int) -> None:
        """Hook: a batch was taken from the ready set (its own queued job is then dropped)."""

    def _next(self) -> OpenBatch | None:
        """The next open batch with contacts to send, in turn, so threads spread over Pages."""
        candidates = [b for b in self.open if b.pending and not b.sender.paused_ms]
        if not candidates:
            return None
        self._turn = (self._turn + 1) % len(candidates)
        return candidates[self._turn]

    def _send(self) -> None:
        with ThreadPoolExecutor(self.settings.send_concurrency, thread_name_prefix="send") as pool:
            running: dict = {}
            while True:
                while len(running) < self.settings.send_concurrency and (batch := self._next()):
                    batch.in_flight += 1
                    running[pool.submit(batch.sender.handle, batch.pending.popleft())] = batch
                if not running:
                    for batch in list(self.open):  # paused batches with contacts left
                        self._end(batch)
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                if time.monotonic() - self._looked_at > LOOK_AGAIN_S:
                    self._take_more()  # runs handed over since the shift began
                for future in done:
                    batch = running.pop(future)
                    batch.in_flight -= 1
                    if future.exception() is not None:
                        log.error("run %s batch %s: a send failed unexpectedly", batch.run.run_id, batch.number,
                                  exc_info=future.exception())
                    if batch.finished or (batch.sender.paused_ms and not batch.in_flight):
                        self._end(batch)
                        self._take_more()

    def _end(self, batch: OpenBatch) -> None:
        self.open.remove(batch)
        self.recorder.sync()  # its outcomes are written before anyone looks at them
        outcome = self.on_batch_end(batch.run, batch.number, batch.sender, batch.contacts)
        self.leases.remove(batch.run.run_id, batch.number)
        self.ended.append((batch.run, batch.number, outcome))


class LeaseKeeper:
    """Renew every lease a shift holds, every third of their life; release each at its end."""

    def __init__(self, store: Storage, token: str, lease_ms: int):
        self.store, self.token, self.lease_ms = store, token, lease_ms
        self._leases: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease", daemon=True)
        self._thread.start()

    def add(self, run_id: str, batch: int) -> None:
        with self._lock:
            self._leases.add((run_id, batch))

    def remove(self, run_id: str, batch: int) -> None:
        with self._lock:
            self._leases.discard((run_id, batch))
        self.store.runs.release_lease(run_id, batch, self.token)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_ms / 3000):
            with self._lock:
                leases = list(self._leases)
            for run_id, batch in leases:
                if not self.store.runs.renew_lease(run_id, batch, self.token, self.lease_ms):
                    log.error("run %s batch %s: lease lost", run_id, batch)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            leases, self._leases = list(self._leases), set()
        for run_id, batch in leases:
            self.store.runs.release_lease(run_id, batch, self.token)
