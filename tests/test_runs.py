"""Messenger node runs: programs API, outcomes and reasons, errors, idempotency, preview.

Jobs run in this process through RQ's SimpleWorker (`drain`) against the real Redis and the
Facebook simulator over HTTP; the app is served live so the simulator's echoes and receipts
reach the webhook.
"""

from __future__ import annotations

import time

import pytest

from bot import policy
from jobs.profile_checks import retention_pass
from storage import keys
from storage.inbound import Event
from storage.programs import Node
from storage.stats import day_of
from tests.conftest import messenger_node, wait_until
from tests.run_fixtures import TEMPLATE, now_ms, outcomes, run_to_end, start_run

# -- programs ---------------------------------------------------------------------------------


def test_program_round_trip(api, program, profile):
    saved = program(template=TEMPLATE)
    assert api("get", "/programs/p1").get_json() == saved
    assert saved["nodes"][0]["utility_template"] == TEMPLATE
    assert api("delete", "/programs/p1").status_code == 204
    assert api("get", "/programs/p1").status_code == 404


def test_invalid_nodes_are_each_listed_with_their_reasons(api, store, profile, fb):
    disabled = store.profiles.create(
        name="Off", page_id="77", page_name="Off", page_token="t", status="disabled"
    )
    nodes = [
        {
            "id": "ok",
            "type": "messenger",
            "profile_id": profile["id"],
            "tag": "ACCOUNT_UPDATE",
            "message": "Hi",
        },
        {
            "id": "ghost",
            "type": "messenger",
            "profile_id": "999",
            "tag": "ACCOUNT_UPDATE",
            "message": "Hi",
        },
        {
            "id": "off",
            "type": "messenger",
            "profile_id": disabled.id,
            "tag": "ACCOUNT_UPDATE",
            "message": "Hi",
        },
        {
            "id": "tag",
            "type": "messenger",
            "profile_id": profile["id"],
            "tag": "HUMAN_AGENT",
            "message": "Hi",
        },
        {
            "id": "empty",
            "type": "messenger",
            "profile_id": profile["id"],
            "tag": "ACCOUNT_UPDATE",
            "message": "  ",
        },
        {
            "id": "long",
            "type": "messenger",
            "profile_id": profile["id"],
            "tag": "ACCOUNT_UPDATE",
            "message": "x" * 2001,
        },
        {
            "id": "bad",
            "type": "messenger",
            "profile_id": profile["id"],
            "tag": "ACCOUNT_UPDATE",
            "message": "Hi @name@",
        },
    ]
    answer = api("put", "/programs/p1", json={"name": "P", "status": "active", "nodes": nodes})
    assert answer.status_code == 422
    problems = answer.get_json()["error"]["details"]["nodes"]
    assert set(problems) == {"ghost", "off", "tag", "empty", "long", "bad"}
    assert "does not exist" in problems["ghost"][0] and "disabled" in problems["off"][0]
    assert "HUMAN_AGENT" in problems["tag"][0] and "empty" in problems["empty"][0]
    assert "2000" in problems["long"][0] and "upper case" in problems["bad"][0]
    assert api("get", "/programs/p1").status_code == 404  # nothing saved


def node(ident, profile_id, **changes) -> dict:
    return {
        "id": ident,
        "type": "messenger",
        "profile_id": profile_id,
        "tag": "ACCOUNT_UPDATE",
        "message": "Hi",
        **changes,
    }


def test_shape_and_rule_problems_of_every_node_come_in_one_answer(api, profile, redis_client):
    before = set(redis_client.keys("*"))
    shape = node("shape", profile["id"], colour="red")
    del shape["message"]
    nodes = [
        node("ok", profile["id"]),
        shape,
        node("ghost", "999"),
        node("tag", profile["id"], tag="HUMAN_AGENT"),
    ]
    answer = api("put", "/programs/p1", json={"name": "P", "status": "active", "nodes": nodes})
    assert answer.status_code == 422
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_nodes" and error["details"]["fields"] == {}
    problems = error["details"]["nodes"]
    assert problems == {
        "shape": ["message is missing", "colour is not a known field"],
        "ghost": ["profile '999' does not exist"],
        "tag": [f"tag must be one of {', '.join(policy.TAGS)} (got 'HUMAN_AGENT')"],
    }
    assert set(redis_client.keys("*")) == before  # nothing saved


def test_nodes_without_a_usable_id_are_named_by_position_with_the_programs_own_problems(
    api, profile
):
    nodes = [
        node("a", profile["id"]),
        node("bad id", "999", message=" "),
        node("a", profile["id"]),
        "not a node",
        node("b", profile["id"], utility_template={"name": "t", "language": "english"}),
    ]
    answer = api("put", "/programs/p1", json={"name": "", "status": "live", "nodes": nodes})
    error = answer.get_json()["error"]
    assert answer.status_code == 422 and error["code"] == "invalid_nodes"
    assert error["details"]["nodes"] == {
        "#2": [
            "id: 1-128 letters, digits or . _ : @ -",
            "profile '999' does not exist",
            "the message is empty",
        ],
        "#3": ["another node has the id 'a'"],
        "#4": ["the node must be a JSON object"],
        "b": ["utility_template.language: a language code like en or en_US"],
    }
    assert error["details"]["fields"] == {
        "name": ["name: Length must be between 1 and 200."],
        "status": ["status: Must be one of: draft, active, paused."],
    }


@pytest.mark.parametrize(
    "body,fields",
    [
        ({"name": "P", "status": "active"}, {"nodes": ["nodes is missing"]}),
        (
            {"name": "P", "status": "active", "nodes": {"id": "n1"}},
            {"nodes": ["nodes must be a list"]},
        ),
        (
            {"status": "active", "nodes": [], "extra": 1},
            {"name": ["name is missing"], "extra": ["extra is not a known field"]},
        ),
        (
            {"name": "P", "status": "active", "nodes": [{}] * 201},
            {"nodes": ["at most 200 nodes (got 201)"]},
        ),
    ],
)
def test_program_field_problems_alone_are_validation_failed(api, body, fields):
    answer = api("put", "/programs/p1", json=body)
    assert answer.status_code == 422
    assert answer.get_json()["error"]["code"] == "validation_failed"
    assert answer.get_json()["error"]["details"] == {"fields": fields}
    assert api("get", "/programs/p1").status_code == 404


def test_programs_index_the_profiles_they_use(api, store, program, profile):
    program()
    assert [p.id for p in store.programs.using_profile(profile["id"])] == ["p1"]
    api("delete", "/programs/p1")
    assert store.programs.using_profile(profile["id"]) == []


# -- outcomes -----------------------------------------------------------------------------------


def test_each_contact_gets_one_outcome_with_a_reason(
    api, fb, drain, store, program, opted_in, profile
):
    program(template=TEMPLATE)
    opted_in("inside", FIRSTNAME="Ann", ORDER_ID="1")
    opted_in("outside", last_interaction_ms=now_ms() - 30 * 3600_000, ORDER_ID="2")
    opted_in("outside_no_order", last_interaction_ms=now_ms() - 30 * 3600_000)
    store.contacts.merge_many({"not_opted": {"FIRSTNAME": "Bo"}})
    run_id, result = run_to_end(
        api, drain, ["inside", "outside", "outside_no_order", "not_opted", "stranger"]
    )
    assert {cid: (o["outcome"], o["reason_code"]) for cid, o in result.items()} == {
        "inside": ("sent", ""),
        "outside": ("sent", ""),
        "outside_no_order": ("warning", "template_field_missing"),
        "not_opted": ("warning", "no_optin"),
        "stranger": ("warning", "contact_unknown"),
    }
    sends = {s["metadata"]: s for s in fb.sends(status="accepted")}
    inside = next(s for s in sends.values() if s["messaging_type"] == "UPDATE")
    assert inside["text"] == "Hi Ann, order 1 shipped."
    utility = next(s for s in sends.values() if s["messaging_type"] == "UTILITY")
    assert utility["template"]["components"][0]["parameters"] == [{"type": "text", "text": "2"}]
    assert result["inside"]["message_id"] == inside["message_id"]
    run = api("get", f"/runs/{run_id}").get_json()
    assert run["state"] == "done" and run["counts"] == {
        "sent": 2,
        "warning": 3,
        "failed": 0,
        "pending": 0,
    }
    today = store.stats.day(profile["id"], day_of(now_ms(), store.tz))
    assert (today["sent"], today["warning"], today["warning:no_optin"]) == (2, 3, 1)


def test_each_sent_outcome_says_what_went_out(api, drain, program, opted_in):
    program(template=TEMPLATE)
    opted_in("inside", FIRSTNAME="Ann", ORDER_ID="1")
    opted_in("outside", last_interaction_ms=now_ms() - 30 * 3600_000, ORDER_ID="2")
    opted_in("outside_no_order", last_interaction_ms=now_ms() - 30 * 3600_000)
    _, result = run_to_end(api, drain, ["inside", "outside", "outside_no_order"])
    assert {cid: (o["outcome"], o["sent_as"]) for cid, o in result.items()} == {
        "inside": ("sent", {"kind": "text"}),
        "outside": ("sent", {"kind": "utility_template", "template": "order_update"}),
        "outside_no_order": ("warning", None),
    }


def test_outside_window_without_template_is_a_warning_and_nothing_is_sent(
    api, fb, drain, program, opted_in
):
    program()
    opted_in("c1", last_interaction_ms=now_ms() - 25 * 3600_000)
    _, result = run_to_end(api, drain, ["c1"])
    assert (result["c1"]["outcome"], result["c1"]["reason_code"]) == (
        "warning",
        "outside_window_no_template",
    )
    assert fb.sends() == []


def test_disabled_profile_sends_nothing(api, fb, drain, store, program, opted_in, profile):
    program()
    opted_in("c1")
    store.redis.hset(keys.profile(profile["id"]), "status", "disabled")
    _, result = run_to_end(api, drain, ["c1"])
    assert result["c1"]["reason_code"] == "profile_disabled" and fb.sends() == []


def test_receipts_turn_sent_into_delivered_and_read_on_the_send_day(
    api, fb, drain, store, program, opted_in, profile
):
    program()
    opted_in("c1", FIRSTNAME="Ann")
    run_to_end(api, drain, ["c1"])
    fb.flush()
    counts = wait_until(
        lambda: (c := store.stats.day(profile["id"], day_of(now_ms(), store.tz)))["read"] and c
    )
    assert (counts["sent"], counts["delivered"], counts["read"]) == (1, 1, 1)


# -- before and after the tag retirement date ------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"TAG_RETIREMENT_DATE": "2099-01-01"}])
def test_before_the_date_tagged_messages_reach_people_outside_the_window(
    api, fb, drain, program, opted_in
):
    fb.configure(tags_retired_on="2099-01-01")
    program()
    opted_in("c1", last_interaction_ms=now_ms() - 72 * 3600_000, FIRSTNAME="Ann", ORDER_ID="9")
    _, result = run_to_end(api, drain, ["c1"])
    assert result["c1"]["outcome"] == "sent"
    assert result["c1"]["sent_as"] == {"kind": "tag", "tag": "POST_PURCHASE_UPDATE"}
    (sent,) = fb.sends()
    assert (sent["messaging_type"], sent["tag"]) == ("MESSAGE_TAG", "POST_PURCHASE_UPDATE")


@pytest.mark.parametrize("settings_overrides", [{"TAG_RETIREMENT_DATE": "2099-01-01"}])
def test_facebook_refuses_a_retired_tag_with_error_100(api, fb, drain, program, opted_in):
    program()  # our date says the tag still works; Facebook (the simulator) retired it already
    opted_in("c1", FIRSTNAME="Ann", ORDER_ID="9")
    _, result = run_to_end(api, drain, ["c1"])
    assert (result["c1"]["outcome"], result["c1"]["reason_code"], result["c1"]["sent_as"]) == (
        "failed",
        "invalid_request",
        None,
    )
    assert result["c1"]["detail"].startswith("#100 ")
    assert len(fb.sends()) == 1  # permanent: not retried


# -- Facebook's errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule,reason,attempts",
    [
        (
            {"code": 551, "message": "This person isn't available right now."},
            "recipient_unavailable",
            1,
        ),
        (
            {"code": 100, "subcode": 2018001, "message": "No matching user found"},
            "invalid_recipient",
            1,
        ),
        (
            {
                "code": 10,
                "subcode": 2018108,
                "message": "They can't receive your messages right now.",
            },
            "recipient_unavailable",
            1,
        ),
        (
            {"code": 200, "message": "Cannot message users who are not admins"},
            "app_not_reviewed",
            1,
        ),
        (
            {"code": 2, "http_status": 500, "message": "An unexpected error has occurred."},
            "facebook_unavailable",
            3,
        ),
        ({"code": 0, "http_status": 503}, "facebook_unavailable", 3),
    ],
)
def test_errors_fail_with_a_named_reason_after_the_right_number_of_attempts(
    api, fb, drain, program, opted_in, rule, reason, attempts
):
    program()
    psid = opted_in("c1", FIRSTNAME="Ann")
    fb.add_fault(recipient=psid, **rule)
    _, result = run_to_end(api, drain, ["c1"])
    assert (result["c1"]["outcome"], result["c1"]["reason_code"]) == ("failed", reason)
    assert len(fb.sends(recipient=psid)) == attempts


def test_transient_errors_are_retried_until_sent(api, fb, drain, program, opted_in):
    program()
    psid = opted_in("c1", FIRSTNAME="Ann")
    fb.add_fault(
        recipient=psid, code=1, http_status=500, message="An unknown error occurred", times=2
    )
    _, result = run_to_end(api, drain, ["c1"])
    assert result["c1"]["outcome"] == "sent"
    assert [s["status"] for s in fb.sends(recipient=psid)] == ["refused", "refused", "accepted"]


def test_rate_limit_error_slows_the_page_then_sends(api, fb, drain, store, program, opted_in, page):
    program()
    psid = opted_in("c1", FIRSTNAME="Ann")
    fb.add_fault(
        recipient=psid,
        code=613,
        subcode=2534040,
        message="(#613) Calls to this api have exceeded the rate limit.",
        times=1,
    )
    started = time.monotonic()
    _, result = run_to_end(api, drain, ["c1"])
    assert result["c1"]["outcome"] == "sent"
    first, second = fb.sends(recipient=psid)
    assert second["received_ms"] - first["received_ms"] >= 1900  # the Page rested ~2 s
    assert time.monotonic() - started < 10


def test_template_facebook_does_not_know_is_template_rejected(api, fb, drain, program, opted_in):
    program(template={**TEMPLATE, "name": "not_approved_here"})
    opted_in("c1", last_interaction_ms=now_ms() - 30 * 3600_000, ORDER_ID="1")
    _, result = run_to_end(api, drain, ["c1"])
    assert (result["c1"]["outcome"], result["c1"]["reason_code"]) == ("failed", "template_rejected")


def test_high_usage_header_rests_the_page_before_facebook_refuses(
    api, fb, drain, program, opted_in, page
):
    program()
    for cid in ("c1", "c2"):
        opted_in(cid, FIRSTNAME="Ann")
    fb.set_usage(page["id"], 95)
    _, result = run_to_end(api, drain, ["c1", "c2"])
    assert {o["outcome"] for o in result.values()} == {"sent"}
    first, second = sorted(s["received_ms"] for s in fb.sends())
    assert second - first >= 1900  # the usage header made the Page rest ~2 s


def test_outside_window_refusal_falls_through_to_the_template_once(
    api, fb, drain, store, program, opted_in, profile
):
    program(template=TEMPLATE)
    # We think the window is open; Facebook disagrees.
    psid = opted_in("c1", last_interaction_ms=now_ms() - 30 * 3600_000, ORDER_ID="42")
    store.redis.hset(keys.seen(profile["id"]), psid, now_ms())
    _, result = run_to_end(api, drain, ["c1"])
    assert result["c1"]["outcome"] == "sent"
    assert result["c1"]["sent_as"] == {"kind": "utility_template", "template": "order_update"}
    assert [(s["messaging_type"], s["status"]) for s in fb.sends()] == [
        ("UPDATE", "refused"),
        ("UTILITY", "accepted"),
    ]


def test_a_lost_answer_after_the_fall_through_is_settled_as_the_template(
    api, fb, drain, app, program, opted_in
):
    app.extensions["graph"].timeout = 0.3
    program(template=TEMPLATE)
    psid = opted_in("c1", ORDER_ID="42")
    fb.configure(echo=False)  # the test posts the echo itself
    fb.add_faults(
        [
            {
                "recipient": psid,
                "code": 10,
                "subcode": 2018278,
                "times": 1,
                "message": "(#10) This message is sent outside of allowed window.",
            },
            {"recipient": psid, "code": 2, "delay_ms": 800, "accept": True, "times": 1},
        ]
    )
    run_id, result = run_to_end(api, drain, ["c1"])
    assert (result["c1"]["outcome"], result["c1"]["sent_as"]) == ("unknown", None)
    (accepted,) = wait_until(lambda: fb.sends(status="accepted"))
    assert accepted["messaging_type"] == "UTILITY"
    fb.post_event(
        "echo",
        page_id=accepted["page_id"],
        psid=psid,
        mid=accepted["message_id"],
        metadata=accepted["metadata"],
    )
    settled = outcomes(api, run_id)["c1"]
    assert (settled["outcome"], settled["sent_as"]) == (
        "sent",
        {"kind": "utility_template", "template": "order_update"},
    )


def test_outside_window_refusal_without_template_is_a_warning(
    api, fb, drain, store, program, opted_in, profile
):
    program()
    psid = opted_in("c1", last_interaction_ms=now_ms() - 30 * 3600_000)
    store.redis.hset(keys.seen(profile["id"]), psid, now_ms())
    _, result = run_to_end(api, drain, ["c1"])
    assert (result["c1"]["outcome"], result["c1"]["reason_code"]) == (
        "warning",
        "outside_window_no_template",
    )
    assert len(fb.sends()) == 1


def test_dead_token_flips_health_once_and_holds_the_pages_other_sends(
    api, fb, drain, store, program, opted_in, profile, page
):
    program()
    for i in range(30):
        opted_in(f"c{i}", FIRSTNAME="Ann")
    fb.invalidate_page(page["id"])
    run_id, result = run_to_end(api, drain, [f"c{i}" for i in range(30)])
    assert {(o["outcome"], o["reason_code"]) for o in result.values()} == {
        ("failed", "token_invalid")
    }
    assert (
        len(fb.sends()) <= 16
    )  # at most the sends already in flight; the rest never called Facebook
    health = api("get", f"/profiles/{profile['id']}").get_json()
    assert health["health"] == "needs_reauth" and "#190" in health["health_reason"]
    # Later runs are held at once, without calling Facebook.
    before = len(fb.sends())
    _, again = run_to_end(api, drain, ["c1"], run_id="again")
    assert again["c1"]["reason_code"] == "token_invalid" and len(fb.sends()) == before


# -- at most once ----------------------------------------------------------------------------------


def test_timeout_after_facebook_accepted_is_unknown_until_the_echo_makes_it_sent(
    api, fb, drain, app, program, opted_in, profile
):
    def today_row() -> dict:
        return api("get", f"/profiles/{profile['id']}/stats").get_json()["days"][0]

    app.extensions["graph"].timeout = 0.3
    program()
    psid = opted_in("c1", FIRSTNAME="Ann")
    fb.configure(echo=False)  # hold the echo back so the unknown state can be seen
    fb.add_fault(recipient=psid, code=2, delay_ms=800, accept=True, times=1)
    run_id, result = run_to_end(api, drain, ["c1"])
    assert result["c1"]["outcome"] == "unknown"
    assert api("get", f"/runs/{run_id}").get_json()["state"] == "running"
    assert (today_row()["unconfirmed"], today_row()["sent"]) == (1, 0)  # seen, not invisible
    wait_until(lambda: fb.sends(status="accepted"))
    (accepted,) = fb.sends(status="accepted")
    answer = fb.post_event(
        "echo",
        page_id=accepted["page_id"],
        psid=psid,
        mid=accepted["message_id"],
        metadata=accepted["metadata"],
        text=accepted["text"],
    )
    assert answer["status"] == 200
    settled = outcomes(api, run_id)["c1"]
    assert (settled["outcome"], settled["message_id"]) == ("sent", accepted["message_id"])
    assert settled["sent_as"] == {"kind": "text"}  # kept with the claim: the echo does not say
    assert api("get", f"/runs/{run_id}").get_json()["state"] == "done"
    assert len(fb.sends()) == 1  # never resent
    assert (today_row()["unconfirmed"], today_row()["sent"]) == (0, 1)  # settled


@pytest.mark.parametrize("settings_overrides", [{"UNKNOWN_DEADLINE_SECONDS": "1"}])
def test_unknown_without_echo_becomes_failed_interrupted_after_the_deadline(
    api, fb, drain, app, store, program, opted_in, profile
):
    app.extensions["graph"].timeout = 0.3
    program()
    psid = opted_in("c1", FIRSTNAME="Ann")
    fb.add_fault(recipient=psid, code=2, delay_ms=800, times=1)  # Facebook never took it
    run_id, result = run_to_end(api, drain, ["c1"])
    assert result["c1"]["outcome"] == "unknown"
    wait_until(lambda: store.runs.expire_unknown(), timeout=5)
    settled = outcomes(api, run_id)["c1"]
    assert (settled["outcome"], settled["reason_code"]) == ("failed", "interrupted")
    counts = store.stats.day(profile["id"], day_of(now_ms(), store.tz))
    assert (counts["failed:interrupted"], counts["unconfirmed"]) == (1, 0)
    assert len(fb.sends()) == 1


def test_repeated_run_id_sends_nothing_twice(api, fb, drain, program, opted_in):
    program()
    opted_in("c1", FIRSTNAME="Ann")
    first = start_run(api, ["c1"], run_id="order-566701")
    again = start_run(api, ["c1"], run_id="order-566701")
    assert first.status_code == again.status_code == 202
    assert (first.get_json()["created"], again.get_json()["created"]) == (True, False)
    drain()
    start_run(api, ["c1"], run_id="order-566701")
    drain()
    assert len(fb.sends()) == 1


def test_a_contact_listed_twice_in_a_run_is_sent_once(api, fb, drain, program, opted_in):
    program()
    opted_in("c1", FIRSTNAME="Ann")
    answer = start_run(api, [{"id": "c1"}, {"id": "c1", "fields": {"FIRSTNAME": "Anne"}}])
    assert answer.get_json()["duplicates_ignored"] == 1
    drain()
    assert [s["text"] for s in fb.sends()] == ["Hi Anne, order  shipped."]


def test_run_id_reused_for_another_node_is_a_conflict(api, program, opted_in):
    program()
    start_run(api, ["c1"], run_id="r1")
    program(node_id="n2")
    answer = start_run(api, ["c1"], run_id="r1", node="n2")
    assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "run_id_conflict"


# -- the run API -----------------------------------------------------------------------------------


def test_runs_need_an_active_program_and_a_known_node(api, program):
    program(status="paused")
    answer = start_run(api, ["c1"])
    assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "program_not_active"
    assert start_run(api, ["c1"], node="nope").status_code == 404


@pytest.mark.parametrize(
    "body,problem",
    [
        ({"contacts": []}, "contacts"),
        ({"contacts": [{"id": "has space"}]}, "contacts"),
        ({"contacts": [{"id": "c1", "fields": {"FBOPTIN_001": "1"}}]}, "contacts"),
        ({"contacts": [{"id": f"c{i}"} for i in range(10_001)]}, "contacts"),
        ({"contacts": [{"id": "c1"}], "run_id": "bad id"}, "run_id"),
        ({"contacts": [{"id": "c1\n"}]}, "contacts"),  # `$` alone would let a final newline through
        ({"contacts": [{"id": "c1"}], "run_id": "r1\n"}, "run_id"),
        ({"contacts": [{"id": "c1"}, {"id": "c2", "fields": {"FIRSTNAME": 1}}]}, "contacts"),
        ({"contacts": [{"id": "c1"}, {"id": "c2", "extra": "x"}]}, "contacts"),
        ({"contacts": [{"id": "c1", "fields": None}]}, "contacts"),
    ],
)
def test_run_validation(api, program, body, problem, redis_client):
    program()
    before = set(redis_client.keys("*"))
    answer = api("post", "/programs/p1/nodes/n1/runs", json=body)
    assert answer.status_code == 422 and problem in answer.get_json()["error"]["details"]["fields"]
    assert set(redis_client.keys("*")) == before


def test_run_fields_are_merged_into_contacts(api, store, program, opted_in):
    program()
    opted_in("c1", FIRSTNAME="Ann", CITY="Paris")
    start_run(api, [{"id": "c1", "fields": {"FIRSTNAME": "Anne"}}])
    fields = store.contacts.get("c1")
    assert (fields["FIRSTNAME"], fields["CITY"]) == ("Anne", "Paris")


def test_run_outcomes_are_paged(api, drain, program):
    program()
    run_id, _ = run_to_end(api, drain, [f"c{i:03d}" for i in range(250)])
    seen, cursor = [], "0"
    while cursor is not None:
        page = api("get", f"/runs/{run_id}?cursor={cursor}&limit=100").get_json()
        seen += [c["id"] for c in page["contacts"]]
        cursor = page["next_cursor"]
    assert seen == [f"c{i:03d}" for i in range(250)]
    assert api("get", f"/runs/{run_id}?limit=0").status_code == 422
    assert api("get", "/runs/nope").status_code == 404


def test_batches_are_jobs_of_run_batch_size_not_one_per_contact(api, app, program):
    program()
    start_run(api, [f"c{i}" for i in range(450)])
    queue = app.extensions["rq_queue"]
    assert queue.count == 1  # the run is a chain: one batch queued, each queues the next
    job = queue.jobs[0]
    assert job.func_name == "jobs.runs.run_batch" and job.args[1] == 0


def test_preview_renders_and_sends_nothing(api, fb, program, opted_in, redis_client):
    program(template=TEMPLATE)
    opted_in("c1", FIRSTNAME="Ann", ORDER_ID="7")
    opted_in("c2", last_interaction_ms=now_ms() - 30 * 3600_000, ORDER_ID="8")
    before = {k: redis_client.type(k) for k in redis_client.keys("*")}
    answer = api(
        "post",
        "/programs/p1/nodes/n1/preview",
        json={
            "contacts": [{"id": "c1", "fields": {"FIRSTNAME": "Annie"}}, {"id": "c2"}, {"id": "c3"}]
        },
    )
    assert answer.status_code == 200
    preview = {c["id"]: c for c in answer.get_json()["contacts"]}
    assert (preview["c1"]["outcome"], preview["c1"]["text"]) == (
        "send",
        "Hi Annie, order 7 shipped.",
    )
    assert preview["c2"]["messaging_type"] == "UTILITY" and preview["c2"]["template"][
        "parameters"
    ] == ["8"]
    assert preview["c3"]["reason_code"] == "contact_unknown"
    assert fb.sends() == []
    assert {k: redis_client.type(k) for k in redis_client.keys("*")} == before
    assert redis_client.hget(keys.contact("c1"), "FIRSTNAME") == "Ann"


def test_preview_takes_a_runs_body_and_records_nothing_under_its_run_id(api, program, opted_in):
    program()
    opted_in("c1", FIRSTNAME="Ann")
    answer = api(
        "post",
        "/programs/p1/nodes/n1/preview",
        json={"run_id": "order-1", "contacts": [{"id": "c1"}]},
    )
    assert answer.status_code == 200 and answer.get_json()["contacts"][0]["outcome"] == "send"
    assert api("get", "/runs/order-1").status_code == 404
    bad = api(
        "post",
        "/programs/p1/nodes/n1/preview",
        json={"run_id": "bad id", "contacts": [{"id": "c1"}]},
    )
    assert bad.status_code == 422 and "run_id" in bad.get_json()["error"]["details"]["fields"]


def test_preview_limit_is_said_plainly(api, program):
    program()
    contacts = [{"id": f"c{i}"} for i in range(1000)]
    assert (
        api("post", "/programs/p1/nodes/n1/preview", json={"contacts": contacts}).status_code == 200
    )
    answer = api(
        "post", "/programs/p1/nodes/n1/preview", json={"contacts": contacts + [{"id": "one-more"}]}
    )
    assert answer.status_code == 422
    assert answer.get_json()["error"]["details"]["fields"] == {
        "contacts": ["at most 1000 contacts per preview; a run takes up to 10 000"]
    }


def test_run_ids_with_every_allowed_character_run(api, fb, drain, program, opted_in):
    """Run ids may hold . : @ (the API's id rule); RQ's job ids may not: still 202 and sent."""
    program()
    opted_in("c1", ORDER_ID="1")
    run_id, result = run_to_end(api, drain, ["c1"], run_id="order.2026-12:shop@eu")
    assert run_id == "order.2026-12:shop@eu" and result["c1"]["outcome"] == "sent"


def test_python_entry_point_for_the_program_engine(app, fb, drain, program, opted_in):
    from bot.engine import enqueue_run
    from bot.errors import Invalid

    program()
    opted_in("c1", FIRSTNAME="Ann")
    accepted = enqueue_run("p1", "n1", [{"id": "c1"}], run_id="py-1", app=app)
    assert accepted["run_id"] == "py-1" and accepted["created"] is True
    drain()
    assert len(fb.sends(status="accepted")) == 1
    with pytest.raises(Invalid) as caught:
        enqueue_run("p1", "n1", [], app=app)
    assert caught.value.code == "validation_failed" and "contacts" in caught.value.details["fields"]


def test_jobs_run_inside_the_app_and_flush_what_they_measured(
    api, store, fb, drain, program, opted_in
):
    """Each job runs as jobs.job.AppJob: inside the app (storage, the Graph client) and adding the
    Graph latencies it measured to the shared metrics when it ends (read here straight from
    Redis: a request to /metrics would flush this process's gatherings itself)."""

    def graph_calls() -> float:
        return store.metrics.read("graph_latency").get("count", 0.0)

    program()
    opted_in("c1", ORDER_ID="1")
    opted_in("c2", ORDER_ID="2")
    assert start_run(api, ["c1", "c2"]).status_code == 202
    before = graph_calls()
    drain()  # no request between it and the reading
    assert graph_calls() - before == len(fb.sends(status="accepted")) == 2


@pytest.mark.parametrize("settings_overrides", [{"SEND_RATE_PER_PAGE": "5"}])
def test_one_worker_sends_for_several_pages_at_once(
    api, fb, drain, store, settings_overrides, live_app
):
    """Each Page is paced on its own; a worker sending one Page's batch takes other Pages'
    queued batches too instead of letting them wait behind that pace."""
    now = now_ms()
    pages = []
    for name in ("A", "B"):
        page = fb.create_page(name=f"Page {name}")
        profile = api(
            "post",
            "/profiles",
            json={"name": name, "page_id": page["id"], "page_access_token": page["token"]},
        ).get_json()
        node = messenger_node(profile["id"])
        api("put", f"/programs/p{name}", json={"name": name, "status": "active", "nodes": [node]})
        psids = fb.add_people(page["id"], [{"last_interaction_ms": now} for _ in range(5)])
        store.inbound.apply(
            [
                Event("optin", page["id"], psid, now, profile=profile["id"], contact=f"{name}{i}")
                for i, psid in enumerate(psids)
            ]
        )
        api(
            "post",
            f"/programs/p{name}/nodes/n1/runs",
            json={"contacts": [{"id": f"{name}{i}"} for i in range(5)]},
        )
        pages.append(page["id"])
    drain()
    times = {p: sorted(s["received_ms"] for s in fb.sends(page_id=p)) for p in pages}
    assert all(len(t) == 5 for t in times.values())
    first, second = times[pages[0]], times[pages[1]]
    assert second[0] < first[-1], "the second Page waited for the first one's batch"
    for t in times.values():  # and each Page kept its own pace of 5/s
        assert t[-1] - t[0] >= 4 * 200 - 50


# -- how a shift spreads its threads over Pages ---------------------------------------------------


@pytest.fixture
def shift(store, settings):
    from jobs.shift import Shift

    made = Shift(
        store, settings, graph=None, token="t", lease_ms=60_000, on_batch_end=lambda *a: "done"
    )
    yield made
    made.recorder.close()
    made.leases.stop()


def open_batch(name: str, in_flight: int = 0, pending: int = 3, paused_ms: int = 0):
    from collections import deque
    from types import SimpleNamespace

    from jobs.shift import OpenBatch

    return OpenBatch(
        SimpleNamespace(run_id=name, profile_id=name),
        0,
        SimpleNamespace(paused_ms=paused_ms),
        [],
        deque(range(pending)),
        in_flight,
    )


def test_a_shift_sends_first_from_pages_with_nothing_in_flight_then_up_to_the_per_page_limit(
    shift, store
):
    shift._send_s = (
        0.05  # 50 ms sends at 20/s (a slot every 52 ms): 2 in flight keep a Page at its pace
    )
    assert store.rates.interval_us == 52_083 and shift._per_page_limit() == 2
    busy, idle, other, paused, empty = (
        open_batch("busy", in_flight=1),
        open_batch("idle"),
        open_batch("other"),
        open_batch("paused", paused_ms=5_000),
        open_batch("empty", pending=0),
    )
    shift.open = [busy, idle, other, paused, empty]
    taken = []
    while (batch := shift._next()) is not None:
        batch.in_flight += 1
        taken.append(batch.run.run_id)
    # Idle Pages first, then the least recently served; never a paused or empty batch, never a
    # third send on one Page where it would only wait for a slot.
    assert taken == ["idle", "other", "busy", "idle", "other"]
    assert {b.run.run_id: b.in_flight for b in shift.open} == {
        "paused": 0,
        "empty": 0,
        "busy": 2,
        "idle": 2,
        "other": 2,
    }


def test_the_per_page_limit_follows_the_measured_send_latency(shift):
    shift._send_s = 0.5  # Facebook answering slowly: more sends in flight keep the pace
    assert shift._per_page_limit() == 11
    shift._send_s = 0.001
    assert shift._per_page_limit() == 2


def test_outcomes_recorded_together_count_once(store):
    node = Node("n1", "p0", "ACCOUNT_UPDATE", "Hi")
    store.runs.create("r-many", "prog", node, {f"c{i}": {} for i in range(3)}, 10)
    outcomes = [
        store.runs.outcome("r-many", f"c{i}", "failed", reason="no_optin") for i in range(3)
    ]
    assert store.runs.finish_many(outcomes) == 3
    assert store.runs.finish_many(outcomes[:2]) == 0  # a repeated write changes nothing
    run = store.runs.get("r-many")
    assert run.counts["failed"] == 3 and run.state == "done"


def test_run_outcomes_and_batches_expire_with_their_run(
    app, api, drain, store, redis_client, program, opted_in
):
    """They come to exist after the run's TTLs were set; they get theirs as batches are set,
    and the first retention pass times the ones older code left without (once)."""
    program()
    opted_in("c1")
    run_id = api("post", "/programs/p1/nodes/n1/runs", json={"contacts": [{"id": "c1"}]})
    drain()
    run_id = run_id.get_json()["run_id"]
    for key in (keys.run_outcomes(run_id), keys.run_batches(run_id)):
        assert redis_client.exists(key) and redis_client.ttl(key) > 0, key
    # left by older code: one whose run is still kept, one whose run is gone
    redis_client.persist(keys.run_outcomes(run_id))
    redis_client.hset(keys.run_batches("gone"), "0", "done")
    with app.app_context():
        assert retention_pass()["run_keys_timed"] == 2
    assert 0 < redis_client.ttl(keys.run_outcomes(run_id)) <= redis_client.ttl(keys.run(run_id))
    assert not redis_client.exists(keys.run_batches("gone"))
    redis_client.persist(keys.run_outcomes(run_id))
    with app.app_context():
        assert retention_pass()["run_keys_timed"] == 0  # a one-off: later passes do not scan
