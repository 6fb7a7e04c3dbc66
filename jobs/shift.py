"""A worker's shift: sending its own batch and, as it goes, batches of other Pages.

Each Page is paced on its own (SEND_RATE_PER_PAGE), so one batch alone cannot keep a worker's
SEND_CONCURRENCY sends in flight. A shift keeps up to SEND_PAGES_PER_WORKER batches of
different Pages open, hands their contacts to the threads in turn, and whenever a batch ends
takes the next ready batch (storage `take_ready`), until none is left. Every batch it holds is
leased; if the worker dies the leases lapse and the batches are taken up again.

The SEND_CONCURRENCY threads take their next contact themselves (as a bare client loop does:
no hand-off through the shift's own thread, which only ends and takes batches), preferring the
Page that has waited longest with nothing in flight, so that its pacing slot is already free.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bot import policy
from jobs.sender import BatchSender, Recorder
from storage import Storage
from storage.runs import Run

log = logging.getLogger(__name__)
LOOK_AGAIN_S = 0.25  # how often a shift with room looks for newly ready batches
LOOK_AGAIN_IDLE_S = 0.05  # ... and while some of its threads have nothing to send
FIRST_SEND_ESTIMATE_S = 0.1  # Graph latency assumed until sends have been timed
STOPPING = threading.Event()  # set at the worker's shutdown: finish what is open, take nothing new


@dataclass
class OpenBatch:
    run: Run
    number: int
    sender: BatchSender
    contacts: list[str]
    pending: deque = field(default_factory=deque)
    in_flight: int = 0
    ending: bool = False  # handed to the shift's thread to be ended

    @property
    def finished(self) -> bool:
        return not self.pending and not self.in_flight


class Shift:
    """Send the batches this job holds, taking more as they end; report each batch's end."""

    def __init__(
        self,
        store: Storage,
        settings,
        graph,
        token: str,
        lease_ms: int,
        on_batch_end: Callable[[Run, int, BatchSender, list[str]], str],
        on_taken: Callable[[str, int], None] = lambda run_id, number: None,
    ):
        self.store, self.settings, self.graph = store, settings, graph
        self.token, self.lease_ms, self.on_batch_end = token, lease_ms, on_batch_end
        self.on_taken = (
            on_taken  # (run id, batch) taken from the ready set: its queued job is spare
        )
        self.open: list[OpenBatch] = []  # least recently served first
        self.ended: list[tuple[Run, int, str]] = []
        self.leases = LeaseKeeper(store, token, lease_ms)
        self.recorder = Recorder(store, policy.sending_rules(settings))
        self._lock = threading.Lock()  # guards open, _to_end, _over and the batches' counters
        self._work = threading.Condition(self._lock)  # sending threads wait here for a contact
        self._ending = threading.Condition(self._lock)  # the shift's thread waits here for _to_end
        self._to_end: list[OpenBatch] = []
        self._over = False  # no batch left: the threads stop once they run out of contacts
        self._abandoned = False  # the shift failed: the threads take no new contact
        self._idle = 0  # sending threads waiting for a contact
        self._looked_at = 0.0
        self._send_s = FIRST_SEND_ESTIMATE_S  # moving average of Graph send latency

    def run(self, first: Run, number: int) -> list[tuple[Run, int, str]]:
        """Send `first`'s batch `number` (already leased) and whatever else is ready."""
        try:
            self._open(first, number)
            self._send()  # takes more batches as soon as the threads run
        finally:
            self.recorder.close()
            self.leases.stop()
        return self.ended

    def _open(self, run: Run, number: int) -> None:
        self.leases.add(run.run_id, number)
        self.store.runs.mark_running(run.run_id)
        contacts = self.store.runs.batch_contacts(run.run_id, number, run.batch_size)
        stale = [
            cid
            for cid, o in self.store.runs.outcomes(run.run_id, contacts).items()
            if o and o.state == "inflight"
        ]
        if stale:  # in flight when the previous worker died: they may have been sent
            self.store.runs.mark_unknown(run.run_id, stale)
            log.warning(
                "run %s batch %s: %d sends in flight when their worker died are now unknown",
                run.run_id,
                number,
                len(stale),
            )
        sender = BatchSender(self.store, self.graph, self.settings, run, self.recorder)
        batch = OpenBatch(run, number, sender, contacts, deque(sender.prepare(contacts)))
        with self._lock:
            self.open.append(batch)
            if batch.finished:  # nothing left to send in it
                self._hand_over(batch)
            self._work.notify_all()

    def _take_more(self) -> None:
        with self._lock:
            room = self.settings.send_pages_per_worker - len(self.open)
            busy = {batch.run.profile_id for batch in self.open}
        if room <= 0 or STOPPING.is_set():
            return
        self._looked_at = time.monotonic()
        for run_id, number in self.store.runs.take_ready(room, self.token, self.lease_ms, busy):
            run = self.store.runs.get(run_id)
            if run is None:
                self.store.runs.release_lease(run_id, number, self.token)
                continue
            self.on_taken(run_id, number)
            self._open(run, number)

    # -- the sending threads ------------------------------------------------------------------

    def _per_page_limit(self) -> int:
        """Sends in flight that keep one Page at its pace: latency x rate, plus one. A thread
        beyond that would only sleep for a slot while another Page could use it."""
        return math.ceil(self._send_s * 1_000_000 / self.store.rates.interval_us) + 1

    def _next(self) -> OpenBatch | None:
        """The batch to send from next (call with _lock held): the least recently served one
        with nothing in flight, else the least recently served one below the per-Page limit.
        It moves to the back."""
        limit = self._per_page_limit()
        candidates = [
            b for b in self.open if b.pending and not b.sender.paused_ms and b.in_flight < limit
        ]
        batch = next(
            (b for b in candidates if not b.in_flight), candidates[0] if candidates else None
        )
        if batch is not None:
            self.open.remove(batch)
            self.open.append(batch)
        return batch

    def _sending(self) -> None:
        """One sending thread: take a contact, send it, until the shift is over."""
        while True:
            with self._lock:
                while (batch := None if self._abandoned else self._next()) is None:
                    if self._over or self._abandoned:
                        return
                    self._idle += 1
                    self._work.wait()
                    self._idle -= 1
                cid = batch.pending.popleft()
                batch.in_flight += 1
            took = 0.0
            try:
                took = batch.sender.handle(cid)
            except Exception:
                log.exception(
                    "run %s batch %s: a send failed unexpectedly", batch.run.run_id, batch.number
                )
            with self._lock:
                batch.in_flight -= 1
                if took:
                    self._send_s += (took - self._send_s) / 16
                if batch.pending:
                    self._work.notify()  # a thread held back by the per-Page limit may go on
                if batch.finished or (batch.sender.paused_ms and not batch.in_flight):
                    self._hand_over(batch)

    def _hand_over(self, batch: OpenBatch) -> None:
        """Give a batch with nothing left to send to the shift's thread to end (_lock held)."""
        if not batch.ending:
            batch.ending = True
            self._to_end.append(batch)
            self._ending.notify()

    # -- the shift's own thread ---------------------------------------------------------------

    def _send(self) -> None:
        """Run the sending threads; meanwhile end batches as they finish and take new ones."""
        threads = [
            threading.Thread(target=self._sending, name=f"send-{i}", daemon=True)
            for i in range(self.settings.send_concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            while not self._over:
                with self._lock:
                    look_again_s = LOOK_AGAIN_IDLE_S if self._idle else LOOK_AGAIN_S
                    if not self._to_end:
                        self._ending.wait(look_again_s)
                    to_end, self._to_end = self._to_end, []
                for batch in to_end:
                    self._end(batch)
                if to_end or time.monotonic() - self._looked_at >= look_again_s:
                    self._take_more()  # runs handed over since the shift began
                with self._lock:
                    if not self.open:
                        self._over = True
                        self._work.notify_all()
        except BaseException:
            self._abandoned = True  # unsent contacts stay unclaimed: the lapsed lease hands them on
            raise
        finally:
            with self._lock:
                self._over = True
                self._work.notify_all()
            for thread in threads:
                thread.join()

    def _end(self, batch: OpenBatch) -> None:
        with self._lock:
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
