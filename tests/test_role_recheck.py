"""Access that follows Facebook: a page owner's roles are asked again with their own login token
once older than ROLE_RECHECK_SECONDS and before every change to a profile; a removed or lowered
role loses access at once, a dead login ends the session, an unreachable Facebook keeps the last
answer one interval more but fails changes closed. Facebook is the simulator over HTTP.

Apps with other settings share the test's Redis and session secret, so the same signed-in
browser (its cookie) can be sent to an app whose interval is shorter or whose Facebook is down.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bot.app import create_app
from storage import keys
from storage.embedded import free_port
from tests.conftest import make_settings
from tests.test_onboarding import via_facebook

COOKIE = "messenger_session"
ANALYST = ["ANALYZE"]
ADMIN = ["MANAGE", "CREATE_CONTENT", "MODERATE", "MESSAGING", "ADVERTISE", "ANALYZE"]


@pytest.fixture
def owner(client, fb, store):
    """Ann, Admin of "Ann's Bakery" (which has a profile), signed in through Facebook Login."""
    ann = fb.create_user("Ann", pages=[{"name": "Ann's Bakery", "role": "admin"}])
    page = ann["pages"][0]
    profile = store.profiles.create(
        name="Bakery updates", page_id=page["id"], page_name=page["name"], page_token=page["token"]
    )
    assert via_facebook(client, fb, client.get("/login/facebook"), ann["id"]).status_code == 302
    with client.session_transaction() as session:
        csrf = session["csrf"]
    return {"id": ann["id"], "page": page, "profile": profile, "csrf": csrf}


@pytest.fixture
def other_app(client, redis_server, sandbox_server):
    """Another app on the same Redis (`other_app(graph_url=..., **settings)`), signed in as the
    test's client is: its session cookie goes along."""
    opened = []

    @contextmanager
    def make(graph_url: str | None = None, **overrides: str) -> Iterator:
        settings = make_settings(redis_server.url, graph_url or sandbox_server.url, **overrides)
        app = create_app(settings)
        opened.append(app)
        other = app.test_client()
        other.set_cookie(COOKIE, client.get_cookie(COOKIE).value)
        yield other

    yield make
    for app in opened:
        app.extensions["graph"].close()
        app.extensions["storage"].redis.close()


def listed(fb, user_id: str) -> int:
    """How many times the service asked Facebook for the user's Pages (GET /me/accounts)."""
    return fb.user(user_id)["accounts_listed"]


def poll(get, path: str, until, deadline_s: float = 10.0):
    """GET `path` until `until(answer)` holds; every answer on the way, the last one last."""
    answers, end = [], time.monotonic() + deadline_s
    while time.monotonic() < end:
        answers.append(get(path))
        if until(answers[-1]):
            return answers
        time.sleep(0.05)
    raise AssertionError(f"{path}: still {answers[-1].status_code} after {deadline_s} s")


def test_pages_within_the_interval_ask_facebook_nothing_and_changes_always_ask(
    client, fb, owner, store, redis_client
):
    profile_id = owner["profile"].id
    assert listed(fb, owner["id"]) == 1  # the sign-in itself
    for path in (
        "/profiles",
        f"/profiles/{profile_id}",
        f"/profiles/{profile_id}/stats",
        f"/profiles/{profile_id}/stats.csv",
        f"/profiles/{profile_id}/recover",
    ):
        assert client.get(path).status_code == 200, path
    assert listed(fb, owner["id"]) == 1
    answer = client.post(
        f"/profiles/{profile_id}/status", data={"status": "disabled", "csrf_token": owner["csrf"]}
    )
    assert answer.status_code == 302 and store.profiles.get(profile_id).status == "disabled"
    assert listed(fb, owner["id"]) == 2  # a change asks Facebook first, even within the interval
    kept = redis_client.hgetall(keys.user(owner["id"]))
    assert kept["login_token"] and not any("sbx-user-" in v for v in kept.values())  # encrypted


def test_a_removed_role_is_refused_at_once_before_a_change_and_then_everywhere(
    client, fb, owner, store
):
    profile = owner["profile"]
    other_page = fb.create_page(name="Someone else's")
    theirs = store.profiles.create(
        name="Theirs", page_id=other_page["id"], page_name="x", page_token=other_page["token"]
    )
    fb.set_page_tasks(owner["id"], owner["page"]["id"], [])
    # By design the answer at sign-in stands for ROLE_RECHECK_SECONDS (300 s here): no call.
    assert client.get(f"/profiles/{profile.id}").status_code == 200
    assert listed(fb, owner["id"]) == 1
    refused = client.post(
        f"/profiles/{profile.id}/delete",
        data={"confirm": profile.name, "csrf_token": owner["csrf"]},
    )
    text = refused.get_data(as_text=True)
    assert refused.status_code == 403
    assert "no longer have a role on the Page “Ann&#39;s Bakery”" in text
    assert store.profiles.get(profile.id) is not None and listed(fb, owner["id"]) == 2
    # Facebook's answer is kept: every page refuses now, without asking again.
    assert client.get(f"/profiles/{profile.id}").status_code == 403
    assert client.get(f"/profiles/{profile.id}/stats").status_code == 403
    assert "Bakery updates" not in client.get("/profiles").get_data(as_text=True)
    assert client.get(f"/profiles/{theirs.id}").status_code == 404  # never theirs: no hint
    assert listed(fb, owner["id"]) == 2


def test_after_the_interval_a_lowered_role_is_refused_and_a_role_given_back_restored(
    fb, owner, other_app
):
    path = f"/profiles/{owner['profile'].id}"
    with other_app(ROLE_RECHECK_SECONDS="1") as quick:
        assert quick.get(path).status_code == 200
        fb.set_page_tasks(owner["id"], owner["page"]["id"], ANALYST)
        before = listed(fb, owner["id"])
        lowered = poll(quick.get, path, lambda a: a.status_code != 200)
        assert lowered[-1].status_code == 403
        assert "you are now Analyst on the Page" in lowered[-1].get_data(as_text=True)
        fb.set_page_tasks(owner["id"], owner["page"]["id"], ADMIN)
        back = poll(quick.get, path, lambda a: a.status_code != 403)
        assert back[-1].status_code == 200
    # Asked once for the 403 and once for the 200, not on each of the many requests polled.
    assert listed(fb, owner["id"]) - before == 2 and len(lowered) + len(back) > 4


def test_a_login_facebook_no_longer_accepts_ends_the_session(fb, owner, other_app):
    fb.invalidate_user(owner["id"], pages=False)  # a password change
    with other_app(ROLE_RECHECK_SECONDS="0") as every_time:
        path = f"/profiles/{owner['profile'].id}"
        answer = every_time.get(path)
        assert answer.status_code == 302
        assert answer.headers["Location"] == f"/login?next={path}"
        login = every_time.get(answer.headers["Location"]).get_data(as_text=True)
        assert "Facebook no longer accepts your login" in login
        assert every_time.get(path).headers["Location"].startswith("/login")  # signed out


def test_facebook_down_changes_fail_closed_and_pages_keep_the_answer_one_interval_more(
    fb, owner, store, other_app
):
    profile = owner["profile"]
    signed_in_ms = store.users.get(owner["id"])["checked_ms"]
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: connections are refused
    with other_app(graph_url=down, ROLE_RECHECK_SECONDS="1") as app_down:
        refused = app_down.post(
            f"/profiles/{profile.id}/delete",
            data={"confirm": profile.name, "csrf_token": owner["csrf"]},
        )
        assert refused.status_code == 503
        assert "Facebook could not be reached" in refused.get_data(as_text=True)
        disable = app_down.post(
            f"/profiles/{profile.id}/status",
            data={"status": "disabled", "csrf_token": owner["csrf"]},
        )
        assert disable.status_code == 503
        kept = store.profiles.get(profile.id)
        assert kept is not None and kept.status == "enabled"
        answers = poll(app_down.get, f"/profiles/{profile.id}", lambda a: a.status_code != 200)
        ended_ms = int(time.time() * 1000)
    assert answers[-1].status_code == 503
    assert "Try again in a few minutes" in answers[-1].get_data(as_text=True)
    assert ended_ms - signed_in_ms >= 2000  # the interval, then as long again
    assert store.users.get(owner["id"])["failed_ms"] > signed_in_ms + 1000
