"""HTML pages: sign-in, access control, CSRF, escaping, and the profile page's content."""

from __future__ import annotations

import re

import pytest

ADMIN = ["MANAGE", "CREATE_CONTENT", "MODERATE", "MESSAGING", "ADVERTISE", "ANALYZE"]
ANALYST = ["ANALYZE"]


@pytest.fixture
def pages_of(store, fb):
    """Two Pages with profiles: A's and B's."""
    page_a, page_b = fb.create_page(name="Page A"), fb.create_page(name="Page B")
    a = store.profiles.create(
        name="Profile A", page_id=page_a["id"], page_name="Page A", page_token=page_a["token"]
    )
    b = store.profiles.create(
        name="Profile B", page_id=page_b["id"], page_name="Page B", page_token=page_b["token"]
    )
    return {"a": (page_a, a), "b": (page_b, b)}


def sign_in_owner(client, store, user_id: str, pages: list[tuple[str, list[str]]]) -> str:
    """A page owner as Facebook Login would leave them: user record plus session."""
    store.users.save(
        user_id,
        f"Owner {user_id}",
        [{"id": pid, "name": pid, "tasks": tasks} for pid, tasks in pages],
    )
    with client.session_transaction() as session:
        session["user"] = {"kind": "owner", "id": user_id, "name": f"Owner {user_id}"}
        session["csrf"] = "token-" + user_id
    return "token-" + user_id


def sign_in_operator(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = client.post("/login", data={"password": "test-admin", "csrf_token": token})
    assert answer.status_code == 302
    with client.session_transaction() as session:
        return session["csrf"]


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/"),
        ("get", "/profiles"),
        ("get", "/profiles/new"),
        ("get", "/profiles/1"),
        ("post", "/profiles/1/status"),
        ("post", "/profiles/1/delete"),
        ("post", "/profiles/new"),
    ],
)
def test_everything_needs_sign_in(client, method, path):
    with client.session_transaction() as session:
        session["csrf"] = "t"
    answer = client.open(path, method=method.upper(), data={"csrf_token": "t"})
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/login")


def test_operator_password(client, pages_of):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    refused = client.post("/login", data={"password": "wrong", "csrf_token": token})
    assert refused.status_code == 401 and "not right" in refused.get_data(as_text=True)
    assert client.get("/profiles").status_code == 302
    sign_in_operator(client)
    listing = client.get("/profiles").get_data(as_text=True)
    assert "Profile A" in listing and "Profile B" in listing  # the operator sees all


def test_sign_in_redirects_only_within_the_site(client):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    for target, expected in (
        ("/profiles/new", "/profiles/new"),
        ("https://evil.example/", "/profiles"),
        ("//evil.example", "/profiles"),
    ):
        answer = client.post(
            "/login",
            query_string={"next": target},
            data={"password": "test-admin", "csrf_token": token},
        )
        assert answer.headers["Location"] == expected
        with client.session_transaction() as session:
            token = session["csrf"]


def test_forms_without_the_csrf_token_are_refused(client, store, pages_of):
    csrf = sign_in_operator(client)
    _, profile = pages_of["a"]
    for data in ({"status": "disabled"}, {"status": "disabled", "csrf_token": "forged"}):
        answer = client.post(f"/profiles/{profile.id}/status", data=data)
        assert answer.status_code == 400 and "expired" in answer.get_data(as_text=True)
    assert store.profiles.get(profile.id).status == "enabled"
    assert (
        client.post(
            f"/profiles/{profile.id}/status", data={"status": "disabled", "csrf_token": csrf}
        ).status_code
        == 302
    )
    assert store.profiles.get(profile.id).status == "disabled"


def test_login_form_itself_needs_the_csrf_token(client):
    client.get("/login")
    assert client.post("/login", data={"password": "test-admin"}).status_code == 400


def test_owner_sees_and_manages_only_pages_they_hold_a_role_on(client, store, pages_of):
    (page_a, a), (page_b, b) = pages_of["a"], pages_of["b"]
    csrf = sign_in_owner(client, store, "u-a", [(page_a["id"], ADMIN), (page_b["id"], ANALYST)])
    listing = client.get("/profiles").get_data(as_text=True)
    assert "Profile A" in listing and "Profile B" not in listing
    assert client.get(f"/profiles/{a.id}").status_code == 200
    assert client.get(f"/profiles/{b.id}").status_code == 404  # by URL: no hint that it exists
    for path, data in (
        (f"/profiles/{b.id}/status", {"status": "disabled"}),
        (f"/profiles/{b.id}/delete", {"confirm": "Profile B"}),
        (f"/profiles/{b.id}/reauthorize", {}),
    ):
        assert client.post(path, data={**data, "csrf_token": csrf}).status_code == 404
    assert store.profiles.get(b.id).status == "enabled"


def test_profile_page_shows_field_health_programs_and_optin_code_but_never_the_token(
    client, store, pages_of, api
):
    page_a, a = pages_of["a"]
    node = {
        "id": "n1",
        "type": "messenger",
        "profile_id": a.id,
        "tag": "ACCOUNT_UPDATE",
        "message": "Hi",
    }
    api("put", "/programs/p1", json={"name": "Order updates", "status": "active", "nodes": [node]})
    sign_in_operator(client)
    html = client.get(f"/profiles/{a.id}").get_data(as_text=True)
    assert a.optin_field in html and "Order updates" in html and "health-ok" in html
    assert (
        "fb-send-to-messenger" in html
        and "@FBOPTINREF_001@" in html
        and 'id="copy-optin-code"' in html
    )
    assert page_a["token"] not in html


def test_names_are_escaped_everywhere(client, store, fb):
    page = fb.create_page(name="<img src=x onerror=alert(1)>")
    evil = store.profiles.create(
        name="<script>alert(1)</script>",
        page_id=page["id"],
        page_name="<img src=x onerror=alert(1)>",
        page_token=page["token"],
    )
    sign_in_operator(client)
    for path in ("/profiles", f"/profiles/{evil.id}"):
        html = client.get(path).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_disabling_in_use_profile_names_the_profile_and_each_program_once(
    client, store, api, pages_of
):
    _, a = pages_of["a"]
    node = {
        "id": "n1",
        "type": "messenger",
        "profile_id": a.id,
        "tag": "ACCOUNT_UPDATE",
        "message": "Hi",
    }
    api(
        "put",
        "/programs/demo",
        json={"name": "Order updates (demo)", "status": "active", "nodes": [node]},
    )
    csrf = sign_in_operator(client)
    html = client.post(
        f"/profiles/{a.id}/status",
        data={"status": "disabled", "csrf_token": csrf},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert (
        "The profile “Profile A” cannot be disabled: "
        "the active program “Order updates (demo)” uses it" in html
    )
    assert "(demo) (demo)" not in html and store.profiles.get(a.id).status == "enabled"
    api("put", "/programs/p2", json={"name": "Receipts", "status": "active", "nodes": [node]})
    html = client.post(
        f"/profiles/{a.id}/delete",
        data={"confirm": a.name, "csrf_token": csrf},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert (
        "The profile “Profile A” cannot be deleted: the active programs “Order updates (demo)” and "
        "“Receipts” use it"
    ) in html
    assert store.profiles.get(a.id) is not None


def test_delete_needs_the_name_typed(client, store, pages_of, drain):
    _, a = pages_of["a"]
    csrf = sign_in_operator(client)
    client.post(f"/profiles/{a.id}/delete", data={"confirm": "nope", "csrf_token": csrf})
    assert store.profiles.get(a.id) is not None
    client.post(f"/profiles/{a.id}/delete", data={"confirm": a.name, "csrf_token": csrf})
    assert store.profiles.get(a.id) is None


def test_pages_send_security_headers_and_a_secure_cookie_outside_sandbox(client):
    answer = client.get("/login")
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert (
        "script-src" not in answer.headers["Content-Security-Policy"]
        or "'unsafe-inline'" not in answer.headers["Content-Security-Policy"]
    )
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


def test_logout(client):
    csrf = sign_in_operator(client)
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert client.get("/profiles").status_code == 302


@pytest.mark.parametrize("settings_overrides,shown", [({"SANDBOX": "1"}, True), ({}, False)])
def test_every_page_shows_the_sandbox_banner_in_sandbox_mode_only(
    client, store, pages_of, settings_overrides, shown
):
    _, a = pages_of["a"]
    paths = [
        "/profiles",
        "/profiles/new",
        f"/profiles/{a.id}",
        f"/profiles/{a.id}/stats",
        f"/profiles/{a.id}/stats/2026-11-25/sent",
        f"/profiles/{a.id}/stats/notadate/sent",
        "/profiles/999",
    ]
    pages = {"/login": client.get("/login").get_data(as_text=True)}
    sign_in_operator(client)
    pages.update({path: client.get(path).get_data(as_text=True) for path in paths})
    for path, html in pages.items():
        banner = re.search(r'<p class="sandbox-banner"[^>]*>(.*?)</p>', html, re.S)
        assert bool(banner) is shown, path
        if shown:
            assert "simulator" in banner.group(
                1
            ) and "nothing you do here reaches real people" in banner.group(1)
