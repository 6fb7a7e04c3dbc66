"""Meta's messaging rules, as of the dates below (checked 2026-11; see MESSENGER.md).

The one home of: the tag retirement table, the 24-hour window, and how each Graph error is
handled. A deployment can move a retirement date (`TAG_RETIREMENT`); tests pin "today".
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

# The three transactional tags the product offers, and the day Meta stopped accepting them
# (tagged sends fail with error 100 from then on; chatwoot#14674, erxes#9177).
TAGS = ("CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE")
TAG_RETIREMENT: dict[str, date] = {tag: date(2026, 4, 27) for tag in TAGS}

STANDARD_WINDOW_MS = 24 * 3600 * 1000
MAX_TEXT_CHARS = 2000
MAX_METADATA_CHARS = 1000

# What the sender does with a Graph error.
RETRY = "retry"                    # transient: back off and try again, capped
RATE_LIMIT = "rate_limit"          # slow the Page down, then retry
AMBIGUOUS = "ambiguous"            # may have been sent: never resend blindly
OUTSIDE_WINDOW = "outside_window"  # text refused outside 24 h: try the template rule once
FAIL = "fail"                      # permanent for this contact
TOKEN = "token"                    # the Page token is dead: reauthorise, hold the Page's sends
PAGE_BLOCKED = "page_blocked"      # Facebook restricted the Page: pause it


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
    (613, None): ErrorRule(RATE_LIMIT, "rate_limited"),
    (10, 2018278): ErrorRule(OUTSIDE_WINDOW, "outside_window"),
    (10, 2534022): ErrorRule(OUTSIDE_WINDOW, "outside_window"),
    (10, 2018065): ErrorRule(OUTSIDE_WINDOW, "outside_window"),
    (10, 2018108): ErrorRule(FAIL, "recipient_unavailable"),
    (10, 1893063): ErrorRule(PAGE_BLOCKED, "page_blocked"),
    (10, 1893015): ErrorRule(FAIL, "recipient_unavailable"),
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
_RATE_LIMIT_RANGE = range(80000, 80015)       # Business Use Case throttling
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


def tag_accepted(tag: str, today: date) -> bool:
    """Whether Facebook still accepts this message tag on `today`."""
    retired = TAG_RETIREMENT.get(tag)
    return retired is None or today < retired


def inside_window(last_interaction_ms: int | None, now_ms: int) -> bool:
    """Whether the person interacted with the Page less than 24 hours ago."""
    return last_interaction_ms is not None and now_ms - last_interaction_ms < STANDARD_WINDOW_MS
