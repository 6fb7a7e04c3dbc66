"""Profile lifecycle: disable/delete rules, deletion leaves nothing, opt-in code, callbacks."""

from __future__ import annotations

import re
import time

import pytest
from cryptography.fernet import Fernet

from bot import policy
from bot.crypto import TokenCipher, TokenDecryptError
from bot.signed_request import make_signed_request, parse_signed_request
from storage import keys
from storage.inbound import Event
from storage.programs import Node
from tests.conftest import APP_SECRET, messenger_node, wait_until


@pytest.fixture
def page(fb):
    return fb.create_page(name="Bakery")


@pytest.fixture
def profile(api, page):
    return api(
        "post",
        "/profiles",
        json={"name": "Bakery", "page_id": page["id"], "page_access_token": page["token"]},
    ).get_json()


def program(api, profile, status="active", prog_id="p1", name="Orders"):
    node = messenger_node(profile["id"])
    assert api(
        "put", f"/programs/{prog_id}", json={"name": name, "status": status, "nodes": [node]}
    ).status_code in (200, 201)


# -- enable, disable, rename ----------------------------------------------------------------------


def test_disable_and_enable_and_rename(api, profile):
    answer = api(
        "patch", f"/profiles/{profile['id']}", json={"status": "disabled", "name": "Bakery 2"}
    )
    assert answer.status_code == 200
    assert (answer.get_json()["status"], answer.get_json()["name"]) == ("disabled", "Bakery 2")
    assert (
        api("patch", f"/profiles/{profile['id']}", json={"status": "enabled"}).get_json()["status"]
        == "enabled"
    )


def test_profile_used_by_an_active_program_can_be_neither_disabled_nor_deleted(api, profile):
    program(api, profile, name="Order updates")
    program(api, profile, status="draft", prog_id="p2", name="Draft one")
    for method, body in (("patch", {"status": "disabled"}), ("delete", None)):
        answer = (
            api(method, f"/profiles/{profile['id']}", json=body)
            if body
            else api(method, f"/profiles/{profile['id']}")
        )
        assert answer.status_code == 409
        error = answer.get_json()["error"]
        assert error["code"] == "profile_in_use" and "Order updates" in error["message"]
        assert error["details"]["programs"] == [
            {"id": "p1", "name": "Order updates"}
        ]  # drafts do not count
    assert api("get", f"/profiles/{profile['id']}").get_json()["status"] == "enabled"
    program(api, profile, status="paused")
    assert (
        api("patch", f"/profiles/{profile['id']}", json={"status": "disabled"}).status_code == 200
    )


def test_a_disabled_profile_cannot_be_chosen_in_a_node_until_enabled(api, profile):
    api("patch", f"/profiles/{profile['id']}", json={"status": "disabled"})
    node = messenger_node(profile["id"])
    answer = api("put", "/programs/p1", json={"name": "P", "status": "draft", "nodes": [node]})
    assert (
        answer.status_code == 422
        and "disabled" in answer.get_json()["error"]["details"]["nodes"]["n1"][0]
    )
    api("patch", f"/profiles/{profile['id']}", json={"status": "enabled"})
    assert (
        api(
            "put", "/programs/p1", json={"name": "P", "status": "draft", "nodes": [node]}
        ).status_code
        == 201
    )


def test_storage_refuses_a_node_on_a_disabled_profile_even_without_the_api_check(store, profile):
    from storage.errors import ProfileUnavailable
    from storage.programs import Node

    store.profiles.set_status(profile["id"], "disabled")
    with pytest.raises(ProfileUnavailable):
        store.programs.put("p9", "P", "active", [Node("n", profile["id"], "ACCOUNT_UPDATE", "Hi")])
    assert store.programs.get("p9") is None


# -- delete ----------------------------------------------------------------------------------------


def test_delete_removes_every_key_of_the_profile_and_unsubscribes_the_app(
    api, fb, store, drain, redis_client, page, profile
):
    pid = profile["id"]
    now = int(time.time() * 1000)
    store.inbound.apply(
        [
            Event("optin", page["id"], "555", now, profile=pid, contact="c1"),
            Event("unmatched", page["id"], "666", now, ref="x", source="optin"),
        ]
    )
    store.contacts.merge_many({"c1": {"FIRSTNAME": "Ann"}})
    store.messages.record_sent(pid, "c1", "555", "m_1", now)
    program(api, profile, status="draft")
    api(
        "post", "/programs/p1/nodes/n1/runs", json={"contacts": [{"id": "c1"}]}
    )  # draft: refused, no run
    program(api, profile, status="active")
    run_id = api(
        "post", "/programs/p1/nodes/n1/runs", json={"contacts": [{"id": "c1"}]}
    ).get_json()["run_id"]
    drain()
    program(api, profile, status="paused")
    assert fb.page(page["id"])["subscribed_fields"]

    assert api("delete", f"/profiles/{pid}").status_code == 204
    assert api("get", f"/profiles/{pid}").status_code == 404  # gone at once
    drain()  # the purge job
    leftovers = [
        k
        for k in redis_client.keys("msgr:*")
        if f":p:{pid}:" in k
        or k.endswith(f"profile:{pid}")
        or run_id in k
        or k == keys.page_owner(page["id"])
    ]
    assert leftovers == []
    assert store.contacts.get("c1") == {
        "FIRSTNAME": "Ann"
    }  # the contact stays, its opt-in value goes
    assert fb.page(page["id"])["subscribed_fields"] == []
    # the Page can be connected again, as a new profile with a new opt-in field
    again = api(
        "post",
        "/profiles",
        json={"name": "Again", "page_id": page["id"], "page_access_token": page["token"]},
    )
    assert again.status_code == 201 and again.get_json()["optin_field"] != profile["optin_field"]


def test_the_run_index_forgets_expired_runs_and_an_old_style_index_is_purged_too(
    api, store, drain, redis_client, profile
):
    pid, node = profile["id"], Node("n1", profile["id"], "ACCOUNT_UPDATE", "Hi")
    store.runs.retention_s = (
        1  # RUN_RETENTION_DAYS, in seconds here, so that a run expires during the test
    )
    store.runs.create("r-old", "prog", node, {}, 10)
    wait_until(lambda: not redis_client.exists(keys.run("r-old")), timeout=5)
    store.runs.create("r-new", "prog", node, {}, 10)
    assert redis_client.zrange(keys.profile_runs(pid), 0, -1) == [
        "r-new"
    ]  # r-old forgotten with its keys

    # An index written before 2026-11-26 was a set: deleting the profile still finds its runs.
    store.runs.retention_s = 3600
    store.runs.create("r-legacy", "prog", node, {}, 10)
    redis_client.zrem(keys.profile_runs(pid), "r-legacy")
    redis_client.sadd(keys.profile_runs_v1(pid), "r-legacy")
    assert api("delete", f"/profiles/{pid}").status_code == 204
    drain()
    assert not redis_client.exists(
        keys.run("r-legacy"), keys.profile_runs(pid), keys.profile_runs_v1(pid)
    )


def test_deleting_works_even_when_the_token_is_dead(api, fb, drain, redis_client, page, profile):
    fb.invalidate_page(page["id"])
    assert api("delete", f"/profiles/{profile['id']}").status_code == 204
    drain()
    assert redis_client.exists(keys.profile(profile["id"])) == 0


def test_unknown_profile_lifecycle_is_404(api):
    assert api("patch", "/profiles/99", json={"status": "disabled"}).status_code == 404
    assert api("delete", "/profiles/99").status_code == 404


# -- opt-in code --------------------------------------------------------------------------------


def test_optin_code_for_a_contact_carries_a_signed_ref(api, refs, profile, page):
    answer = api("get", f"/profiles/{profile['id']}/optin-code?contact_id=c-42").get_json()
    assert refs.verify(answer["ref"]) == (profile["id"], "c-42")
    assert f'data-ref="{answer["ref"]}"' in answer["html"]
    assert f"https://m.me/{page['id']}?ref={answer['ref']}" in answer["html"]
    assert (
        'class="fb-send-to-messenger"' in answer["html"]
        and f'page_id="{page["id"]}"' in answer["html"]
    )


def test_generic_optin_code_uses_the_merge_field(api, profile):
    answer = api("get", f"/profiles/{profile['id']}/optin-code").get_json()
    assert answer["ref"] == "@FBOPTINREF_001@" and "@FBOPTINREF_001@" in answer["html"]


def test_optin_code_escapes_names(api, store, fb):
    page = fb.create_page(name='Evil "Page" <script>')
    created = api(
        "post",
        "/profiles",
        json={"name": "<b>x</b>", "page_id": page["id"], "page_access_token": page["token"]},
    ).get_json()
    html = api("get", f"/profiles/{created['id']}/optin-code").get_json()["html"]
    assert "<script>" not in html.split("<!--")[1].split("-->")[0] and "&lt;b&gt;" in html


# -- token encryption ------------------------------------------------------------------------------


def test_token_encryption_round_trip_and_key_rotation(store, profile, page, redis_client):
    old_key = store.profiles.cipher
    stored_before = redis_client.hget(keys.profile(profile["id"]), "token")
    new_key = Fernet.generate_key().decode()
    from tests.conftest import make_settings

    store.profiles.cipher = TokenCipher(
        [new_key, make_settings("redis://x:1/0", "http://x").token_encryption_keys[0]]
    )
    assert store.profiles.page_token(profile["id"]) == page["token"]  # the old key still decrypts
    assert store.profiles.rotate_tokens() == 1
    stored_after = redis_client.hget(keys.profile(profile["id"]), "token")
    assert stored_after != stored_before and page["token"] not in stored_after
    store.profiles.cipher = TokenCipher([new_key])  # old key retired after rotation
    assert store.profiles.page_token(profile["id"]) == page["token"]
    store.profiles.cipher = old_key
    with pytest.raises(TokenDecryptError):
        store.profiles.page_token(profile["id"])  # the retired key alone cannot read new tokens


def test_login_tokens_rotate_with_the_page_tokens(store, settings, redis_client):
    store.users.save("u-1", "Ann", [], login_token="login-secret-1")
    store.users.save("u-2", "Bob", [])  # signed in before login tokens were kept: skipped
    stored_before = redis_client.hget(keys.user("u-1"), "login_token")
    new_key = Fernet.generate_key().decode()
    store.users.cipher = TokenCipher([new_key, *settings.token_encryption_keys])
    assert store.users.rotate_tokens() == 1
    stored_after = redis_client.hget(keys.user("u-1"), "login_token")
    assert stored_after != stored_before and "login-secret-1" not in stored_after
    store.users.cipher = TokenCipher([new_key])  # the old key retired
    assert store.users.login_token("u-1") == "login-secret-1"


# -- roles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tasks,role,allowed",
    [
        (
            ["MANAGE", "CREATE_CONTENT", "MODERATE", "MESSAGING", "ADVERTISE", "ANALYZE"],
            "Admin",
            True,
        ),
        (["CREATE_CONTENT", "MODERATE", "MESSAGING", "ADVERTISE", "ANALYZE"], "Editor", True),
        (["MESSAGING", "MODERATE", "ADVERTISE", "ANALYZE"], "Moderator", True),
        (["ADVERTISE", "ANALYZE"], "Advertiser", False),
        (["ANALYZE"], "Analyst", False),
        ([], "none", False),
        (["MESSAGING"], "none", False),
    ],
)
def test_role_from_tasks(tasks, role, allowed):
    assert policy.role_from_tasks(tasks) == role
    assert policy.can_connect(tasks) is allowed


# -- Facebook callbacks ----------------------------------------------------------------------------


def signed(user_id: str, secret: str = APP_SECRET) -> str:
    return make_signed_request(
        {"algorithm": "HMAC-SHA256", "issued_at": int(time.time()), "user_id": user_id}, secret
    )


def test_signed_request_parsing():
    value = signed("123")
    assert parse_signed_request(value, APP_SECRET)["user_id"] == "123"
    assert parse_signed_request(value, "other-secret") is None
    assert parse_signed_request(value.replace(".", ".x"), APP_SECRET) is None
    assert (
        parse_signed_request(
            make_signed_request({"algorithm": "none", "user_id": "1"}, APP_SECRET), APP_SECRET
        )
        is None
    )
    assert (
        parse_signed_request("garbage", APP_SECRET) is None
        and parse_signed_request(None, APP_SECRET) is None
    )


def test_deauthorize_disconnects_the_users_profiles_but_keeps_them(client, store, page):
    mine = store.profiles.create(
        name="Mine", page_id=page["id"], page_name="P", page_token="t", connected_by="u-1"
    )
    other = store.profiles.create(
        name="Other", page_id="9", page_name="Q", page_token="t", connected_by="u-2"
    )
    assert (
        client.post(
            "/facebook/deauthorize", data={"signed_request": signed("u-1", "forged")}
        ).status_code
        == 400
    )
    assert store.profiles.get(mine.id).health == "ok"
    answer = client.post("/facebook/deauthorize", data={"signed_request": signed("u-1")})
    assert answer.status_code == 200
    assert store.profiles.get(mine.id).health == "disconnected"  # kept, not deleted
    assert store.profiles.get(other.id).health == "ok"


def test_data_deletion_deletes_the_users_data_and_gives_a_status_url(
    client, fb, store, drain, page, redis_client
):
    store.users.save("u-1", "Ann Owner", [{"id": page["id"], "name": "P", "tasks": ["MANAGE"]}])
    mine = store.profiles.create(
        name="Mine", page_id=page["id"], page_name="P", page_token=page["token"], connected_by="u-1"
    )
    psid = fb.add_person(page["id"], user_id="u-1")  # the same human, on Messenger
    other = fb.add_person(page["id"])
    now = int(time.time() * 1000)
    store.inbound.apply(
        [
            Event("optin", page["id"], psid, now, profile=mine.id, contact="c1"),
            Event("optin", page["id"], other, now, profile=mine.id, contact="c2"),
        ]
    )
    store.messages.record_sent(mine.id, "c1", psid, "m_1", now)
    assert (
        client.post(
            "/facebook/data-deletion", data={"signed_request": signed("u-1", "forged")}
        ).status_code
        == 400
    )
    assert store.users.get("u-1") is not None
    answer = client.post("/facebook/data-deletion", data={"signed_request": signed("u-1")})
    body = answer.get_json()
    assert answer.status_code == 200 and set(body) == {"url", "confirmation_code"}
    status_path = body["url"].replace("http://localhost", "")
    assert "deleting your data" in client.get(status_path).get_data(as_text=True)
    drain()
    assert store.users.get("u-1") is None and store.profiles.get(mine.id).connected_by == ""
    assert store.contacts.get("c1") is None and store.inbound.last_seen(mine.id, psid) is None
    assert (
        store.inbound.contact_of(mine.id, psid) is None
        and store.messages.awaiting(mine.id, psid) == []
    )
    assert store.contacts.get("c2") == {mine.optin_field: other}  # nobody else is touched
    status = client.get(status_path)
    text = status.get_data(as_text=True)
    assert status.status_code == 200 and body["confirmation_code"] in text and "completed" in text
    assert int(re.search(r'id="messenger-records">(\d+)<', text).group(1)) >= 4
    assert client.get("/facebook/data-deletion/nosuchcode").status_code == 404


# -- health: /healthz and the token checks ------------------------------------------------------


def test_healthz_fails_when_redis_takes_no_new_connection(tmp_path, sandbox_server):
    """A second `make run` deleted the running Redis's socket: requests needing a new connection
    got 503 while /healthz, pinging over a pooled one, said ok."""
    from bot.app import create_app
    from storage.embedded import EmbeddedRedis
    from tests.conftest import make_settings

    with EmbeddedRedis(tmp_path / "r", appendonly=False) as server:
        assert server.socket_path, "the path is too long for a unix socket"
        app = create_app(make_settings(server.url, sandbox_server.url))
        client = app.test_client()
        assert client.get("/healthz").json == {"status": "ok", "redis": "ok"}
        assert app.extensions[
            "storage"
        ].ping()  # as any request does: the pool holds a connection now
        server.socket_path.unlink()
        assert app.extensions["storage"].ping()  # the pooled connection still answers...
        answer = client.get("/healthz")
        assert (
            answer.status_code == 503 and answer.json["status"] == "unavailable"
        )  # ...but the storage is unusable
        app.extensions["storage"].redis.close()


def test_a_starting_worker_checks_every_token_though_the_periodic_check_is_not_due(
    fb, store, redis_server, sandbox_server, tmp_path
):
    """After a restart the periodic check's lock (in Redis) can hold for up to an hour: a token
    Facebook no longer knows must not keep saying "ok" that long."""
    from tests.conftest import service_env
    from tests.workers import WorkerProcesses

    good = fb.create_page(name="Known")
    known = store.profiles.create(
        name="Known", page_id=good["id"], page_name="Known", page_token=good["token"], now=1
    )
    forgotten = store.profiles.create(
        name="Forgotten",
        page_id="104857600000555",
        page_name="Forgotten",
        page_token="sbx-page-the-simulator-never-issued",
        now=1,
    )
    assert store.take_tick(
        "check_profiles", 3_600_000
    )  # the last run's periodic check, still due in an hour
    workers = WorkerProcesses(service_env(redis_server.url, sandbox_server.url), tmp_path)
    try:
        workers.start()
        flagged = wait_until(
            lambda: (p := store.profiles.get(forgotten.id)).health != "ok" and p, timeout=30
        )
        assert flagged.health == "needs_reauth" and flagged.health_checked_at > 1
        checked = wait_until(
            lambda: (p := store.profiles.get(known.id)).health_checked_at > 1 and p, timeout=30
        )
        assert checked.health == "ok"
    finally:
        workers.stop_all()


def test_two_workers_starting_together_check_once(app, store):
    from jobs.ticker import Task, Ticker

    ran: list[str] = []
    task = Task("check", 3600, lambda: ran.append("periodic"), at_start=lambda: ran.append("start"))
    first, second = Ticker(app, [task]), Ticker(app, [task])
    assert first.tick_at_start() == ["check:start"]
    assert second.tick_at_start() == []  # already done for this start
    assert first.tick() == second.tick() == []  # and it stands for this interval's periodic run
    assert ran == ["start"]


def test_a_start_up_check_that_cannot_reach_facebook_is_tried_again(settings, store):
    """In sandbox mode the simulator starts beside the worker and may not answer yet."""
    import dataclasses

    from rq.registry import ScheduledJobRegistry

    from bot.app import create_app
    from jobs.profile_checks import check_profile
    from storage.embedded import free_port

    profile = store.profiles.create(
        name="P", page_id="104857600000556", page_name="P", page_token="t", now=1
    )
    unreachable = create_app(
        dataclasses.replace(settings, graph_api_url=f"http://127.0.0.1:{free_port()}")
    )
    try:
        with unreachable.app_context():
            assert check_profile(profile.id, 1) == "skipped"
            assert check_profile(profile.id, 0) == "skipped"  # the last try: no more retries
    finally:
        unreachable.extensions["graph"].close()
        unreachable.extensions["storage"].redis.close()
    assert (
        store.profiles.get(profile.id).health_checked_at == 1
    )  # not checked: the old time still shows
    queue = unreachable.extensions["rq_maintenance"]
    retries = [
        queue.fetch_job(job_id).args for job_id in ScheduledJobRegistry(queue=queue).get_job_ids()
    ]
    assert retries == [(profile.id, 0)]
