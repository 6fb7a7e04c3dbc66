"""Meta's messaging rules, as of the dates below (checked 2026-11; see MESSENGER.md).

The one home of: the tag retirement table, the 24-hour window, and how each Graph error is
handled. A deployment can move a retirement date (`TAG_RETIREMENT`); tests pin "today".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import TypedDict

from bot.config import Settings
from bot.personalize import render
from storage.profiles import Profile
from storage.programs import Node
from storage.sending import SendingRules

# The three transactional tags the product offers, and the day Meta stopped accepting them
# (tagged sends fail with error 100 from then on; chatwoot#14674, erxes#9177).
TAGS = ("CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE")
TAG_RETIREMENT: dict[str, date] = {tag: date(2026, 4, 27) for tag in TAGS}

STANDARD_WINDOW_MS = 24 * 3600 * 1000
MAX_TEXT_CHARS = 2000
MAX_METADATA_CHARS = 1000

# What the sender does with a Graph error.
RETRY = "retry"  # transient: back off and try again, capped
RATE_LIMIT = "rate_limit"  # slow the Page down, then retry
AMBIGUOUS = "ambiguous"  # may have been sent: never resend blindly
OUTSIDE_WINDOW = "outside_window"  # text refused outside 24 h: try the template rule once
FAIL = "fail"  # permanent for this contact
TOKEN = "token"  # the Page token is dead: reauthorise, hold the Page's sends
PAGE_BLOCKED = "page_blocked"  # Facebook restricted the Page: pause it


@dataclass(frozen=True)
class ErrorRule:
    action: str
    reason: str


# (code, subcode) -> rule; subcode None matches any subcode of that code.
ERROR_RULES: dict[tuple[int, int | None], ErrorRule] = {
    (1, 1357046): ErrorRule(AMBIGUOUS, "interrupted"),  # "invalid JSON reply": may be sent
    (1, None): ErrorRule(RETRY, "facebook_unavailable"),
    (2, None): ErrorRule(RETRY, "facebook_unavailable"),
    (1200, None): ErrorRule(RETRY, "facebook_unavailable"),
    (2018321, None): ErrorRule(RETRY, "facebook_unavailable"),
    (4, None): ErrorRule(RATE_LIMIT, "rate_limited"),
    (17, None): ErrorRule(RATE_LIMIT, "rate_limited"),
    (32, None): ErrorRule(RATE_LIMIT, "rate_limited"),
    (613, 2018338): ErrorRule(FAIL, "policy_warning"),  # too many tagged messages to this person
    (613, None): ErrorRule(RATE_LIMIT, "rate_limited"),
    (10, 2018278): ErrorRule(OUTSIDE_WINDOW, "outside_window"),
    (10, 2534022): ErrorRule(OUTSIDE_WINDOW, "outside_window"),
    (10, 2018065): ErrorRule(OUTSIDE_WINDOW, "outside_window"),
    (10, 2018108): ErrorRule(FAIL, "recipient_unavailable"),
    (10, 1893063): ErrorRule(PAGE_BLOCKED, "page_blocked"),
    (10, 1893015): ErrorRule(FAIL, "person_stopped"),
    (10, None): ErrorRule(FAIL, "permission_missing"),
    (551, None): ErrorRule(FAIL, "recipient_unavailable"),
    (200, 1545041): ErrorRule(FAIL, "recipient_unavailable"),
    (200, 2018028): ErrorRule(FAIL, "app_not_reviewed"),
    (200, None): ErrorRule(FAIL, "app_not_reviewed"),
    (230, None): ErrorRule(FAIL, "recipient_unavailable"),
    (100, 2018001): ErrorRule(FAIL, "invalid_recipient"),
    (100, None): ErrorRule(FAIL, "invalid_request"),
    (190, None): ErrorRule(TOKEN, "token_invalid"),
    (102, None): ErrorRule(TOKEN, "token_invalid"),
    (368, None): ErrorRule(PAGE_BLOCKED, "page_blocked"),
    (2022, None): ErrorRule(PAGE_BLOCKED, "page_blocked"),
    (10904, None): ErrorRule(PAGE_BLOCKED, "messages_disabled"),
}
_RATE_LIMIT_RANGE = range(80000, 80015)  # Business Use Case throttling
_PERMISSION_RANGE = range(200, 300)


def classify(code: int | None, subcode: int | None, is_transient: bool = False) -> ErrorRule:
    """How to handle a Graph error, from its code and subcode (never the HTTP status alone)."""
    if code is not None:
        for candidate in ((code, subcode), (code, None)):
            if candidate in ERROR_RULES:
                return ERROR_RULES[candidate]
        if code in _RATE_LIMIT_RANGE:
            return ErrorRule(RATE_LIMIT, "rate_limited")
        if code in _PERMISSION_RANGE:
            return ErrorRule(FAIL, "permission_missing")
    if is_transient:  # Graph's own hint, trusted when present
        return ErrorRule(RETRY, "facebook_unavailable")
    return ErrorRule(FAIL, "unknown_error")


def tag_accepted(tag: str, today: date, retirement: dict[str, date] | None = None) -> bool:
    """Whether Facebook still accepts this message tag on `today`."""
    retired = (retirement or TAG_RETIREMENT).get(tag)
    return retired is None or today < retired


def retirement_on(day: date | None) -> dict[str, date]:
    """The retirement table with every tag moved to `day` (a deployment's TAG_RETIREMENT_DATE)."""
    return dict(TAG_RETIREMENT) if day is None else dict.fromkeys(TAGS, day)


def inside_window(last_interaction_ms: int | None, now_ms: int) -> bool:
    """Whether the person interacted with the Page less than 24 hours ago."""
    return last_interaction_ms is not None and now_ms - last_interaction_ms < STANDARD_WINDOW_MS


# -- the delivery policy (DESIGN.md §3) ---------------------------------------------------------

SEND, WARNING, FAILED = "send", "warning", "failed"
USER_REF_PREFIX = "user_ref:"


class TemplateMessage(TypedDict):
    """A utility template send: the template and its parameters' values, in order."""

    name: str
    language: str
    parameters: list[str]


@dataclass(frozen=True)
class Decision:
    """What to do with one contact: send (how), or not (why)."""

    outcome: str  # send / warning / failed
    reason: str = ""
    messaging_type: str = ""  # MESSAGE_TAG, UPDATE or UTILITY
    tag: str | None = None
    text: str | None = None
    template: TemplateMessage | None = None

    @property
    def is_text(self) -> bool:
        return self.outcome == SEND and self.messaging_type != "UTILITY"


def not_sent(outcome: str, reason: str) -> Decision:
    return Decision(outcome, reason)


def decide(
    node: Node,
    profile: Profile | None,
    fields: dict[str, str] | None,
    last_seen_ms: int | None,
    *,
    now_ms: int,
    today: date,
    retirement: dict[str, date] | None = None,
    unreachable_until_ms: int | None = None,
    opted_out: bool = False,
) -> Decision:
    """Rules 1-4, in order: who is not sent and why, else how the message goes out.

    `node` has tag, message and utility_template; `profile` has status, health and
    optin_field; `fields` are the contact's data fields (None: unknown contact);
    `unreachable_until_ms`: Facebook said the person cannot be reached (left alone till then);
    `opted_out`: the person withdrew consent (the consent ledger), which an opt-in lifts.
    """
    if profile is None or not profile.enabled:
        return not_sent(WARNING, "profile_disabled")
    if fields is None:
        return not_sent(WARNING, "contact_unknown")
    recipient = fields.get(profile.optin_field, "")
    if not recipient:
        return not_sent(WARNING, "opted_out" if opted_out else "no_optin")
    if unreachable_until_ms is not None and unreachable_until_ms > now_ms:
        return not_sent(WARNING, "recipient_unreachable")
    if profile.health in ("needs_reauth", "disconnected"):
        return not_sent(FAILED, "token_invalid")
    if profile.health == "blocked":  # flagged before 2026-12-06; now the breaker pauses sending
        return not_sent(FAILED, "page_blocked")
    text = render(node.message, fields)
    by_user_ref = recipient.startswith(USER_REF_PREFIX)
    if not by_user_ref and tag_accepted(node.tag, today, retirement):
        return _text(text, "MESSAGE_TAG", node.tag)
    if inside_window(last_seen_ms, now_ms):
        return _text(text, "UPDATE")
    if by_user_ref:  # a checkbox opt-in allows messages only inside the window
        return not_sent(WARNING, "outside_window_no_template")
    return template_rule(node, fields)


def template_rule(node: Node, fields: dict[str, str]) -> Decision:
    """Rule 3-4: a utility template outside the window, or not sent."""
    template = node.utility_template
    if template is None:
        return not_sent(WARNING, "outside_window_no_template")
    values = [fields.get(name, "") for name in template.parameters]
    if not all(values):
        return not_sent(WARNING, "template_field_missing")
    return Decision(
        SEND,
        messaging_type="UTILITY",
        template={"name": template.name, "language": template.language, "parameters": values},
    )


def _text(text: str, messaging_type: str, tag: str | None = None) -> Decision:
    if len(text) > MAX_TEXT_CHARS:
        return not_sent(FAILED, "message_too_long")
    if not text.strip():
        return not_sent(WARNING, "empty_message")
    return Decision(SEND, messaging_type=messaging_type, tag=tag, text=text)


# -- protecting the Page (2026-12-06) ----------------------------------------------------------
# Facebook restricts Pages that keep messaging people who cannot or will not receive them, so a
# profile's sending pauses (its breaker, storage/sending.py) when these refusals pile up, and at
# once when Facebook restricts the Page. After a cool-down one probe send tests it.

# Refusals that count against the Page: the person cannot be reached, a tagged send outside the
# window (warnings when Facebook's refusal left no template to fall back to), policy warnings.
BREAKER_REFUSALS = frozenset(
    {
        "recipient_unavailable",
        "invalid_recipient",
        "person_stopped",
        "outside_window",
        "outside_window_no_template",
        "template_field_missing",
        "policy_warning",
    }
)
BREAKER_TRIPS = frozenset({"page_blocked", "messages_disabled"})  # the Page is restricted
# Facebook says the person cannot be reached (551 / 1545041, 10/2018108, 100/2018001): they are
# left alone for UNREACHABLE_DAYS, until they write, answer or opt in again.
UNREACHABLE = frozenset({"recipient_unavailable", "invalid_recipient"})
# Refusals that withdraw the person's consent (the consent ledger's source): they stopped
# messages from the Page in Messenger (10/1893015, MESSENGER.md: "mark contact opted-out"), or
# Facebook knows no such person for the Page (100/2018001): a new opt-in is needed either way.
CONSENT_WITHDRAWN = {"person_stopped": "messenger_stop", "invalid_recipient": "unreachable"}
# Failures a recovery may send again (bot/recovery.py): the send never reached the person for a
# reason about the Page or Facebook, not about them. `interrupted` sends may have reached
# Facebook, so only when the owner asks.
RECOVERABLE = frozenset(
    {"token_invalid", "page_blocked", "facebook_unavailable", "rate_limited", "sending_paused"}
)
RECOVERABLE_IF_ASKED = frozenset({"interrupted"})
PROBE_TIMEOUT_MS = 120_000  # a probe send with no outcome by then (its worker died): probe again
MAX_COOLDOWN_MS = 24 * 3600 * 1000


def sending_rules(settings: Settings) -> SendingRules:
    cooldown_ms = settings.breaker_cooldown_minutes * 60_000
    return SendingRules(
        window_ms=settings.breaker_window_minutes * 60_000,
        min_sends=settings.breaker_min_sends,
        bad_percent=settings.breaker_error_percent,
        cooldown_ms=cooldown_ms,
        max_cooldown_ms=max(MAX_COOLDOWN_MS, cooldown_ms),
        probe_timeout_ms=PROBE_TIMEOUT_MS,
        unreachable_ms=settings.unreachable_days * 86_400_000,
        bad=BREAKER_REFUSALS,
        trip=BREAKER_TRIPS,
        unreachable=UNREACHABLE,
        withdraws=CONSENT_WITHDRAWN,
    )


# -- Page roles (Facebook Login; MESSENGER.md "Connecting a Page") --------------------------------

CONNECT_SCOPES = (
    "pages_show_list",
    "pages_manage_metadata",
    "pages_messaging",
    "pages_read_engagement",
    "business_management",
    "page_utility_messaging",
)
# Classic roles as sets of Page tasks, strongest first.
ROLES: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "Admin",
        frozenset({"MANAGE", "CREATE_CONTENT", "MODERATE", "MESSAGING", "ADVERTISE", "ANALYZE"}),
    ),
    ("Editor", frozenset({"CREATE_CONTENT", "MODERATE", "MESSAGING", "ADVERTISE", "ANALYZE"})),
    ("Moderator", frozenset({"MODERATE", "MESSAGING", "ADVERTISE", "ANALYZE"})),
    ("Advertiser", frozenset({"ADVERTISE", "ANALYZE"})),
    ("Analyst", frozenset({"ANALYZE"})),
)
CONNECT_ROLES = ("Admin", "Editor", "Moderator")


def role_from_tasks(tasks: Iterable[str] | None) -> str:
    """The strongest classic role the tasks amount to ("none" if not even Analyst)."""
    granted = frozenset(tasks or ())
    return next((name for name, needed in ROLES if needed <= granted), "none")


def can_connect(tasks: Iterable[str] | None) -> bool:
    """Whether this person may connect the Page (Admin, Editor or Moderator: MESSAGING and
    MODERATE)."""
    return role_from_tasks(tasks) in CONNECT_ROLES
