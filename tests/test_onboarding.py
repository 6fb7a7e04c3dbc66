"""Connecting a Page through Facebook Login (the simulator's), each refusal, reauthorisation,
owner sign-in, and the periodic token and subscription check."""

from __future__ import annotations

import logging
import re

import pytest
import requests

from tests.test_pages import sign_in_operator

ADMIN, EDITOR, MODERATOR = "admin", "editor", "moderator"


def via_facebook(client, fb, answer, user_id: str | None = None, cancel: bool = False):
    """Follow our redirect to the Facebook dialog, log in there (or cancel), come back."""
    assert answer.status_code == 302, answer.get_data(as_text=True)
    dialog = answer.headers["Location"]
    assert "/dialog/oauth?" in dialog and "state=" in dialog and "pages_messaging" in dialog
    if cancel:
        page = requests.get(dialog, timeout=5)
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
        back = requests.post(
            dialog.split("?")[0], data={**form, "cancel": "1"}, allow_redirects=False, timeout=5
        )
    else:
        fb.set_auto_login(user_id)
        back = requests.get(dialog, allow_redirects=False, timeout=5)
    callback = back.headers["Location"]
    assert callback.startswith("http://localhost/facebook/callback?")
    return client.get(callback.removeprefix("http://localhost"))


@pytest.fixture
def operator(client):
    return sign_in_operator(client)


def start_connect(client, csrf, name="Bakery"):
    return client.post("/profiles/new", data={"name": name, "csrf_token": csrf})


def choose_page(client, csrf, page_id, name="Bakery", status="enabled"):
    return client.post(
        "/profiles/new/save",
        data={"page_id": page_id, "name": name, "status": status, "csrf_token": csrf},
    )


def flashes(client, path) -> str:
    return client.get(path).get_data(as_text=True)


def test_full_onboarding_creates_an_encrypted_subscribed_profile(
    client, fb, store, redis_client, operator, caplog
):
    caplog.set_level(logging.DEBUG)
    ann = fb.create_user(
        "Ann",
        pages=[{"name": "Ann's Bakery", "role": ADMIN}, {"name": "Ann's Blog", "role": "analyst"}],
    )
    page = ann["pages"][0]
    back = via_facebook(client, fb, start_connect(client, operator), ann["id"])
    assert back.headers["Location"] == "/profiles/new"
    picker = client.get("/profiles/new").get_data(as_text=True)
    assert (
        "Ann&#39;s Bakery — Admin" in picker
        and "Ann&#39;s Blog — Analyst (cannot connect)" in picker
    )
    saved = choose_page(client, operator, page["id"])
    assert saved.status_code == 302 and saved.headers["Location"].startswith("/profiles/")
    profile = store.profiles.get(saved.headers["Location"].rsplit("/", 1)[1])
    assert (profile.name, profile.page_id, profile.page_name, profile.status) == (
        "Bakery",
        page["id"],
        "Ann's Bakery",
        "enabled",
    )
    assert profile.connected_by == ann["id"] and profile.optin_field == "FBOPTIN_001"
    assert set(fb.page(page["id"])["subscribed_fields"]) >= {
        "messages",
        "messaging_optins",
        "message_deliveries",
    }
    assert store.profiles.page_token(profile.id) == page["token"]
    html = client.get(f"/profiles/{profile.id}").get_data(as_text=True)
    raw = str({k: redis_client.dump(k) for k in redis_client.keys("*")})
    assert (
        page["token"] not in html + raw + caplog.text
    )  # never shown, never stored in clear, never logged
    assert (
        client.get("/profiles/new").get_data(as_text=True).count("Log in to Facebook") >= 1
    )  # login consumed


@pytest.mark.parametrize(
    "role,word", [("advertiser", "you are Advertiser"), ("analyst", "you are Analyst")]
)
def test_refused_when_the_role_is_not_enough_naming_the_role(
    client, fb, store, operator, role, word
):
    bob = fb.create_user("Bob", pages=[{"name": "Bob's Page", "role": role}])
    via_facebook(client, fb, start_connect(client, operator), bob["id"])
    refused = choose_page(client, operator, bob["pages"][0]["id"])
    assert refused.headers["Location"] == "/profiles/new"
    page = flashes(client, "/profiles/new")
    assert word in page and "Admin, Editor or Moderator" in page
    assert store.profiles.list() == []


@pytest.mark.parametrize("role", [EDITOR, MODERATOR])
def test_editor_and_moderator_may_connect(client, fb, store, operator, role):
    cat = fb.create_user("Cat", pages=[{"name": "Cat's Page", "role": role}])
    via_facebook(client, fb, start_connect(client, operator), cat["id"])
    assert (
        choose_page(client, operator, cat["pages"][0]["id"])
        .headers["Location"]
        .startswith("/profiles/")
    )
    assert len(store.profiles.list()) == 1


def test_refused_when_the_page_already_has_a_profile(client, fb, store, operator):
    ann = fb.create_user("Ann", pages=[{"name": "Shared Page", "role": ADMIN}])
    page = ann["pages"][0]
    existing = store.profiles.create(
        name="First", page_id=page["id"], page_name="Shared Page", page_token=page["token"]
    )
    via_facebook(client, fb, start_connect(client, operator), ann["id"])
    choose_page(client, operator, page["id"])
    assert f"The Page “Shared Page” already has the profile “{existing.name}”" in flashes(
        client, "/profiles/new"
    )
    assert len(store.profiles.list()) == 1


def test_refused_when_facebook_refuses(client, fb, store, operator):
    ann = fb.create_user("Ann", pages=[{"name": "Page", "role": ADMIN}])
    via_facebook(client, fb, start_connect(client, operator), ann["id"])
    fb.invalidate_page(ann["pages"][0]["id"])  # the token dies between login and save
    choose_page(client, operator, ann["pages"][0]["id"])
    assert "Facebook refused the Page access token" in flashes(client, "/profiles/new")
    assert store.profiles.list() == []


def test_a_page_not_in_the_login_is_refused(client, fb, store, operator):
    ann = fb.create_user("Ann", pages=[{"name": "Page", "role": ADMIN}])
    other = fb.create_page(name="Someone else's")
    via_facebook(client, fb, start_connect(client, operator), ann["id"])
    choose_page(client, operator, other["id"])
    assert (
        "no role on that Page" in flashes(client, "/profiles/new") and store.profiles.list() == []
    )


def test_cancel_and_forged_state_change_nothing(client, fb, store, operator):
    fb.create_user("Ann", pages=[{"name": "Page", "role": ADMIN}])
    back = via_facebook(client, fb, start_connect(client, operator), cancel=True)
    assert "cancelled" in flashes(client, back.headers["Location"])
    start_connect(client, operator)
    answer = client.get("/facebook/callback?code=stolen&state=forged")
    assert "did not start here" in flashes(client, answer.headers["Location"])
    assert store.users.get("any") is None and store.profiles.list() == []


def test_page_owner_signs_in_with_facebook_and_sees_only_their_pages(client, fb, store):
    ann = fb.create_user("Ann", pages=[{"name": "Ann's Page", "role": MODERATOR}])
    other = fb.create_page(name="Other Page")
    mine = store.profiles.create(
        name="Mine",
        page_id=ann["pages"][0]["id"],
        page_name="Ann's Page",
        page_token=ann["pages"][0]["token"],
    )
    store.profiles.create(
        name="Theirs", page_id=other["id"], page_name="Other Page", page_token=other["token"]
    )
    back = via_facebook(client, fb, client.get("/login/facebook"), ann["id"])
    assert back.headers["Location"] == "/profiles"
    listing = client.get("/profiles").get_data(as_text=True)
    assert "Mine" in listing and "Theirs" not in listing and "Ann" in listing
    assert client.get(f"/profiles/{mine.id}").status_code == 200


def test_reauthorise_a_profile_whose_token_died(client, fb, store, app, operator):
    ann = fb.create_user("Ann", pages=[{"name": "Page", "role": ADMIN}])
    via_facebook(client, fb, start_connect(client, operator), ann["id"])
    profile_id = (
        choose_page(client, operator, ann["pages"][0]["id"]).headers["Location"].rsplit("/", 1)[1]
    )
    fb.invalidate_user(ann["id"])  # a password change kills the Page tokens obtained through Ann
    from jobs.profile_checks import check_profiles

    with app.app_context():
        assert check_profiles(spacing_s=0)["needs_reauth"] == 1
    page = client.get(f"/profiles/{profile_id}").get_data(as_text=True)
    assert "needs reauth" in page and 'id="reauthorize"' in page
    back = via_facebook(
        client,
        fb,
        client.post(f"/profiles/{profile_id}/reauthorize", data={"csrf_token": operator}),
        ann["id"],
    )
    assert "reauthorised" in flashes(client, back.headers["Location"])
    profile = store.profiles.get(profile_id)
    assert profile.health == "ok"
    with app.app_context():
        assert check_profiles(spacing_s=0) == {
            "checked": 1,
            "needs_reauth": 0,
            "resubscribed": 0,
            "skipped": 0,
        }


def test_periodic_check_resubscribes_the_app_and_flags_dead_tokens_once(app, fb, store, caplog):
    from jobs.profile_checks import check_profiles

    page = fb.create_page(name="Page")
    profile = store.profiles.create(
        name="P", page_id=page["id"], page_name="Page", page_token=page["token"]
    )
    fb.unsubscribe_page(page["id"])  # Facebook's "Webhooks Disabled" after an hour of failures
    with app.app_context():
        assert check_profiles(spacing_s=0)["resubscribed"] == 1
    assert "messages" in fb.page(page["id"])["subscribed_fields"]
    fb.invalidate_page(page["id"])
    with app.app_context():
        assert check_profiles(spacing_s=0)["needs_reauth"] == 1
    flagged_at = store.profiles.get(profile.id).health_checked_at
    assert store.profiles.get(profile.id).health == "needs_reauth"
    assert not store.profiles.flag_unhealthy(profile.id, "needs_reauth", "again")  # flips once
    assert store.profiles.get(profile.id).health_checked_at == flagged_at


def test_periodic_checks_are_small_spaced_jobs_off_the_send_queue(app, fb, store, drain):
    from jobs.profile_checks import queue_checks

    for name in ("A", "B", "C"):
        page = fb.create_page(name=name)
        store.profiles.create(
            name=name, page_id=page["id"], page_name=name, page_token=page["token"]
        )
    with app.app_context():
        assert queue_checks() == 3
    assert app.extensions["rq_queue"].count == 0  # sends are never held up by checks
    from rq.registry import ScheduledJobRegistry

    scheduled = ScheduledJobRegistry(queue=app.extensions["rq_maintenance"])
    assert len(scheduled.get_job_ids()) + app.extensions["rq_maintenance"].count == 3
