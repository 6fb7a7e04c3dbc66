"""Protecting the Page: a profile's sending pauses on a spike of refusals or a restriction, one
probe send tests it after the cool-down, the owner can resume by hand; people Facebook says
cannot be reached are left alone until they get in touch.

Runs go through the API, RQ (drained in this process), the real Redis and the simulator over
HTTP, whose fault rules play Facebook's refusals.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from bot import policy
from storage import keys
from tests.run_fixtures import now_ms, run_to_end

FAST = {"SEND_CONCURRENCY": "1", "SEND_RATE_PER_PAGE": "200", "BREAKER_MIN_SENDS": "10"}
UNAVAILABLE = {"code": 551, "message": "This person isn't available right now."}
RESTRICTED = {"code": 10, "subcode": 1893063, "message": "You are temporarily restricted"}


def contacts(opted_in, count: int, prefix: str = "c") -> list[str]:
    ids = [f"{prefix}{i}" for i in range(count)]
    for cid in ids:
        opted_in(cid, ORDER_ID="1")
    return ids


def reasons(result: dict) -> dict[str, int]:
    counted: dict[str, int] = {}
    for outcome in result.values():
        code = outcome["reason_code"] or outcome["outcome"]
        counted[code] = counted.get(code, 0) + 1
    return counted


def sending(api, profile) -> dict:
    return api("get", f"/profiles/{profile['id']}").get_json()["sending"]


def cool_down_over(store, profile) -> None:
    """As if the pause's cool-down had passed (tests do not wait 30 minutes)."""
    store.redis.hset(keys.sending(profile["id"]), "resume_at", now_ms() - 1)


@pytest.mark.parametrize("settings_overrides", [FAST])
def test_a_spike_of_unreachable_recipients_pauses_sending(
    api, client, fb, drain, store, page, profile, program, opted_in, settings_overrides
):
    program()
    fb.add_fault(page_id=page["id"], **UNAVAILABLE)
    _, result = run_to_end(api, drain, contacts(opted_in, 30))
    calls = len(fb.sends())
    # 10 of 10 sends refused trips it; a send may leave while that outcome is being written.
    assert 10 <= calls <= 12
    assert reasons(result) == {"recipient_unavailable": calls, "sending_paused": 30 - calls}
    state = sending(api, profile)
    assert state["state"] == "paused" and state["reason"] == "error_rate"
    assert state["detail"].startswith("10 of the last 10 sends refused")
    assert "could not be reached" in state["message"] and state["advice"]
    paused_for = (_ms(state["resume_at"]) - _ms(state["since"])) / 60_000
    assert paused_for == 30  # BREAKER_COOLDOWN_MINUTES
    # While paused, a later run calls Facebook for nobody, and says why.
    fb.clear_faults()
    _, later = run_to_end(api, drain, contacts(opted_in, 5, "d"), run_id="later")
    assert reasons(later) == {"sending_paused": 5} and len(fb.sends()) == calls
    assert 'messenger_sending_paused_total{reason="error_rate"} 1.0' in client.get(
        "/metrics"
    ).get_data(as_text=True)
    day = store.stats.day(profile["id"], _today(store))
    assert day["failed:sending_paused"] == 30 - calls + 5


@pytest.mark.parametrize("settings_overrides", [FAST])
def test_refusals_below_the_threshold_do_not_pause(
    api, fb, drain, page, profile, program, opted_in, settings_overrides
):
    program()
    people = [f"c{i}" for i in range(20)]
    psids = [opted_in(cid, ORDER_ID="1") for cid in people]
    for psid in psids[:9]:  # 9 of 20 refused: 45 % < 50 %
        fb.add_fault(recipient=psid, **UNAVAILABLE)
    _, result = run_to_end(api, drain, people)
    assert reasons(result) == {"recipient_unavailable": 9, "sent": 11}
    assert sending(api, profile)["state"] == "open"


@pytest.mark.parametrize("settings_overrides", [FAST])
def test_a_page_restriction_pauses_at_once_and_keeps_its_own_reason(
    api, fb, drain, store, page, profile, program, opted_in, settings_overrides
):
    program()
    fb.add_fault(page_id=page["id"], times=1, **RESTRICTED)
    _, result = run_to_end(api, drain, contacts(opted_in, 5))
    assert reasons(result) == {"page_blocked": 1, "sending_paused": 4}
    assert len(fb.sends()) == 1  # the one Facebook refused; nobody after it
    state = sending(api, profile)
    assert state["state"] == "paused" and state["reason"] == "page_blocked"
    assert "restricted" in state["detail"] and state["resume_at"]
    assert store.profiles.get(profile["id"]).health == "ok"  # the token is fine


@pytest.mark.parametrize("settings_overrides", [FAST])
def test_after_the_cool_down_one_probe_resumes_sending(
    api,
    fb,
    drain,
    store,
    page,
    profile,
    program,
    opted_in,
    settings_overrides,
    paused_by_a_restriction,
):
    paused_by_a_restriction()
    cool_down_over(store, profile)
    _, result = run_to_end(api, drain, contacts(opted_in, 4, "p"), run_id="probe")
    assert reasons(result) == {"sent": 4}  # the probe was accepted: the rest went too
    assert sending(api, profile)["state"] == "open"


@pytest.mark.parametrize("settings_overrides", [FAST])
def test_a_refused_probe_pauses_twice_as_long(
    api,
    fb,
    drain,
    store,
    page,
    profile,
    program,
    opted_in,
    settings_overrides,
    paused_by_a_restriction,
):
    paused_by_a_restriction()
    cool_down_over(store, profile)
    fb.add_fault(page_id=page["id"], times=1, **RESTRICTED)
    before = len(fb.sends())
    _, result = run_to_end(api, drain, contacts(opted_in, 3, "p"), run_id="probe")
    assert reasons(result) == {"page_blocked": 1, "sending_paused": 2}
    assert len(fb.sends()) == before + 1  # only the probe
    state = sending(api, profile)
    assert state["state"] == "paused"
    assert (_ms(state["resume_at"]) - _ms(state["since"])) / 60_000 == 60


@pytest.mark.parametrize("settings_overrides", [FAST])
def test_one_probe_at_a_time_and_a_lost_probe_is_replaced(
    api,
    fb,
    drain,
    store,
    page,
    profile,
    program,
    opted_in,
    settings_overrides,
    paused_by_a_restriction,
):
    """While another probe's answer is not known, sends wait for it instead of failing; a probe
    that never ends (its worker died) is replaced by the next send after PROBE_TIMEOUT_MS."""
    paused_by_a_restriction()
    lost_probe_ends_at = now_ms() + 1500
    store.redis.hset(
        keys.sending(profile["id"]),
        mapping={
            "state": "probing",
            "probe": "gone-run\x1fx",
            "probe_at": lost_probe_ends_at - policy.PROBE_TIMEOUT_MS,
        },
    )
    before = len(fb.sends())
    _, result = run_to_end(api, drain, contacts(opted_in, 3, "p"), run_id="while-probing")
    assert reasons(result) == {"sent": 3}
    first_send_ms = min(s["timestamp_ms"] for s in fb.sends()[before:])
    assert first_send_ms >= lost_probe_ends_at - 50  # nothing left while the probe was out
    assert sending(api, profile)["state"] == "open"


@pytest.mark.parametrize("settings_overrides", [FAST])
def test_resume_by_hand_whatever_paused_it(
    api, fb, drain, page, profile, program, opted_in, post_webhook_to_profile, settings_overrides
):
    program()
    post_webhook_to_profile("block")  # Facebook's policy-enforcement block: no probe time
    assert sending(api, profile)["reason"] == "policy_block"
    assert sending(api, profile)["resume_at"] is None
    answer = api("post", f"/profiles/{profile['id']}/resume")
    assert answer.status_code == 200 and answer.get_json()["sending"]["state"] == "open"
    _, result = run_to_end(api, drain, contacts(opted_in, 2))
    assert reasons(result) == {"sent": 2}
    # Facebook still refuses: the next refusal pauses it again.
    fb.add_fault(page_id=page["id"], times=1, **RESTRICTED)
    _, again = run_to_end(api, drain, contacts(opted_in, 2, "e"), run_id="again")
    assert reasons(again) == {"page_blocked": 1, "sending_paused": 1}
    assert api("post", "/profiles/999/resume").status_code == 404


# -- unreachable recipients ---------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [FAST])
@pytest.mark.parametrize(
    "refusal",
    [
        UNAVAILABLE,
        {"code": 10, "subcode": 2018108, "message": "They can't receive your messages right now."},
    ],
)
def test_an_unreachable_person_is_left_alone_until_they_get_in_touch(
    api, fb, drain, store, page, profile, program, opted_in, refusal, settings_overrides
):
    program()
    psid = opted_in("c1", ORDER_ID="1")
    fb.add_fault(recipient=psid, times=1, **refusal)
    _, first = run_to_end(api, drain, ["c1"], run_id="first")
    assert first["c1"]["outcome"] == "failed"
    calls = len(fb.sends())
    _, second = run_to_end(api, drain, ["c1"], run_id="second")
    assert second["c1"]["outcome"] == "warning"
    assert second["c1"]["reason_code"] == "recipient_unreachable"
    assert len(fb.sends()) == calls  # no Facebook call
    preview = api("post", "/programs/p1/nodes/n1/preview", json={"contacts": [{"id": "c1"}]})
    assert preview.get_json()["contacts"][0]["reason_code"] == "recipient_unreachable"
    day = store.stats.day(profile["id"], _today(store))
    assert day["warning:recipient_unreachable"] == 1
    # The person writes to the Page: lifted at once.
    assert fb.post_event("message", page_id=page["id"], psid=psid, text="hi")["status"] == 200
    _, third = run_to_end(api, drain, ["c1"], run_id="third")
    assert third["c1"]["outcome"] == "sent"


@pytest.mark.parametrize("settings_overrides", [{**FAST, "UNREACHABLE_DAYS": "30"}])
def test_unreachable_people_are_forgotten_when_their_time_is_over(
    api, fb, drain, store, page, profile, program, opted_in, settings_overrides
):
    program()
    psid = opted_in("c1", ORDER_ID="1")
    fb.add_fault(recipient=psid, times=1, **UNAVAILABLE)
    run_to_end(api, drain, ["c1"])
    until = store.sending.unreachable_until(profile["id"], [psid])[psid]
    assert abs(until - now_ms() - 30 * 86_400_000) < 60_000
    assert store.sending.trim_unreachable(profile["id"], now_ms=until - 1) == 0
    assert store.sending.trim_unreachable(profile["id"], now_ms=until) == 1
    _, later = run_to_end(api, drain, ["c1"], run_id="later")
    assert later["c1"]["outcome"] == "sent"


@pytest.fixture
def paused_by_a_restriction(api, fb, drain, page, program, opted_in):
    """Pause the profile's sending: Facebook restricts the Page on a run's first send."""

    def pause() -> None:
        program()
        fb.add_fault(page_id=page["id"], times=1, **RESTRICTED)
        run_to_end(api, drain, contacts(opted_in, 2))

    return pause


@pytest.fixture
def post_webhook_to_profile(fb, page):
    def post(action: str) -> None:
        answer = fb.post_event("policy_block", page_id=page["id"], action=action)
        assert answer["status"] == 200

    return post


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _today(store) -> str:
    return datetime.now(store.tz).date().isoformat()
