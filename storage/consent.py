"""The consent ledger: when and how each contact agreed to hear from a profile, and withdrew.

Keys: p:{pid}:consent:{cid} (events, oldest first, capped at keys.CONSENT_EVENTS_KEPT) and the
sets p:{pid}:opted_in / p:{pid}:opted_out (each contact's current state, and the counts).
Opt-ins are recorded by the webhook script (storage/lua/apply_events.lua), withdrawals by
storage/lua/opt_out.lua; both through `record_consent` in _lib.lua, so a retried webhook adds
nothing and an event older than the last one recorded is history, not the state. The ledger is
kept until the contact is erased or the profile purged: proof of consent must outlive the
statistics rows (ROW_RETENTION_DAYS).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Literal, TypedDict

from redis import Redis

from storage import keys, scripts
from storage.redis_types import texts

US = "\x1f"
OPTED_IN: Final = "opted_in"
OPTED_OUT: Final = "opted_out"
NEVER: Final = "never"
State = Literal["opted_in", "opted_out", "never"]
# Where an event came from: opt-ins through a button or link, withdrawals by whom.
OPT_IN_SOURCES = ("plugin", "checkbox", "m.me", "postback")
OPT_OUT_SOURCES = (
    "api",
    "operator",
    "messenger_stop",
    "data_deletion",
    "deauthorize",
    "unreachable",
)


class ConsentEvent(TypedDict):
    at_ms: int
    type: str  # opt_in / opt_out
    source: str  # OPT_IN_SOURCES or OPT_OUT_SOURCES
    verified: bool  # our signed ref (opt-ins) or an authenticated caller (withdrawals)
    recipient: str  # the PSID or "user_ref:<ref>" it concerned; "" if none
    page_id: str


def _event(row: str) -> ConsentEvent:
    at_ms, kind, source, verified, recipient, page_id = (row.split(US) + [""] * 6)[:6]
    return {
        "at_ms": int(at_ms),
        "type": kind,
        "source": source,
        "verified": verified == "1",
        "recipient": recipient,
        "page_id": page_id,
    }


class Consent:
    """Read the ledger and withdraw consent."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._opt_out = scripts.register(redis, "opt_out")

    def history(self, pid: str, cid: str) -> list[ConsentEvent]:
        return [_event(row) for row in texts(self.redis.lrange(keys.consent_log(pid, cid), 0, -1))]

    def histories(self, pid: str, cids: list[str]) -> dict[str, list[ConsentEvent]]:
        """The ledger of each contact, in one round trip."""
        return self._ledgers([(pid, cid) for cid in cids], key=1)

    def of_contact(self, pids: list[str], cid: str) -> dict[str, list[ConsentEvent]]:
        """A contact's ledger with each profile, in one round trip."""
        return self._ledgers([(pid, cid) for pid in pids], key=0)

    def _ledgers(self, pairs: list[tuple[str, str]], key: int) -> dict[str, list[ConsentEvent]]:
        pipe = self.redis.pipeline(transaction=False)
        for pid, cid in pairs:
            pipe.lrange(keys.consent_log(pid, cid), 0, -1)
        return {
            pair[key]: [_event(row) for row in texts(rows)]
            for pair, rows in zip(pairs, pipe.execute(), strict=True)
        }

    def state(self, pid: str, cid: str) -> State:
        pipe = self.redis.pipeline(transaction=False)
        pipe.sismember(keys.consent_state(pid, OPTED_IN), cid)
        pipe.sismember(keys.consent_state(pid, OPTED_OUT), cid)
        opted_in, opted_out = pipe.execute()
        return OPTED_IN if opted_in else OPTED_OUT if opted_out else NEVER

    def opted_out(self, pid: str, cids: list[str]) -> set[str]:
        """Which of `cids` withdrew their consent to the profile (they are not sent)."""
        if not cids:
            return set()
        flags = self.redis.smismember(keys.consent_state(pid, OPTED_OUT), cids)
        return {cid for cid, flag in zip(cids, flags, strict=True) if flag}

    def counts(self, pid: str) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.scard(keys.consent_state(pid, OPTED_IN))
        pipe.scard(keys.consent_state(pid, OPTED_OUT))
        opted_in, opted_out = pipe.execute()
        return {OPTED_IN: int(opted_in), OPTED_OUT: int(opted_out)}

    def contacts(self, pid: str, chunk: int = 500) -> Iterator[list[str]]:
        """Every contact with a ledger on the profile, in chunks (for the CSV)."""
        for state in (OPTED_IN, OPTED_OUT):
            batch: list[str] = []
            for cid in self.redis.sscan_iter(keys.consent_state(pid, state), count=chunk):
                batch.append(cid)
                if len(batch) == chunk:
                    yield batch
                    batch = []
            if batch:
                yield batch

    def withdraw(self, pid: str, cid: str, *, source: str, page_id: str, at_ms: int) -> int:
        """1 withdrawn now, 0 already withdrawn, -1 no such contact."""
        if source not in OPT_OUT_SOURCES:
            raise ValueError(f"unknown opt-out source {source!r}")
        return int(self._opt_out(args=[pid, cid, at_ms, source, page_id]))
