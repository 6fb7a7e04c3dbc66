"""The delivery policy and personalisation: pure rules, pinned dates."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import personalize, policy
from bot.config import Settings
from bot.reasons import REASONS
from storage.profiles import Profile
from storage.programs import Node, UtilityTemplate

NOW = 1_790_000_000_000
BEFORE, AFTER = date(2026, 4, 26), date(2026, 4, 27)
HOUR = 3_600_000


def profile(**changes) -> Profile:
    base = {
        "id": "7",
        "name": "P",
        "page_id": "1",
        "page_name": "P",
        "status": "enabled",
        "optin_field": "FBOPTIN_007",
        "health": "ok",
        "health_reason": "",
        "health_checked_at": None,
        "created_at": 0,
    }
    return Profile(**{**base, **changes})


def node(message="Hi @FIRSTNAME|there@", template=None) -> Node:
    return Node(
        id="n",
        profile_id="7",
        tag="POST_PURCHASE_UPDATE",
        message=message,
        utility_template=template,
    )


ORDER_TEMPLATE = UtilityTemplate("order_update", "en", ("ORDER_ID", "FIRSTNAME"))
OPTED = {"FBOPTIN_007": "6543", "FIRSTNAME": "Ann", "ORDER_ID": "566701"}


def decide(n=None, p=None, fields=OPTED, seen=None, today=AFTER, retirement=None):
    return policy.decide(
        n or node(), p or profile(), fields, seen, now_ms=NOW, today=today, retirement=retirement
    )


@pytest.mark.parametrize(
    "p,fields,reason",
    [
        (profile(status="disabled"), OPTED, "profile_disabled"),
        (None, OPTED, "profile_disabled"),
        (profile(), None, "contact_unknown"),
        (profile(), {"FIRSTNAME": "Ann"}, "no_optin"),
        (profile(), {"FBOPTIN_007": "", "FIRSTNAME": "Ann"}, "no_optin"),
        (profile(), {"FBOPTIN_008": "999"}, "no_optin"),  # opted in to another profile only
    ],
)
def test_rule_1_warnings(p, fields, reason):
    decision = policy.decide(node(), p, fields, NOW, now_ms=NOW, today=AFTER)
    assert (decision.outcome, decision.reason) == ("warning", reason)


@pytest.mark.parametrize(
    "health,reason",
    [
        ("needs_reauth", "token_invalid"),
        ("disconnected", "token_invalid"),
        ("blocked", "page_blocked"),
    ],
)
def test_unhealthy_profile_holds_sends(health, reason):
    assert decide(p=profile(health=health)) == policy.Decision("failed", reason)


def test_an_unreachable_person_gets_a_warning_until_their_time_is_over():
    left_alone = policy.decide(
        node(), profile(), OPTED, NOW, now_ms=NOW, today=AFTER, unreachable_until_ms=NOW + 1
    )
    assert left_alone == policy.Decision("warning", "recipient_unreachable")
    over = policy.decide(
        node(), profile(), OPTED, NOW, now_ms=NOW, today=AFTER, unreachable_until_ms=NOW
    )
    assert over.outcome == "send"


def test_the_breaker_rules_come_from_the_settings_and_name_known_reasons():
    env = {"SANDBOX": "1", "REDIS_URL": "redis://127.0.0.1:1/0", "BREAKER_COOLDOWN_MINUTES": "5"}
    settings = Settings.from_env(env, dotenv=False)
    rules = policy.sending_rules(settings)
    assert (rules.cooldown_ms, rules.min_sends, rules.bad_percent) == (300_000, 20, 50)
    assert rules.unreachable_ms == 30 * 86_400_000 and rules.window_ms == 600_000
    assert rules.bad | rules.trip | rules.unreachable <= REASONS.keys()
    assert all(REASONS[r].outcome == "failed" for r in rules.trip | rules.unreachable)


def test_before_the_retirement_date_a_tagged_message_goes_even_outside_the_window():
    decision = decide(seen=None, today=BEFORE)
    assert (decision.messaging_type, decision.tag, decision.text) == (
        "MESSAGE_TAG",
        "POST_PURCHASE_UPDATE",
        "Hi Ann",
    )


def test_from_the_retirement_date_inside_the_window_a_standard_text():
    decision = decide(seen=NOW - 23 * HOUR, today=AFTER)
    assert (decision.messaging_type, decision.tag, decision.text) == ("UPDATE", None, "Hi Ann")


def test_after_the_date_outside_the_window_the_utility_template():
    decision = decide(n=node(template=ORDER_TEMPLATE), seen=NOW - 25 * HOUR)
    assert decision.messaging_type == "UTILITY"
    assert decision.template == {
        "name": "order_update",
        "language": "en",
        "parameters": ["566701", "Ann"],
    }


def test_after_the_date_outside_the_window_without_template_is_a_warning():
    assert decide(seen=NOW - 25 * HOUR) == policy.Decision("warning", "outside_window_no_template")
    assert decide(seen=None) == policy.Decision("warning", "outside_window_no_template")


def test_template_needs_every_parameter_field():
    fields = {**OPTED, "ORDER_ID": ""}
    assert decide(n=node(template=ORDER_TEMPLATE), fields=fields).reason == "template_field_missing"


def test_a_deployment_can_move_the_retirement_date():
    later = policy.retirement_on(date(2027, 1, 1))
    assert decide(today=AFTER, retirement=later).messaging_type == "MESSAGE_TAG"
    assert policy.retirement_on(None) == policy.TAG_RETIREMENT


def test_checkbox_user_ref_only_inside_the_window_and_never_tagged():
    fields = {**OPTED, "FBOPTIN_007": "user_ref:u-1"}
    assert decide(fields=fields, seen=NOW - HOUR, today=BEFORE).messaging_type == "UPDATE"
    assert (
        decide(fields=fields, seen=NOW - 25 * HOUR, today=BEFORE).reason
        == "outside_window_no_template"
    )


def test_rendered_text_over_2000_characters_fails():
    long_name = {**OPTED, "FIRSTNAME": "x" * 2000}
    assert decide(fields=long_name, seen=NOW) == policy.Decision("failed", "message_too_long")


def test_window_boundary():
    assert policy.inside_window(NOW - 24 * HOUR + 1, NOW)
    assert not policy.inside_window(NOW - 24 * HOUR, NOW)
    assert not policy.inside_window(None, NOW)


@pytest.mark.parametrize(
    "code,subcode,action,reason",
    [
        (1, None, "retry", "facebook_unavailable"),
        (2, None, "retry", "facebook_unavailable"),
        (1, 1357046, "ambiguous", "interrupted"),
        (613, 2534040, "rate_limit", "rate_limited"),
        (613, 2018338, "fail", "policy_warning"),  # too many tagged messages to this person
        (4, None, "rate_limit", "rate_limited"),
        (80006, None, "rate_limit", "rate_limited"),
        (10, 2018278, "outside_window", "outside_window"),
        (10, 2534022, "outside_window", "outside_window"),
        (551, None, "fail", "recipient_unavailable"),
        (200, 1545041, "fail", "recipient_unavailable"),
        (100, 2018001, "fail", "invalid_recipient"),
        (100, None, "fail", "invalid_request"),
        (190, 460, "token", "token_invalid"),
        (102, None, "token", "token_invalid"),
        (10, 1893063, "page_blocked", "page_blocked"),
        (368, None, "page_blocked", "page_blocked"),
        (10, None, "fail", "permission_missing"),
        (250, None, "fail", "permission_missing"),
        (99999, None, "fail", "unknown_error"),
    ],
)
def test_error_table(code, subcode, action, reason):
    assert policy.classify(code, subcode) == policy.ErrorRule(action, reason)


def test_unknown_code_marked_transient_is_retried():
    assert policy.classify(99999, None, is_transient=True).action == "retry"


# -- personalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,fields,expected",
    [
        ("Hi @FIRSTNAME@!", {"FIRSTNAME": "Ann"}, "Hi Ann!"),
        ("Hi @FIRSTNAME@!", {}, "Hi !"),
        ("Hi @FIRSTNAME|there@!", {"FIRSTNAME": ""}, "Hi there!"),
        ("Hi @FIRSTNAME|there@!", {"FIRSTNAME": "Bo"}, "Hi Bo!"),
        (
            "Order @ORDER_ID@ for @FIRSTNAME|you@, mail help@shop.com",
            {"ORDER_ID": "5"},
            "Order 5 for you, mail help@shop.com",
        ),
        ("@A@@B@", {"A": "1", "B": "2"}, "12"),
        (
            "Hi @NAME@",
            {"NAME": "@OTHER@ {{7*7}} <b>"},
            "Hi @OTHER@ {{7*7}} <b>",
        ),  # values are never re-read
    ],
)
def test_render(text, fields, expected):
    assert personalize.render(text, fields) == expected


@pytest.mark.parametrize(
    "text,ok",
    [
        ("Hi @FIRSTNAME|there@", True),
        ("mail help@shop.com", True),
        ("@Support team", True),
        ("a @ b", True),
        ("Hi @firstname@", False),
        ("Hi @FIRST NAME@", False),
        ("Hi @FIRSTNAME|there", False),
    ],
)
def test_malformed_placeholders(text, ok):
    assert (personalize.problems(text) == []) is ok


@given(
    st.text(max_size=300),
    st.dictionaries(
        st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True), st.text(max_size=50), max_size=5
    ),
)
def test_render_never_fails_and_leaves_text_without_placeholders_alone(text, fields):
    rendered = personalize.render(text, fields)
    if not personalize.fields_used(text):
        assert rendered == text
