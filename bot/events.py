"""Turn a Facebook webhook body into normalised `Event`s (storage/inbound.py applies them).

Shapes are taken from MESSENGER.md: loop over every entry and both `messaging` and `standby`;
dispatch each event on the key it carries; never assume `sender`, `timestamp` or `mids`.
Anything we do not understand is counted as ignored, never an error: Facebook adds fields and
kinds without notice and must still get its 200.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias

from bot.graph import parse_send_metadata
from bot.refs import OptinRefs
from storage.inbound import Event

USER_REF = "user_ref:"
# How an opt-in reached us -> its source in the consent ledger (storage/consent.py).
CONSENT_SOURCES = {
    "optin": "plugin",
    "checkbox": "checkbox",
    "referral": "m.me",
    "postback": "postback",
}
# notification_messages_status when the person stops messages (Meta writes it with a space).
_STOPPED = frozenset({"STOP NOTIFICATIONS", "STOP_NOTIFICATIONS"})
_Json: TypeAlias = Mapping[str, Any]  # a JSON object from the webhook body, unchecked


@dataclass
class Parsed:
    events: list[Event] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)  # webhook event kinds seen, for metrics


# The helpers below run several times per event of every webhook, so they test exact types
# (JSON gives exactly str, int, dict, list; `type(True) is not int` also keeps booleans out).


def _id(value: Any) -> str | None:
    """Facebook ids are strings (sometimes numbers); anything else is malformed."""
    kind = type(value)
    if kind is str:
        return value if value and len(value) <= 128 and value.isprintable() else None
    return str(value) if kind is int else None


def _ms(value: Any) -> int | None:
    kind = type(value)
    if kind is int:
        return value if value >= 0 else None
    if kind is str and value.isdigit() and len(value) <= 16:
        return int(value)
    return None


_NOTHING: _Json = MappingProxyType({})


def _dict(value: Any) -> _Json:
    return value if type(value) is dict else _NOTHING


class _Context:
    """One messaging event with its Page, sender and time already read."""

    __slots__ = ("page", "raw", "refs", "psid", "ts")

    def __init__(self, page: str, raw: _Json, fallback_ms: int | None, refs: OptinRefs) -> None:
        self.page, self.raw, self.refs = page, raw, refs
        sender = raw.get("sender")
        self.psid = _id(sender.get("id")) if type(sender) is dict else None
        self.ts = _ms(raw.get("timestamp")) or fallback_ms or 0

    def opt_in(self, rcpt: str, ref: Any, source: str, opens_window: bool) -> list[Event]:
        """An opt-in through our ref; untrusted refs are kept as unmatched opt-ins."""
        verified = self.refs.verify(ref)
        if verified:
            profile, contact = verified
            return [
                Event(
                    "optin",
                    self.page,
                    rcpt,
                    self.ts,
                    profile=profile,
                    contact=contact,
                    ref=ref,
                    source=CONSENT_SOURCES[source],
                    fp=self.refs.fingerprint(contact),
                    opens_window=opens_window,
                )
            ]
        return [
            Event(
                "unmatched",
                self.page,
                rcpt,
                self.ts,
                ref=ref if isinstance(ref, str) else "",
                source=source,
                opens_window=opens_window,
            )
        ]


def _on_echo(c: _Context, body: _Json) -> list[Event]:
    """Our own send echoed back: its metadata settles a send whose answer we lost.

    In an echo the sender is the Page and the recipient is the person."""
    ours = parse_send_metadata(body.get("metadata"))
    psid = _id(_dict(c.raw.get("recipient")).get("id"))
    mid = _id(body.get("mid"))
    if not ours or not psid or not mid:
        return []  # a human's reply from the Page inbox, or another app's message
    run_id, contact = ours
    return [Event("echo", c.page, psid, c.ts, run=run_id, contact=contact, mid=mid)]


def _on_message(c: _Context, body: _Json) -> list[Event]:
    if body.get("is_echo"):  # echoes are ours (or a human's), never inbound
        return _on_echo(c, body)
    if not c.psid:
        return []
    events = [Event("seen", c.page, c.psid, c.ts)]  # only the time is kept, never the text
    # Replies after a checkbox opt-in name its user_ref (Meta puts prior_message beside
    # `message`; accept it inside too). conf: from Meta's messages reference, from memory.
    prior = _dict(c.raw.get("prior_message") or body.get("prior_message"))
    user_ref = _id(prior.get("identifier"))
    if prior.get("source") == "checkbox_plugin" and user_ref:
        events.append(Event("link", c.page, c.psid, c.ts, user_ref=user_ref))
    return events


def _on_optin(c: _Context, body: _Json) -> list[Event]:
    if body.get("type") == "notification_messages":
        if not c.psid:
            return []
        status = str(body.get("notification_messages_status") or "OPTED_IN")[:40]
        expiry = _ms(body.get("token_expiry_timestamp"))
        return [
            Event(
                "marketing",
                c.page,
                c.psid,
                c.ts,
                status=status,
                expiry=str(expiry or ""),
                stop=status in _STOPPED,
            )
        ]
    if c.psid:  # Send to Messenger plugin: the PSID is known, the window opens
        return c.opt_in(c.psid, body.get("ref"), "optin", opens_window=True)
    user_ref = _id(body.get("user_ref"))
    if user_ref:  # Checkbox plugin: no sender; one message allowed within 24 h, no receipts
        return c.opt_in(USER_REF + user_ref, body.get("ref"), "checkbox", opens_window=False)
    return []


def _on_referral(c: _Context, body: _Json, source: str = "referral") -> list[Event]:
    if not c.psid:
        return []
    ref = body.get("ref")
    if ref in (None, ""):  # an ad or a plain link: just an interaction
        return [Event("seen", c.page, c.psid, c.ts)]
    return c.opt_in(c.psid, ref, source, opens_window=True)


def _on_postback(c: _Context, body: _Json) -> list[Event]:
    referral = _dict(body.get("referral"))
    if referral:  # Get Started on a new thread opened from our m.me link
        return _on_referral(c, referral, "postback")
    return [Event("seen", c.page, c.psid, c.ts)] if c.psid else []


def _on_receipt(kind: str) -> Callable[[_Context, _Json], list[Event]]:
    def handle(c: _Context, body: _Json) -> list[Event]:
        watermark = _ms(body.get("watermark"))
        if not c.psid or watermark is None:
            return []
        mids = body.get("mids") if kind == "delivery" else None
        mids = tuple([m for m in mids if type(m) is str][:100]) if type(mids) is list else ()
        return [Event(kind, c.page, c.psid, c.ts, wm=watermark, mids=mids)]

    return handle


def _on_reaction(c: _Context, body: _Json) -> list[Event]:
    return [Event("seen", c.page, c.psid, c.ts)] if c.psid else []  # a reaction opens the window


def _on_policy(c: _Context, body: _Json) -> list[Event]:
    action = body.get("action")
    if action in ("block", "unblock"):
        return [Event(action, c.page, ts=c.ts, reason=str(body.get("reason", ""))[:500])]
    return []


# Event kind (the key the event carries) -> handler. Order matters: first key present wins.
HANDLERS: dict[str, Callable[[_Context, _Json], list[Event]]] = {
    "message": _on_message,
    "optin": _on_optin,
    "postback": _on_postback,
    "referral": _on_referral,
    "delivery": _on_receipt("delivery"),
    "read": _on_receipt("read"),
    "reaction": _on_reaction,
    "policy_enforcement": _on_policy,
    "messaging_policy_enforcement": _on_policy,
}


def parse_webhook(payload: _Json, refs: OptinRefs) -> Parsed:
    """Every event we act on, from a body already known to be `{"object": "page", ...}`."""
    parsed = Parsed()
    entries = payload.get("entry")
    for entry in entries if type(entries) is list else ():
        if type(entry) is not dict:
            continue
        page = _id(entry.get("id"))
        if page is None:
            continue
        entry_ms = _ms(entry.get("time"))
        for container in ("messaging", "standby"):
            items = entry.get(container)
            for raw in items if type(items) is list else ():
                _parse_one(parsed, page, _dict(raw), entry_ms, refs)
    return parsed


def _parse_one(
    parsed: Parsed, page: str, raw: _Json, entry_ms: int | None, refs: OptinRefs
) -> None:
    # The event's kind is the key it carries; with several (never seen), HANDLERS' order wins.
    kind: str | None = None
    for key in raw:
        if (
            key in HANDLERS
            and type(raw[key]) is dict
            and (kind is None or _ORDER[key] < _ORDER[kind])
        ):
            kind = key
    if kind is None:
        parsed.kinds["unknown"] += 1
        return
    body = raw[kind]
    parsed.kinds["echo" if kind == "message" and body.get("is_echo") else kind] += 1
    parsed.events.extend(HANDLERS[kind](_Context(page, raw, entry_ms, refs), body))


_ORDER = {kind: position for position, kind in enumerate(HANDLERS)}
