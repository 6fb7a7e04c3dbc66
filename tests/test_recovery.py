"""Recover what an outage failed: a new token through the API, then exactly the failed contacts
of the window sent again, once, each judged again now; the original run and the statistics
say so. Real Redis, RQ drained in this process, the simulator over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.run_fixtures import outcomes, run_to_end, start_run
from tests.test_pages import sign_in_operator

ONE = {"SEND_CONCURRENCY": "1", "SEND_RATE_PER_PAGE": "200"}
TOKEN_DIED = {"code": 190, "subcode": 460, "message": "Error validating access token"}


def iso(when: datetime) -> str:
    return when.isoformat()


def a_minute_ago() -> str:
    return iso(datetime.now(UTC) - timedelta(minutes=1))


@pytest.mark.parametrize("settings_overrides", [ONE])
def test_a_token_outage_new_token_then_recover_sends_exactly_those_once(
    api, fb, drain, store, page, profile, program, opted_in, settings_overrides
):
    program()
    psids = {cid: opted_in(cid, ORDER_ID="1") for cid in ("c1", "c2", "c3", "c4", "c5")}
    since = a_minute_ago()
    fb.add_fault(recipient=psids["c3"], times=1, **TOKEN_DIED)  # the token dies mid-run
    run_id, first = run_to_end(api, drain, list(psids))
    assert {c: o["reason_code"] or o["outcome"] for c, o in first.items()} == {
        "c1": "sent",
        "c2": "sent",
        "c3": "token_invalid",
        "c4": "token_invalid",
        "c5": "token_invalid",
    }
    assert api("get", f"/profiles/{profile['id']}").get_json()["health"] == "needs_reauth"

    # A token of another Page is refused; the Page's own is checked with Facebook and stored.
    other = fb.create_page(name="Other")
    wrong = api("patch", f"/profiles/{profile['id']}", json={"page_access_token": other["token"]})
    assert wrong.status_code == 422  # Facebook refuses another Page's token for this Page
    assert wrong.get_json()["error"]["code"] in ("page_mismatch", "page_not_accessible")
    assert store.profiles.get(profile["id"]).health == "needs_reauth"  # nothing changed
    fixed = api("patch", f"/profiles/{profile['id']}", json={"page_access_token": page["token"]})
    assert fixed.status_code == 200 and fixed.get_json()["health"] == "ok"
    assert "page_access_token" not in fixed.get_json()

    # c5 lost their opt-in meanwhile: judged again now, they get a warning, not a send.
    store.contacts.merge_many({"c5": {profile["optin_field"]: ""}})
    sends_before = len(fb.sends(status="accepted"))
    asked = {"since": since}
    started = api("post", f"/profiles/{profile['id']}/recover", json=asked)
    assert started.status_code == 202, started.get_json()
    recovery = started.get_json()
    assert recovery["contacts"] == 3 and recovery["status_url"].endswith(recovery["recovery_id"])
    again = api("post", f"/profiles/{profile['id']}/recover", json=asked)
    assert again.status_code == 200 and again.get_json() == recovery  # the same recovery
    drain()
    assert len(fb.sends(status="accepted")) == sends_before + 2  # c3 and c4, once each
    resent = sorted(s["recipient"]["id"] for s in fb.sends(status="accepted")[sends_before:])
    assert resent == sorted([psids["c3"], psids["c4"]])

    status = api("get", recovery["status_url"].removeprefix("/api/v1")).get_json()
    assert status["state"] == "done" and status["contacts"] == 3
    assert status["counts"] == {"sent": 2, "warning": 1, "failed": 0, "pending": 0}
    assert [r["recovers_run"] for r in status["runs"]] == [run_id]
    assert {o["id"]: o["outcome"] for o in status["outcomes"]} == {
        "c3": "sent",
        "c4": "sent",
        "c5": "warning",
    }
    # The original run says which contacts were sent again, and how that ended.
    original = outcomes(api, run_id)
    assert "recovered_by" not in original["c1"]
    assert original["c3"]["outcome"] == "failed"  # what happened then stays as it was
    assert original["c3"]["recovered_by"] == recovery["recovery_id"]
    assert original["c3"]["recovery"]["outcome"] == "sent"
    assert original["c5"]["recovery"]["reason_code"] == "no_optin"
    # The statistics: the failures stay on their day, saying 3 were sent again.
    day = api("get", f"/profiles/{profile['id']}/stats").get_json()["days"][0]
    assert (day["sent"], day["failed"], day["recovered"], day["warning"]) == (4, 3, 3, 1)

    # Asked again after it is done: still the same recovery, nobody sent twice.
    api("post", f"/profiles/{profile['id']}/recover", json=asked)
    drain()
    assert len(fb.sends(status="accepted")) == sends_before + 2
    # Another window over the same runs finds nothing left to recover.
    wider = {"since": iso(datetime.now(UTC) - timedelta(hours=1))}
    later = api("post", f"/profiles/{profile['id']}/recover", json=wider).get_json()
    assert later["recovery_id"] != recovery["recovery_id"] and later["contacts"] == 0


@pytest.mark.parametrize("settings_overrides", [ONE])
def test_only_recoverable_failures_and_interrupted_only_when_asked(
    api, fb, drain, store, page, profile, program, opted_in, settings_overrides
):
    program()
    for cid in ("c1", "c2", "c3", "c4", "c5", "c6"):
        opted_in(cid, ORDER_ID="1")
    since = a_minute_ago()
    run_id = start_run(api, ["c1", "c2", "c3", "c4", "c5", "c6"]).get_json()["run_id"]
    # Settled by hand before its job runs (the job then finds nobody left to send).
    settle = store.runs.finish
    settle(run_id, "c1", "sent", message_id="m.1", recipient="r1")
    settle(run_id, "c2", "warning", reason="no_optin")
    settle(run_id, "c3", "failed", reason="interrupted")
    settle(run_id, "c4", "failed", reason="recipient_unavailable")
    settle(run_id, "c5", "failed", reason="facebook_unavailable")
    store.runs.claim(run_id, "c6", deadline_ms=2**40)
    store.runs.mark_unknown(run_id, ["c6"])
    drain()
    before = len(fb.sends())

    plain = api("post", f"/profiles/{profile['id']}/recover", json={"since": since}).get_json()
    assert plain["contacts"] == 1  # c5: never the sent, warned, unknown or unreachable ones
    with_interrupted = api(
        "post",
        f"/profiles/{profile['id']}/recover",
        json={"since": since, "include_interrupted": True},
    ).get_json()
    assert with_interrupted["recovery_id"] != plain["recovery_id"]
    assert with_interrupted["contacts"] == 1  # c3; c5 is already being recovered
    drain()
    sent_again = {s["recipient"]["id"] for s in fb.sends()[before:]}
    assert len(fb.sends()) == before + 2
    original = outcomes(api, run_id)
    assert {c for c, o in original.items() if "recovered_by" in o} == {"c3", "c5"}
    assert sent_again == {store.contacts.get(c)[profile["optin_field"]] for c in ("c3", "c5")}


def test_recover_refuses_what_it_cannot_do(api, profile):
    url = f"/profiles/{profile['id']}/recover"
    future = iso(datetime.now(UTC) + timedelta(hours=1))
    assert api("post", url, json={"since": future}).status_code == 422
    backwards = {"since": a_minute_ago(), "until": iso(datetime.now(UTC) - timedelta(hours=1))}
    answer = api("post", url, json=backwards)
    assert answer.status_code == 422 and "until" in answer.get_json()["error"]["details"]["fields"]
    assert api("post", url, json={"since": "yesterday"}).status_code == 422
    assert api("post", url, json={}).status_code == 422
    assert api("post", "/profiles/999/recover", json={"since": a_minute_ago()}).status_code == 404
    assert api("get", "/recoveries/rec_nothing").status_code == 404


@pytest.mark.parametrize("settings_overrides", [ONE])
def test_the_profile_page_counts_recovers_and_shows_the_progress(
    api, client, fb, drain, page, profile, program, opted_in, settings_overrides
):
    program()
    psids = {cid: opted_in(cid, ORDER_ID="1") for cid in ("c1", "c2", "c3")}
    fb.add_fault(recipient=psids["c2"], times=1, **TOKEN_DIED)
    run_to_end(api, drain, list(psids))
    api("patch", f"/profiles/{profile['id']}", json={"page_access_token": page["token"]})
    csrf = sign_in_operator(client)
    shown = client.get(f"/profiles/{profile['id']}").get_data(as_text=True)
    assert 'id="recover-link"' in shown
    since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")
    counted = client.get(f"/profiles/{profile['id']}/recover?since={since}&count=1")
    text = counted.get_data(as_text=True)
    assert "<strong>2</strong> contacts would be sent again" in text  # c2 and c3
    assert "may have delivered it" in text  # what ticking "interrupted" risks, said first
    answer = client.post(
        f"/profiles/{profile['id']}/recover", data={"since": since, "csrf_token": csrf}
    )
    assert answer.status_code == 302 and "/recoveries/rec_" in answer.headers["Location"]
    progress = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert 'http-equiv="refresh"' in progress  # not done yet: the page refreshes itself
    drain()
    done = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert 'id="recovery-state">done' in done and 'http-equiv="refresh"' not in done
    assert "<dt>Sent</dt><dd>2</dd>" in done
    table = client.get(f"/profiles/{profile['id']}/stats").get_data(as_text=True)
    assert "(2 sent again)" in table
    csv = client.get(f"/profiles/{profile['id']}/stats.csv").get_data(as_text=True).splitlines()
    header, row = csv[0].split(","), csv[1].split(",")
    assert dict(zip(header, row, strict=False))["recovered"] == "2"
    refused = client.post(
        f"/profiles/{profile['id']}/recover", data={"since": "tomorrow", "csrf_token": csrf}
    )
    assert refused.status_code == 302 and refused.headers["Location"].endswith("/recover")
