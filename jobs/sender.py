"""Send one batch of a run: decide, pace, claim, send, classify, record — per contact.

Every contact ends with exactly one outcome, and none is sent twice: a contact is claimed
("inflight") as its request leaves, once its Page's send slot has come, so a worker that dies
while contacts wait for their slots leaves them unclaimed (the next worker sends them) rather
than `unknown`. An answer we never got makes it `unknown` (settled by Facebook's echo or a
deadline), never a resend. Retries happen only for errors that say the message was not sent
(bot/policy.py), with exponential backoff and jitter, capped; the claim is let go meanwhile.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    """Records final outcomes so that sending threads do not wait for Redis after each
    answer, and with few round trips: a sending thread's next claim carries the outcomes waiting
    then (`lend`; the claim records them first, in its own round trip), and a thread of the
    recorder's own writes at once whatever no claim took, many per round trip. Nothing waits
    for company (a linger would leave more answers unwritten when a worker dies). `close` waits
    until all are written.

    If the process dies first, the unwritten contacts are still "inflight": the next worker
    makes them unknown, and Facebook's echo (or the deadline) settles them — never a resend."""

    MAX_PER_WRITE = 200
    GIVE_UP_S = 60.0

    def __init__(self, store: Storage, rules: SendingRules):
        self.store = store
        self.rules = rules  # what the outcomes of sends teach the profile's breaker
        self._waiting: list[tuple[int, str]] = []  # (number, outcome JSON), oldest first
        self._returned: list[tuple[int, str]] = []  # from failed claims: for our thread only
        self._writing: dict[int, list[tuple[int, str]]] = {}  # taken, not yet written
        self._numbered = 0  # outcomes numbered so far
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="recorder", daemon=True)
        self._thread.start()

    def finish(self, run_id: str, contact: str, state: str, **details) -> None:
        outcome = self.store.runs.outcome(run_id, contact, state, **details)
        with self._changed:
            self._numbered += 1
            self._waiting.append((self._numbered, outcome))
            self._changed.notify_all()

    @contextmanager
    def lend(self) -> Iterator[list[str]]:
        """The outcomes waiting, for a claim to carry. They are written once the claim got an
        answer (SendingPaused is one); otherwise they go back to the recorder's own thread, and
        no claim carries them again (one Redis refuses must not stop the sending)."""
        taken = self._take(lending=True)
        try:
            yield [outcome for _, outcome in taken]
        except SendingPaused:
            self._written(taken)
            raise
        except BaseException:
            self._written(taken, give_back=True)  # written again if they were: no harm
            raise
        self._written(taken)

    def sync(self) -> None:
        """Wait until everything recorded so far is written."""
        with self._changed:
            last = self._numbered
            self._changed.wait_for(lambda: self._oldest_unwritten() > last)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()

    def _take(self, lending: bool = False) -> list[tuple[int, str]]:
        with self._changed:
            queue = self._returned if self._returned and not lending else self._waiting
            taken = queue[: self.MAX_PER_WRITE]
            del queue[: self.MAX_PER_WRITE]
            if taken:
                self._writing[taken[0][0]] = taken
            return taken

    def _written(self, taken: list[tuple[int, str]], give_back: bool = False) -> None:
        if not taken:
            return
        with self._changed:
            del self._writing[taken[0][0]]
            if give_back:
                self._returned = sorted(self._returned + taken)  # oldest first
            self._changed.notify_all()

    def _oldest_unwritten(self) -> int:
        """The number of the oldest outcome not yet written (past the last if none is)."""
        oldest = [number for number, _ in self._waiting[:1] + self._returned[:1]]
        oldest += self._writing
        return min(oldest, default=self._numbered + 1)

    def _loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(
                    lambda: self._waiting or self._returned or (self._closed and not self._writing)
                )
                if not self._waiting and not self._returned:
                    return  # closed, and everything written
            taken = self._take()
            if taken:
                self._write([outcome for _, outcome in taken])
                self._written(taken)

    def _write(self, outcomes: list[str]) -> None:
        """Write, trying again for up to GIVE_UP_S (a Redis restart or failover takes seconds):
        an outcome not written leaves its contact in flight, and an inflight claim has no
        deadline of its own. Given up, the contacts are made unknown (echo or deadline)."""
        give_up, attempt = time.monotonic() + self.GIVE_UP_S, 0
        while True:
            attempt += 1
            try:
                self.store.runs.finish_many(outcomes, self.rules)
                return
            except RedisError as error:
                log.warning(
                    "recording %d outcomes failed (attempt %d): %s", len(outcomes), attempt, error
                )
                if time.monotonic() > give_up:
                    break
                time.sleep(min(2.0, 0.2 * attempt))
        log.error("%d outcomes could not be recorded; they are unknown now", len(outcomes))
        self._unknown(outcomes)

    def _unknown(self, outcomes: list[str]) -> None:
        by_run: dict[str, list[str]] = {}
        for outcome in map(json.loads, outcomes):
            by_run.setdefault(outcome["run"], []).append(outcome["contact"])
        try:
            for run_id, contacts in by_run.items():
                self.store.runs.mark_unknown(run_id, contacts)
        except RedisError as error:
            log.error("outcomes not recorded stay in flight: %s", error)


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
        self.opted_out = self.store.consent.opted_out(self.run.profile_id, todo)
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
            opted_out=cid in self.opted_out,
        )

    # -- one contact ------------------------------------------------------------------------

    def handle(self, cid: str) -> float:
        """Decide and send one contact; returns about how long its Graph requests took (pacing
        waits excluded), 0 if none was made."""
        if self.paused_ms:
            return 0.0  # left unclaimed: the resumed job sends it
        decision = self.decide(cid)
        if decision.outcome != policy.SEND:
            self.finish(cid, decision.outcome, decision.reason)
            return 0.0
        return self.send(cid, decision)

    def send(self, cid: str, decision: policy.Decision) -> float:
        """Send one contact until it has an outcome, claiming it as each attempt leaves; each
        Graph error's handler (ON_GRAPH_ERROR) says whether and how to try again. Returns how
        long its Graph requests took."""
        attempt, took = 0, 0.0
        while True:
            if self.stopped_reason:
                self.finish(cid, policy.FAILED, self.stopped_reason)
                return took
            try:
                if not self.claim(cid, decision):
                    return took
            except SendingPaused:  # the breaker: no call to Facebook while the Page is at risk
                self.finish(cid, policy.FAILED, "sending_paused")
                return took
            attempt += 1
            started = time.monotonic()
            try:
                step = self.attempt(cid, decision, attempt)
                if step is not None:
                    # Facebook said it was not sent: not in flight while it waits to go again.
                    self.store.runs.release_claims(self.run.run_id, [cid])
            except BaseException:
                self.abandon(cid)
                raise
            took += time.monotonic() - started
            if step is None:
                return took
            decision = step.decision
            if step.backoff_s:
                time.sleep(step.backoff_s)

    def abandon(self, cid: str) -> None:
        """A claimed contact whose send broke off unexpectedly: its request may have left, so
        it is unknown from now (a claim has no deadline of its own, storage/lua/claim.lua)."""
        try:
            self.store.runs.mark_unknown(self.run.run_id, [cid])
        except RedisError as error:  # left in flight: a batch taken up again makes its
            # leftover claims unknown (jobs/shift.py)
            log.error("run %s: %s stays in flight: %s", self.run.run_id, cid, error)

    def claim(self, cid: str, decision: policy.Decision) -> bool:
        """Claim the contact once its Page's send slot has come (Runs.claim): True if its
        request may leave now; False if it is settled or someone else's, or if the Page rests
        too long (the batch pauses; the contact waits unclaimed for the resumed job)."""
        slot_held = False
        while True:
            wait_ms = self.claim_or_reserve(cid, decision, slot_held)
            if wait_ms is None:
                return False
            if not wait_ms:
                return True
            if wait_ms > MAX_INLINE_WAIT_MS:
                with self._lock:
                    self.paused_ms = max(self.paused_ms, wait_ms)
                return False
            time.sleep(wait_ms / 1000)
            slot_held = True

    def claim_or_reserve(
        self, cid: str, decision: policy.Decision, slot_held: bool
    ) -> float | None:
        """One call of Runs.claim. While a probe send tests whether the profile may send again,
        wait for its answer rather than fail the contact: it takes a moment."""
        give_up = time.monotonic() + self.breaker[1] / 1000
        while True:
            deadline = int(time.time() * 1000) + self.settings.unknown_deadline_seconds * 1000
            try:
                with self.recorder.lend() as outcomes:  # the answers waiting ride along
                    return self.store.runs.claim(
                        self.run.run_id,
                        cid,
                        deadline,
                        pace=(self.store.rates, self.page_id),
                        sent_as=sent_as(decision),
                        sending=self.breaker,
                        slot_held=slot_held,
                        longest_wait_ms=MAX_INLINE_WAIT_MS,
                        outcomes=outcomes,
                        rules=self.recorder.rules,
                    )
            except SendingPaused as paused:
                if not paused.probing or time.monotonic() > give_up:
                    raise
            time.sleep(PROBE_POLL_S)
            slot_held = False  # a slot that came while the probe was out is gone: a new one

    def attempt(self, cid: str, decision: policy.Decision, attempt: int) -> Retry | None:
        """Make one Graph request for the claimed contact: record its outcome, or return how to
        try again."""
        rcpt = self.recipient_of(cid)
        metadata = graph.send_metadata(self.run.run_id, cid)
        sent_ms = int(time.time() * 1000)
        try:
            result = self.graph.send(
                self.page_id, self.token, graph.message_body(rcpt, decision, metadata)
            )
        except graph.GraphError as error:
            return self.handler_for(type(error))(self, cid, decision, error, attempt)
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
        return None

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
        # The Page rests: the next claim waits that out, so no backoff on top.
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
        return Retry(template, 0.0)  # claimed again as the template: an echo says what went out

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
