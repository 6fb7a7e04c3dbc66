"""Tests of the simulator's Facebook Login over real HTTP: dialog, tokens, accounts, callbacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from sandbox import SandboxControl, SandboxError, SandboxServer, State, events
from sandbox.__main__ import load_seed
from tests.live import QuietHandler

SECRET = "login-app-secret"
APP_ID = "100000000000077"
REDIRECT = "http://127.0.0.1:9/auth/facebook/callback?profile=7"
SCOPES = "pages_show_list,pages_manage_metadata,pages_messaging,business_management"
MODERATOR = ["MESSAGING", "MODERATE", "ADVERTISE", "ANALYZE"]
ADMIN = ["MANAGE", "CREATE_CONTENT", "MODERATE", "MESSAGING", "ADVERTISE", "ANALYZE"]
DELETION = {"url": "https://service.test/deletion?id=del-1", "confirmation_code": "del-1"}


class CallbackTarget:
    """A service stand-in for Login callbacks: records form posts, answers DELETION JSON."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits: list[dict[str, Any]] = []
        self.server = make_server(
            "127.0.0.1", 0, self.wsgi, threaded=True, request_handler=QuietHandler
        )
        self.url = f"http://127.0.0.1:{self.server.server_port}/facebook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wsgi(self, environ: dict, start_response: Callable) -> Any:
        """Record the request and answer like a data-deletion endpoint."""
        request = Request(environ)
        with self.lock:
            self.hits.append(
                {
                    "path": request.path,
                    "form": request.form.to_dict(),
                    "content_type": request.content_type,
                }
            )
        return Response(json.dumps(DELETION), mimetype="application/json")(environ, start_response)

    def close(self) -> None:
        """Stop serving and release the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class DialogPage(HTMLParser):
    """The parts of the dialog page a browser would use: form, hidden fields, buttons, ids."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self.buttons: list[dict[str, str | None]] = []
        self.ids: set[str] = set()
        self._button: dict[str, str | None] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "form":
            self.action = found.get("action")
        elif tag == "input" and found.get("type") == "hidden":
            self.hidden[str(found["name"])] = found.get("value") or ""
        elif tag == "button":
            self._button = {**found, "text": ""}
            self.buttons.append(self._button)

    def handle_endtag(self, tag: str) -> None:
        if tag == "button":
            self._button = None

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button["text"] = str(self._button["text"]) + data


def verify_signed_request(signed: str, secret: str) -> dict[str, Any] | None:
    """Check a signed_request the way a service must (messenger-facts.md §8), independently."""
    sig_b64, payload_b64 = signed.split(".", 1)
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731 - as in Meta's sample
    sig = base64.urlsafe_b64decode(pad(sig_b64))
    data = json.loads(base64.urlsafe_b64decode(pad(payload_b64)))
    expected = hmac.new(secret.encode(), payload_b64.encode(), hashlib.sha256).digest()
    if data.get("algorithm", "").upper() != "HMAC-SHA256" or not hmac.compare_digest(sig, expected):
        return None
    return data


@pytest.fixture(scope="module")
def target() -> Iterator[CallbackTarget]:
    server = CallbackTarget()
    yield server
    server.close()


@pytest.fixture(scope="module")
def fb() -> Iterator[SandboxServer]:
    with SandboxServer(app_secret=SECRET, app_id=APP_ID) as server:
        yield server


@pytest.fixture(scope="module")
def control(fb: SandboxServer) -> Iterator[SandboxControl]:
    with SandboxControl(fb.url) as client:
        yield client


@pytest.fixture(autouse=True)
def clean(control: SandboxControl, target: CallbackTarget) -> None:
    control.reset()
    with target.lock:
        target.hits.clear()


@pytest.fixture()
def graph(fb: SandboxServer, http: requests.Session) -> Callable[..., requests.Response]:
    """GET a Graph path: graph(path, token=None, **query)."""

    def call(path: str, token: str | None = None, **query: Any) -> requests.Response:
        if token is not None:
            query["access_token"] = token
        return http.get(f"{fb.url}/v26.0{path}", params=query, timeout=5)

    return call


@pytest.fixture()
def ann(control: SandboxControl) -> dict[str, Any]:
    """A user who is Admin of a new Page and Moderator of another."""
    return control.create_user(
        "Ann",
        [{"name": "Ann's Bakery", "tasks": ADMIN}, {"name": "Corner Shop", "role": "moderator"}],
    )


def dialog_query(scope: str = SCOPES, **extra: str) -> dict[str, str]:
    """Return the query string the service builds for the OAuth dialog."""
    return {
        "client_id": APP_ID,
        "redirect_uri": REDIRECT,
        "state": "csrf-1",
        "response_type": "code",
        "scope": scope,
        **extra,
    }


def open_dialog(fb: SandboxServer, http: requests.Session, **query: str) -> requests.Response:
    """GET the dialog without following redirects."""
    return http.get(
        f"{fb.url}/v26.0/dialog/oauth",
        params=dialog_query(**query),
        timeout=5,
        allow_redirects=False,
    )


def choose(
    fb: SandboxServer, http: requests.Session, page: DialogPage, **pressed: str
) -> requests.Response:
    """Submit the dialog form as a browser does: hidden fields plus the pressed button."""
    return http.post(
        f"{fb.url}{page.action}", data={**page.hidden, **pressed}, timeout=5, allow_redirects=False
    )


def redirect_query(answer: requests.Response) -> dict[str, str]:
    """Check the answer redirects to the service's callback and return its query."""
    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith("http://127.0.0.1:9/auth/facebook/callback?profile=7&")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def login_code(fb: SandboxServer, http: requests.Session, user_id: str, scope: str = SCOPES) -> str:
    """Log in through the dialog page as a user and return the code."""
    page = DialogPage(open_dialog(fb, http, scope=scope).text)
    return redirect_query(choose(fb, http, page, user_id=user_id))["code"]


def exchange(
    graph: Callable[..., requests.Response], code: str, **changes: str
) -> requests.Response:
    """Exchange a code at /oauth/access_token."""
    query = {
        "client_id": APP_ID,
        "client_secret": SECRET,
        "redirect_uri": REDIRECT,
        "code": code,
        **changes,
    }
    return graph("/oauth/access_token", **query)


def login(
    fb: SandboxServer,
    http: requests.Session,
    graph: Callable[..., requests.Response],
    user_id: str,
    scope: str = SCOPES,
) -> str:
    """Log in and return a user token."""
    answer = exchange(graph, login_code(fb, http, user_id, scope))
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def error(response: requests.Response) -> tuple[int, int | None]:
    """Return (code, subcode) of a Graph error answer."""
    assert response.status_code == 400, response.text
    err = response.json()["error"]
    assert err["type"] == "OAuthException" and err["fbtrace_id"]
    return err["code"], err.get("error_subcode")


def send(
    fb: SandboxServer, http: requests.Session, page_id: str, token: str, psid: str
) -> requests.Response:
    """Send one text through the simulator's Send API."""
    body = {"recipient": {"id": psid}, "messaging_type": "UPDATE", "message": {"text": "hi"}}
    return http.post(
        f"{fb.url}/v26.0/{page_id}/messages", params={"access_token": token}, json=body, timeout=5
    )


# -- the dialog --------------------------------------------------------------------------------
def test_dialog_lists_users_and_redirects_with_code_and_state(fb, http, control, ann):
    control.create_user('<b>Bob & "Co"</b>', [])
    answer = open_dialog(fb, http)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/html")
    assert "<b>Bob" not in answer.text
    assert "&lt;b&gt;Bob &amp; &#34;Co&#34;&lt;/b&gt;" in answer.text
    page = DialogPage(answer.text)
    users = [b for b in page.buttons if b.get("name") == "user_id"]
    assert [(b["value"], b["data-user-id"], b["text"]) for b in users][0] == (
        ann["id"],
        ann["id"],
        "Log in as Ann",
    )
    assert users[1]["text"] == 'Log in as <b>Bob & "Co"</b>'
    assert {"login-form", "login-users", "login-cancel", f"login-as-{ann['id']}"} <= page.ids
    assert page.hidden == dialog_query() and page.action == "/v26.0/dialog/oauth"
    query = redirect_query(choose(fb, http, page, user_id=ann["id"]))
    assert set(query) == {"profile", "code", "state"} and query["state"] == "csrf-1"


def test_dialog_cancel_and_refusals(fb, http, ann):
    page = DialogPage(open_dialog(fb, http).text)
    assert redirect_query(choose(fb, http, page, cancel="1")) == {
        "profile": "7",
        "error": "access_denied",
        "error_code": "200",
        "error_description": "Permissions error",
        "error_reason": "user_denied",
        "state": "csrf-1",
    }
    assert (
        "error_description=Permissions+error"
        in choose(fb, http, page, cancel="1").headers["Location"]
    )
    for bad in (
        {"client_id": "999"},
        {"redirect_uri": "javascript:alert(1)"},
        {"response_type": "token"},
    ):
        refused = open_dialog(fb, http, **bad)
        assert refused.status_code == 400 and "Location" not in refused.headers
        assert "login-error" in DialogPage(refused.text).ids
    wrong = choose(fb, http, page, user_id="10160000000009999")
    assert wrong.status_code == 400 and "Location" not in wrong.headers


def test_auto_login_redirects_at_once(fb, http, control, ann):
    control.set_auto_login(ann["id"])
    code = redirect_query(open_dialog(fb, http))["code"]
    assert code.startswith("sbx-code-")
    control.set_auto_login(None)
    assert open_dialog(fb, http).status_code == 200
    with pytest.raises(SandboxError) as refused:
        control.set_auto_login("10160000000009999")
    assert refused.value.status == 404


# -- tokens ------------------------------------------------------------------------------------
def test_code_exchange_and_its_refusals(fb, http, graph, ann):
    code = login_code(fb, http, ann["id"])
    mismatch = exchange(graph, code, redirect_uri="http://127.0.0.1:9/other")
    assert error(mismatch) == (100, 36008)
    assert mismatch.json()["error"]["message"].startswith(
        "Error validating verification code. Please make sure your redirect_uri is identical"
    )
    answer = exchange(graph, code)  # a mismatch does not use the code up
    assert answer.status_code == 200
    body = answer.json()
    assert list(body) == ["access_token", "token_type", "expires_in"]
    assert body["token_type"] == "bearer" and body["expires_in"] == 5183944
    assert body["access_token"].startswith("sbx-user-")
    reused = exchange(graph, code)
    assert error(reused) == (100, 36007)
    assert reused.json()["error"]["message"] == "This authorization code has been used."
    fresh = login_code(fb, http, ann["id"])
    bad_secret = exchange(graph, fresh, client_secret="nope")
    assert error(bad_secret) == (1, None)
    assert bad_secret.json()["error"]["message"] == "Error validating client secret."
    assert bad_secret.json()["error"]["is_transient"] is False
    assert error(exchange(graph, fresh, client_id="1")) == (101, None)
    assert error(exchange(graph, "sbx-code-unknown")) == (100, 36007)


def test_long_lived_token_and_me(fb, http, graph, ann):
    short = login(fb, http, graph, ann["id"])
    query = {
        "grant_type": "fb_exchange_token",
        "client_id": APP_ID,
        "client_secret": SECRET,
        "fb_exchange_token": short,
    }
    long = graph("/oauth/access_token", **query).json()["access_token"]
    assert long.startswith("sbx-user-") and long != short and not long.startswith("EAA")
    assert graph("/me", long, fields="id,name").json() == {"id": ann["id"], "name": "Ann"}
    assert graph("/me", short).json() == {"id": ann["id"], "name": "Ann"}
    page = ann["pages"][0]
    assert graph("/me", page["token"]).json() == {"id": page["id"], "name": "Ann's Bakery"}
    assert error(graph("/me", long, fields="email")) == (100, None)
    assert error(graph("/oauth/access_token", **{**query, "fb_exchange_token": "x"})) == (190, None)


def test_tokens_expire_on_the_simulator_clock(fb, http, graph, control, ann):
    code = login_code(fb, http, ann["id"])
    token = login(fb, http, graph, ann["id"])
    control.configure(clock_offset_ms=11 * 60 * 1000)
    expired = exchange(graph, code)
    assert error(expired) == (100, 36007) and "expired" in expired.json()["error"]["message"]
    control.configure(clock_offset_ms=61 * 24 * 3600 * 1000)
    assert error(graph("/me", token)) == (190, 463)


# -- accounts and permissions ------------------------------------------------------------------
def test_accounts_give_tasks_and_working_page_tokens(fb, http, graph, control):
    existing = control.create_page("Old Page", category="Bakery")
    user = control.create_user(
        "Cat", [{"id": existing["id"], "tasks": MODERATOR}, {"name": "Cat Cafe", "role": "analyst"}]
    )
    assert user["pages"][0] == existing
    token = login(fb, http, graph, user["id"])
    answer = graph("/me/accounts", token, fields="id,name,access_token,tasks,category")
    data = answer.json()["data"]
    assert data[0] == {
        "id": existing["id"],
        "name": "Old Page",
        "access_token": existing["token"],
        "tasks": MODERATOR,
        "category": "Bakery",
    }
    assert data[1]["tasks"] == ["ANALYZE"]
    assert data[1]["access_token"] == user["pages"][1]["token"]
    assert list(graph("/me/accounts", token, fields="id,tasks").json()["data"][0]) == [
        "id",
        "tasks",
    ]
    psid = control.add_person(existing["id"], last_interaction_ms=int(time.time() * 1000) - 60_000)
    sent = send(fb, http, existing["id"], data[0]["access_token"], psid)
    assert sent.status_code == 200 and control.sends(status="accepted")[0]["recipient"] == {
        "id": psid
    }
    assert error(graph("/me/accounts", existing["token"])) == (100, None)
    assert error(send(fb, http, existing["id"], token, psid)) == (210, None)


def test_accounts_paginate(fb, http, graph, control):
    pages = [{"name": f"Shop {i}", "role": "editor"} for i in range(5)]
    user = control.create_user("Dan", pages)
    token = login(fb, http, graph, user["id"])
    answer = graph("/me/accounts", token, fields="id,name,access_token,tasks", limit=2).json()
    seen, hops = [row["id"] for row in answer["data"]], 0
    assert answer["paging"]["cursors"]["after"]
    while "next" in answer["paging"]:
        answer, hops = http.get(answer["paging"]["next"], timeout=5).json(), hops + 1
        seen += [row["id"] for row in answer["data"]]
    assert seen == [p["id"] for p in user["pages"]] and hops == 2
    whole = graph("/me/accounts", token).json()
    assert len(whole["data"]) == 5 and "next" not in whole["paging"]
    assert set(whole["data"][0]) == {"access_token", "category", "name", "id", "tasks"}


def test_permissions_granted_and_declined(fb, http, graph, control, ann):
    control.set_declined(ann["id"], ["business_management"])
    token = login(fb, http, graph, ann["id"])
    rows = graph("/me/permissions", token).json()["data"]
    assert rows[0] == {"permission": "public_profile", "status": "granted"}
    assert {r["permission"]: r["status"] for r in rows[1:]} == {
        "pages_show_list": "granted",
        "pages_manage_metadata": "granted",
        "pages_messaging": "granted",
        "business_management": "declined",
    }
    control.set_declined(ann["id"], ["pages_show_list"])  # revoked after login
    assert graph("/me/accounts", token).json() == {"data": []}
    assert error(graph("/me/permissions", ann["pages"][0]["token"])) == (100, None)


def test_debug_token(fb, http, graph, control, ann):
    token = login(fb, http, graph, ann["id"])
    app_token = f"{APP_ID}|{SECRET}"
    user = graph("/debug_token", app_token, input_token=token).json()["data"]
    assert user["type"] == "USER" and user["is_valid"] and user["user_id"] == ann["id"]
    assert user["app_id"] == APP_ID and user["application"] == "Sandbox app"
    assert "pages_messaging" in user["scopes"] and user["expires_at"] > 0
    page_token = graph("/me/accounts", token).json()["data"][0]["access_token"]
    page = graph("/debug_token", app_token, input_token=page_token).json()["data"]
    assert (page["type"], page["profile_id"], page["user_id"], page["expires_at"]) == (
        "PAGE",
        ann["pages"][0]["id"],
        ann["id"],
        0,
    )
    messaging = [g for g in page["granular_scopes"] if g["scope"] == "pages_messaging"][0]
    assert messaging["target_ids"] == [p["id"] for p in ann["pages"]]
    control.invalidate_page(ann["pages"][0]["id"])
    dead = graph("/debug_token", app_token, input_token=page_token).json()["data"]
    assert dead["is_valid"] is False and dead["error"]["code"] == 190
    assert dead["error"]["subcode"] == 460 and dead["error"]["message"]
    garbage = graph("/debug_token", app_token, input_token="nonsense").json()["data"]
    assert garbage["is_valid"] is False and garbage["error"]["code"] == 190
    assert error(graph("/debug_token", f"{APP_ID}|wrong", input_token=token)) == (190, None)
    assert graph("/debug_token", token, input_token=token).json()["data"]["is_valid"]


# -- losing access -----------------------------------------------------------------------------
def test_invalidate_user_kills_sessions_until_next_login(fb, http, graph, control, ann):
    token = login(fb, http, graph, ann["id"])
    page_token = graph("/me/accounts", token).json()["data"][0]["access_token"]
    assert control.invalidate_user(ann["id"]) == [p["id"] for p in ann["pages"]]
    assert error(graph("/me", token)) == (190, 460)
    assert error(graph("/me", page_token)) == (190, 460)
    fresh = login(fb, http, graph, ann["id"])
    renewed = graph("/me/accounts", fresh).json()["data"][0]["access_token"]
    assert renewed != page_token and graph("/me", renewed).status_code == 200
    assert error(graph("/me", page_token)) == (190, 460)


def test_role_change_and_removal(fb, http, graph, control, ann):
    token = login(fb, http, graph, ann["id"])
    bakery, shop = ann["pages"]
    page_token = graph("/me/accounts", token).json()["data"][0]["access_token"]
    assert control.set_page_tasks(ann["id"], bakery["id"], MODERATOR) == []
    assert graph("/me/accounts", token).json()["data"][0]["tasks"] == MODERATOR
    assert control.set_page_tasks(ann["id"], shop["id"], []) == [shop["id"]]
    assert [p["id"] for p in graph("/me/accounts", token).json()["data"]] == [bakery["id"]]
    assert error(graph("/me", shop["token"])) == (190, 492)
    assert graph("/me", page_token).status_code == 200
    control.set_page_tasks(ann["id"], "104857600000777", ["ANALYZE"])
    assert control.page("104857600000777")["name"] == "Sandbox Page"
    with pytest.raises(SandboxError):
        control.set_page_tasks(ann["id"], bakery["id"], ["FLY"])


def test_remove_app_invalidates_and_posts_deauthorize(fb, http, graph, control, target, ann):
    other = control.create_page("Never logged in")
    token = login(fb, http, graph, ann["id"])
    graph("/me/accounts", token)
    result = control.remove_app(ann["id"], deauthorize_url=target.url)
    assert result["pages_invalidated"] == [p["id"] for p in ann["pages"]]
    assert result["deauthorize"]["status"] == 200
    for dead in (token, ann["pages"][0]["token"]):
        answer = graph("/me", dead)
        assert error(answer) == (190, 458)
        assert "has not authorized application" in answer.json()["error"]["message"]
    assert graph("/me", other["token"]).status_code == 200
    assert control.user(ann["id"])["authorized"] is False
    hit = target.hits[0]
    assert hit["content_type"] == "application/x-www-form-urlencoded"
    payload = verify_signed_request(hit["form"]["signed_request"], SECRET)
    assert payload is not None and payload["user_id"] == ann["id"]
    assert payload["algorithm"] == "HMAC-SHA256" and isinstance(payload["issued_at"], int)


def test_data_deletion_and_deauthorize_callbacks(control, target):
    answer = control.post_data_deletion("10160000000000042", target.url)
    assert answer["status"] == 200 and answer["body"] == DELETION
    signed = target.hits[0]["form"]["signed_request"]
    assert signed == answer["signed_request"] and "=" not in signed
    assert verify_signed_request(signed, SECRET)["user_id"] == "10160000000000042"
    bad = control.post_deauthorize("10160000000000042", target.url, signature="bad")
    assert bad["status"] == 200
    assert verify_signed_request(target.hits[1]["form"]["signed_request"], SECRET) is None
    control.post_deauthorize("1", target.url, signature="missing")
    assert target.hits[2]["form"] == {}
    with pytest.raises(SandboxError):
        control.post_deauthorize("1", target.url, signature="weird")


# -- control API and building blocks -----------------------------------------------------------
def test_reset_forgets_users_codes_and_tokens(fb, http, graph, control, ann):
    code = login_code(fb, http, ann["id"])
    token = login(fb, http, graph, ann["id"])
    control.set_auto_login(ann["id"])
    control.reset()
    assert control.users() == []
    assert error(graph("/me", token)) == (190, None)
    assert error(exchange(graph, code)) == (100, 36007)
    assert "login-no-users" in DialogPage(open_dialog(fb, http).text).ids
    again = control.create_user("Ann", [{"name": "Ann's Bakery"}])
    assert again["id"] == ann["id"]  # counters start over
    with pytest.raises(SandboxError) as duplicate:
        control.create_user("Twin", [], user_id=ann["id"])
    assert duplicate.value.status == 409


def test_signed_request_helper_and_seeded_users():
    signed = events.signed_request({"user_id": "7", "issued_at": 1}, "k")
    assert verify_signed_request(signed, "k") == {
        "algorithm": "HMAC-SHA256",
        "user_id": "7",
        "issued_at": 1,
    }
    state = State()
    load_seed(
        state,
        {
            "pages": [{"id": "104857600000001", "name": "Demo"}],
            "users": [
                {
                    "id": "10160000000000001",
                    "name": "Eve",
                    "pages": [{"id": "104857600000001", "role": "editor"}, {"name": "Eve's Shop"}],
                },
                {"name": "Fay", "pages": []},
            ],
        },
    )
    eve = state.users["10160000000000001"]
    assert eve["pages"] == {"104857600000001": ADMIN[1:], "104857600000002": ADMIN}
    assert list(state.users) == ["10160000000000001", "10160000000000002"]
