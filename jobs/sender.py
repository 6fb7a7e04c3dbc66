"""Send one batch of a run: decide, claim, pace, send, classify, record — per contact.

Every contact ends with exactly one outcome, and none is sent twice: a contact is claimed
("inflight") before its request leaves; an answer we never got makes it `unknown` (settled by
Facebook's echo or a deadline), never a resend. Retries happen only for errors that say the
message was not sent (bot/policy.py), with exponential backoff and jitter, capped.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import ClassVar, NamedTuple

from redis.exceptions import RedisError

from bot import graph, metrics, policy
from bot.config import Settings
from bot.crypto import TokenDecryptError
from storage import Storage
from storage.errors import SendingPaused
from storage.runs import Run, sent_as_code
from storage.sending import SendingRules

log = logging.getLogger(__name__)

MAX_INLINE_WAIT_MS = 30_000  # a Page resting longer than this: stop and resume the batch later
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.5, 8.0
HIGH_USAGE_PERCENT, HIGH_USAGE_PAUSE_MS = 90, 2_000
PROBE_POLL_S = 0.05  # how often a send waiting for the probe's answer asks again


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with full jitter: attempt 1 -> up to 0.5 s, 2 -> 1 s, ... capped."""
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))


def sent_as(decision: policy.Decision) -> str:
    """What a send decision puts out, as its outcome records it (storage.runs.sent_as_code)."""
    if decision.template is not None:  # exactly the UTILITY decisions have one
        return sent_as_code("utility_template", decision.template["name"])
    return sent_as_code("tag", decision.tag) if decision.tag else sent_as_code("text")


class Retry(NamedTuple):
    """A Graph error's verdict when the contact is not settled yet: send `decision` (the same
    message, or its next form) after sleeping `backoff_s`."""

    decision: policy.Decision
    backoff_s: float


def rate_limit_rest_ms(error: graph.GraphError, attempt: int) -> int:
    """How long a Page rests after a rate-limit error: Facebook's estimate when it gives one."""
    regain_minutes = error.usage.get("estimated_time_to_regain_access", 0)
    if regain_minutes:
        return regain_minutes * 60_000
    return int(min(60_000, 2_000 * 2 ** (attempt - 1)))


class Recorder:
    """Records final outcomes from a thread of its own, many per round trip, so that sending
    threads do not wait for Redis after each answer. `close` waits until all are written.

    If the process dies first, the unwritten contacts are still "inflight": the next worker
    makes them unknown, and Facebook's echo (or the deadline) settles them — never a resend."""

    _STOP = object()
    MAX_PER_WRITE = 200

    def __init__(self, store: Storage, rules: SendingRules):
        self.store = store
        self.rules = rules  # what the outcomes of sends teach the profile's breaker
        self._items: list = []  # outcomes (JSON), sync Events and _STOP, in order
        self._lock = threading.Lock()
        self._waiting = threading.Event()  # set when _items went from empty to not: one wake/write
        self._thread = threading.Thread(target=self._loop, name="recorder", daemon=True)
        self._thread.start()

    def finish(self, run_id: str, contact: str, state: str, **details) -> None:
        self._put(self.store.runs.outcome(run_id, contact, state, **details))

    def close(self) -> None:
        self._put(self._STOP)
        self._thread.join()

    def sync(self) -> None:
        """Wait until everything recorded so far is written."""
        written = threading.Event()
        self._put(written)
        written.wait()

    def _put(self, item) -> None:
        with self._lock:
            self._items.append(item)
            if len(self._items) == 1:
                self._waiting.set()

    def _loop(self) -> None:
        while True:
            self._waiting.wait()
            with self._lock:
                items, self._items = self._items, []
                self._waiting.clear()
            outcomes = [item for item in items if isinstance(item, str)]
            for start in range(0, len(outcomes), self.MAX_PER_WRITE):
                self._write(outcomes[start : start + self.MAX_PER_WRITE])
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
            if any(item is self._STOP for item in items):
                return

    def _write(self, outcomes: list[str]) -> None:
        for attempt in range(1, 4):
            try:
                self.store.runs.finish_many(outcomes, self.rules)
                return
            except RedisError as error:
                log.warning(
                    "recording %d outcomes failed (attempt %d): %s", len(outcomes), attempt, error
                )
                time.sleep(0.2 * attempt)
        log.error(
            "%d outcomes could not be recorded; those contacts stay unknown until settled",
            len(outcomes),
        )


class BatchSender:
    """Process the contacts of one batch with SEND_CONCURRENCY sends in flight."""

    def __init__(
        self,
        store: Storage,
        client: graph.GraphClient,
        settings: Settings,
        run: Run,
        recorder: Recorder,
    ):
        self.store, self.graph, self.settings, self.run = store, client, settings, run
        self.node = run.node
        self.profile = store.profiles.get(run.profile_id)
        self.page_id = self.profile.page_id if self.profile else ""
        self.stopped_reason = ""  # set once the Page's token died or the Page was blocked
        self.token = ""  # the Page token; none without a profile (then nothing is sent)
        try:
            token = store.profiles.page_token(run.profile_id) if self.profile else None
        except TokenDecryptError as error:  # key removed before rotation finished: a dead token
            log.error("profile %s: %s", run.profile_id, error)
            token = None
        if token:
            self.token = token
        elif self.profile:  # undecryptable, or the profile was deleted since `get`
            self.stopped_reason = "token_invalid"
        self.paused_ms = 0.0  # > 0: the Page rests; the rest of the batch waits for a later job
        self.recorder = recorder
        self.retirement = policy.retirement_on(settings.tag_retirement_date)
        self.breaker = (run.profile_id, recorder.rules.probe_timeout_ms)
        self._lock = threading.Lock()

    def prepare(self, contacts: list[str]) -> list[str]:
        """The contacts still without an outcome, with their fields and interaction times loaded."""
        outcomes = self.store.runs.outcomes(self.run.run_id, contacts)
        todo = [cid for cid in contacts if outcomes[cid] is None]
        self.fields = self.store.contacts.get_many(todo)
        recipients = [self.recipient_of(cid) for cid in todo]
        known = [r for r in recipients if r]
        self.seen = self.store.inbound.last_seen_many(self.run.profile_id, known)
        self.unreachable = self.store.sending.unreachable_until(self.run.profile_id, known)
        return todo

    def recipient_of(self, cid: str) -> str:
        fields = self.fields.get(cid) or {}
        return fields.get(self.profile.optin_field, "") if self.profile else ""

    def decide(self, cid: str) -> policy.Decision:
        now = time.time()
        rcpt = self.recipient_of(cid)
        return policy.decide(
            self.node,
            self.profile,
            self.fields.get(cid),
            self.seen.get(rcpt),
            now_ms=int(now * 1000),
            today=datetime.fromtimestamp(now, UTC).date(),
            retirement=self.retirement,
            unreachable_until_ms=self.unreachable.get(rcpt),
        )

    # -- one contact ------------------------------------------------------------------------

    def handle(self, cid: str) -> float:
        """Decide, claim and send one contact; returns about how long its Graph request took
        (pacing wait excluded), 0 if none was made."""
        if self.paused_ms:
            return 0.0  # left unclaimed: the resumed job sends it
        decision = self.decide(cid)
        if decision.outcome != policy.SEND:
            self.finish(cid, decision.outcome, decision.reason)
            return 0.0
        if self.stopped_reason:
            self.finish(cid, policy.FAILED, self.stopped_reason)
            return 0.0
        deadline = int(time.time() * 1000) + self.settings.unknown_deadline_seconds * 1000
        try:
            first_wait = self.claim(cid, decision, deadline)
        except SendingPaused:  # the breaker: no call to Facebook while the Page is at risk
            self.finish(cid, policy.FAILED, "sending_paused")
            return 0.0
        if first_wait is None:
            return 0.0  # another executor already has it
        started = time.monotonic()
        self.send(cid, decision, first_wait)
        return max(0.0, time.monotonic() - started - first_wait / 1000)  # retries included: rare

    def claim(self, cid: str, decision: policy.Decision, deadline: int) -> float | None:
        """Claim the contact (see Runs.claim). While a probe send tests whether the profile may
        send again, wait for its answer rather than fail the contact: it takes a moment."""
        give_up = time.monotonic() + self.breaker[1] / 1000
        while True:
            try:
                return self.store.runs.claim(
                    self.run.run_id,
                    cid,
                    deadline,
                    pace=(self.store.rates, self.page_id),
                    sent_as=sent_as(decision),
                    sending=self.breaker,
                )
            except SendingPaused as paused:
                if not paused.probing or time.monotonic() > give_up:
                    raise
            time.sleep(PROBE_POLL_S)

    def send(self, cid: str, decision: policy.Decision, first_wait: float) -> None:
        """Send one claimed contact until it has an outcome; each Graph error's handler
        (ON_GRAPH_ERROR) says whether and how to try again."""
        rcpt = self.recipient_of(cid)
        metadata = graph.send_metadata(self.run.run_id, cid)
        attempt = 0
        wait: float | None = first_wait  # None: reserve the next slot
        while True:
            if self.stopped_reason:
                self.finish(cid, policy.FAILED, self.stopped_reason)
                return
            if not self.wait_for_slot(cid, wait):
                return
            wait = None
            attempt += 1
            sent_ms = int(time.time() * 1000)
            try:
                result = self.graph.send(
                    self.page_id, self.token, graph.message_body(rcpt, decision, metadata)
                )
            except graph.GraphError as error:
                step = self.handler_for(type(error))(self, cid, decision, error, attempt)
                if step is None:
                    return
                decision = step.decision
                if step.backoff_s:
                    time.sleep(step.backoff_s)
                continue
            self.recorder.finish(
                self.run.run_id,
                cid,
                "sent",
                message_id=result.message_id,
                recipient=rcpt,
                at_ms=sent_ms,
                sent_as=sent_as(decision),
                called=True,
            )
            self.slow_down_if_busy(result.usage)
            return

    # -- Graph errors -------------------------------------------------------------------------
    # One handler per error class (ON_GRAPH_ERROR): it records the contact's outcome and returns
    # None, or returns the Retry to make. Only the error path pays for the lookup.

    @classmethod
    def handler_for(cls, error_class: type[graph.GraphError]) -> Callable[..., Retry | None]:
        """The handler of `error_class`, or of its nearest parent that has one (GraphError's)."""
        return next(cls.ON_GRAPH_ERROR[c] for c in error_class.__mro__ if c in cls.ON_GRAPH_ERROR)

    def _on_rate_limit(
        self, cid: str, decision: policy.Decision, error: graph.GraphError, attempt: int
    ) -> Retry | None:
        # The Page rests: the next wait_for_slot waits that out, so no backoff on top.
        self.store.rates.rest(self.page_id, rate_limit_rest_ms(error, attempt))
        return self._retry(cid, decision, error, attempt, 0.0)

    def _on_retryable(
        self, cid: str, decision: policy.Decision, error: graph.GraphError, attempt: int
    ) -> Retry | None:
        return self._retry(cid, decision, error, attempt, backoff_seconds(attempt))

    def _retry(
        self,
        cid: str,
        decision: policy.Decision,
        error: graph.GraphError,
        attempt: int,
        backoff_s: float,
    ) -> Retry | None:
        """The same message again after `backoff_s`, unless this was the last attempt allowed."""
        if attempt >= self.settings.send_max_attempts:
            self.failed(cid, error)
            return None
        metrics.count_retry(error.reason)
        return Retry(decision, backoff_s)

    def _on_ambiguous(
        self, cid: str, decision: policy.Decision, error: graph.GraphError, attempt: int
    ) -> Retry | None:
        self.store.runs.mark_unknown(self.run.run_id, [cid])  # the echo or the deadline decides
        return None

    def _on_outside_window(
        self, cid: str, decision: policy.Decision, error: graph.GraphError, attempt: int
    ) -> Retry | None:
        # Facebook says the window is closed: try the utility template rule. Only once, because
        # the template it falls to is not text, and a refused non-text message fails here.
        if not decision.is_text:
            self.failed(cid, error)
            return None
        template = policy.template_rule(self.node, self.fields.get(cid) or {})
        if template.outcome != policy.SEND:
            self.store.runs.release_claims(self.run.run_id, [cid])
            self.finish(cid, template.outcome, template.reason, called=True)  # Facebook refused
            return None
        self.store.runs.relabel_claim(self.run.run_id, cid, sent_as(template))
        return Retry(template, 0.0)

    def _on_page_stopped(
        self, cid: str, decision: policy.Decision, error: graph.GraphError, attempt: int
    ) -> Retry | None:
        self.stop_page(error)
        self.failed(cid, error)
        return None

    def _on_refused(
        self, cid: str, decision: policy.Decision, error: graph.GraphError, attempt: int
    ) -> Retry | None:
        template_refused = (
            decision.messaging_type == "UTILITY" and error.reason == "invalid_request"
        )
        self.failed(cid, error, "template_rejected" if template_refused else "")
        return None

    # Graph error class -> handler; a class not listed uses its nearest listed parent's.
    ON_GRAPH_ERROR: ClassVar[dict[type[graph.GraphError], Callable[..., Retry | None]]] = {
        graph.RateLimitError: _on_rate_limit,
        graph.RetryableError: _on_retryable,
        graph.AmbiguousError: _on_ambiguous,
        graph.OutsideWindowError: _on_outside_window,
        graph.TokenError: _on_page_stopped,
        graph.PageBlockedError: _on_page_stopped,
        graph.GraphError: _on_refused,  # PermanentError and anything new: failed
    }

    def wait_for_slot(self, cid: str, wait_ms: float | None = None) -> bool:
        """Sleep until this Page may send again (slot reserved with the claim, or now); False
        (claim released) if the Page rests too long."""
        if wait_ms is None:
            wait_ms = self.store.rates.reserve(self.page_id)
        while True:
            if wait_ms > MAX_INLINE_WAIT_MS:
                with self._lock:
                    self.paused_ms = max(self.paused_ms, wait_ms)
                self.store.runs.release_claims(self.run.run_id, [cid])
                return False
            if wait_ms <= 0:
                return True  # a slot for now: any rest was already in the timeline
            time.sleep(wait_ms / 1000)
            if not self.store.rates.resting_ms(self.page_id):
                return True
            wait_ms = self.store.rates.reserve(self.page_id)  # told to rest after we got our slot

    def slow_down_if_busy(self, usage: dict) -> None:
        """Facebook's usage header near its limit: let the Page rest before it refuses."""
        if usage.get("estimated_time_to_regain_access"):
            self.store.rates.rest(self.page_id, usage["estimated_time_to_regain_access"] * 60_000)
        elif (
            max((usage.get(k, 0) for k in ("call_count", "total_cputime", "total_time")), default=0)
            >= HIGH_USAGE_PERCENT
        ):
            self.store.rates.rest(self.page_id, HIGH_USAGE_PAUSE_MS)

    def stop_page(self, error: graph.GraphError) -> None:
        """Hold this batch's other sends. A dead token: flag the profile once (they fail as
        token_invalid). A restricted Page: the refused send's outcome pauses the profile's
        sending (storage/lua/finish.lua); the others here get sending_paused at once."""
        if not isinstance(error, graph.TokenError):
            with self._lock:
                self.stopped_reason = "sending_paused"
            log.warning("profile %s: sending paused: %s", self.run.profile_id, error.summary())
            return
        with self._lock:
            self.stopped_reason = error.reason
        if self.store.profiles.flag_unhealthy(self.run.profile_id, "needs_reauth", error.summary()):
            log.warning("profile %s marked needs_reauth: %s", self.run.profile_id, error.summary())

    def failed(self, cid: str, error: graph.GraphError, reason: str = "") -> None:
        """Facebook refused this contact's send (the refusal teaches the profile's breaker)."""
        self.finish(cid, policy.FAILED, reason or error.reason, error.summary(), called=True)

    def finish(
        self, cid: str, outcome: str, reason: str, detail: str = "", *, called: bool = False
    ) -> None:
        rcpt = self.recipient_of(cid) if called else ""
        self.recorder.finish(
            self.run.run_id,
            cid,
            outcome,
            reason=reason,
            detail=detail,
            recipient=rcpt,
            called=called,
        )
