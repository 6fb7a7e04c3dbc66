"""The JSON API fuzzed from its own OpenAPI document (schemathesis): no 5xx, every answer and
every error in the documented shape. Shapes found by fuzzing from outside stay fixed: lone
surrogates and deep nesting in JSON bodies, and (against real gunicorn) malformed chunked
bodies and bodies left unread on Flask routes."""

from __future__ import annotations

import json

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bot.api import LONE_SURROGATE
from tests.conftest import API_TOKEN
from tests.test_webhook import snapshot
from tests.test_webhook_fuzz import (
    CHUNKED,
    MALFORMED_CHUNKED,
    assert_log_has_no_error,
    raw_exchange,
    raw_request,
)

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
EXAMPLES_PER_OPERATION = 25


def fuzz(operation, label: str, ran: dict[str, int]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        ran[label] += 1
        response = case.call(headers=AUTH)
        assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}"
        if response.status_code >= 400:
            error = response.json()["error"]
            assert (
                set(error) == {"code", "message", "details"} and error["code"] and error["message"]
            )
        # Schema-valid requests may still be refused with 422 for reasons no schema can say
        # (a Page token Facebook refuses, an unknown profile in a node): not a failure.
        case.validate_response(response, headers=AUTH, excluded_checks=[positive_data_acceptance])

    check()


def test_api_answers_as_documented(app, fb, capsys):
    fb.create_page(name="Fuzzed Page")
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    ran: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        ran[label] = 0
        fuzz(operation, label, ran)
    assert len(ran) >= 12 and all(ran.values())
    with capsys.disabled():
        print(f"\nAPI fuzz: {sum(ran.values())} cases over {len(ran)} operations")


# -- lone surrogates, deep nesting: 4xx naming the field, never a 500 ----------------------

SURROGATE_BODIES = [  # (method, path, body, the field named in details.fields)
    (
        "put",
        "/contacts/c1",
        {"fields": {"FIRSTNAME": "Ann\ud800"}},
        {"fields": {"FIRSTNAME": [LONE_SURROGATE]}},
    ),
    (
        "put",
        "/contacts/c1",
        {"fields": {"CITY\udfff": "Oslo"}},
        {"fields": {"CITY\\udfff": [LONE_SURROGATE]}},
    ),  # a key is named escaped: the answer is valid UTF-8
    ("patch", "/profiles/{profile}", {"name": "\udc00Shop"}, {"name": [LONE_SURROGATE]}),
    (
        "post",
        "/programs/p1/nodes/n1/runs",
        {
            "contacts": [
                {"id": "ann"},
                {"id": "ben", "fields": {"FIRSTNAME": "Ben", "ORDER_ID": "\ud83d"}},
            ]
        },
        {"contacts": {"1": {"fields": {"ORDER_ID": [LONE_SURROGATE]}}}},
    ),
    (
        "post",
        "/programs/p1/nodes/n1/preview",
        {"contacts": [{"id": "ann", "fields": {"FIRSTNAME": "\ude00"}}]},
        {"contacts": {"0": {"fields": {"FIRSTNAME": [LONE_SURROGATE]}}}},
    ),
    (
        "put",
        "/programs/p1",
        {"name": "Welcome \ud800", "status": "active", "nodes": []},
        {"name": [LONE_SURROGATE]},
    ),
]


@pytest.mark.parametrize("method,path,body,named", SURROGATE_BODIES)
def test_a_lone_surrogate_is_422_naming_the_field_and_nothing_is_stored(
    api, store, redis_client, method, path, body, named
):
    profile = store.profiles.create(name="Shop", page_id="1001", page_name="Shop", page_token="t")
    before = snapshot(redis_client)
    # json.dumps escapes the surrogate as "\ud800", which Python's json (Flask's) accepts
    answer = api(
        method,
        path.format(profile=profile.id),
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 422, answer.get_data(as_text=True)
    error = answer.get_json()["error"]
    assert error["code"] == "validation_failed" and error["details"]["fields"] == named
    assert snapshot(redis_client) == before


def test_a_valid_surrogate_pair_is_text_and_is_stored(api, store):
    answer = api(
        "put",
        "/contacts/c1",
        data=json.dumps({"fields": {"FIRSTNAME": "Ann \U0001f600"}}),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200 and store.contacts.get("c1") == {"FIRSTNAME": "Ann \U0001f600"}


@pytest.mark.parametrize("path", ["/contacts/c1", "/programs/p1/nodes/n1/runs"])
def test_json_nested_past_the_parsers_limit_is_400(api, path):
    deep = "[" * 100_000 + "]" * 100_000
    method = "put" if path.startswith("/contacts") else "post"
    answer = api(method, path, data=deep, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "invalid_json"


field_values = st.text(
    alphabet=st.sampled_from(["a", "Z", " ", "é", "\U0001f600", "\ud800", "\udbff", "\udc00"]),
    max_size=6,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fields=st.dictionaries(
        st.sampled_from(["FIRSTNAME", "LASTNAME", "ORDER_ID", "CITY"]), field_values
    )
)
def test_contact_fields_with_any_mix_of_surrogates(api, store, fields):
    """422 naming exactly the values that hold a lone surrogate, else stored as sent; no 5xx."""
    body = json.dumps({"fields": fields})
    received = json.loads(body)["fields"]  # a high then a low surrogate arrive as one character
    answer = api("put", "/contacts/c1", data=body, headers={"Content-Type": "application/json"})
    bad = {name: [LONE_SURROGATE] for name, value in received.items() if not is_text(value)}
    if bad:
        assert answer.status_code == 422 and answer.get_json()["error"]["details"]["fields"] == {
            "fields": bad
        }
    else:
        assert answer.status_code == 200 and store.contacts.get("c1") == (received or None)


def is_text(value: str) -> bool:
    return not any(0xD800 <= ord(char) <= 0xDFFF for char in value)


# -- malformed chunked bodies and unread bodies on Flask routes, against real gunicorn -----

FLASK_BODY_ROUTES = [
    ("POST", "/api/v1/programs/p/nodes/n/runs"),
    ("POST", "/api/v1/programs/p/nodes/n/preview"),
    ("PUT", "/api/v1/contacts/c"),
    ("PUT", "/api/v1/programs/p"),
    ("PATCH", "/api/v1/profiles/{profile}"),
    ("POST", "/login"),
    ("POST", "/profiles/{profile}/delete"),
]


@pytest.mark.slow
def test_malformed_chunked_bodies_on_flask_routes_get_400_and_the_connection_closes(
    gunicorn, store, tmp_path
):
    """gunicorn's read errors become werkzeug's BadRequest: 400 JSON under /api, the error page
    elsewhere; `Connection: close`; no Traceback in the log."""
    profile = store.profiles.create(name="Shop", page_id="1001", page_name="Shop", page_token="t")
    for method, path in ((m, p.format(profile=profile.id)) for m, p in FLASK_BODY_ROUTES):
        for name, body, half_close in MALFORMED_CHUNKED:
            headers = (
                {**AUTH, **CHUNKED}
                if path.startswith("/api/")
                else {
                    "Transfer-Encoding": "chunked",
                    "Content-Type": "application/x-www-form-urlencoded",
                }
            )
            answer = raw_exchange(
                gunicorn.url, raw_request(method, path, headers, body), half_close
            )
            assert answer.status == 400, (method, path, name, answer)
            assert "\r\nConnection: close" in answer.head and answer.closed, (
                method,
                path,
                name,
                answer,
            )
            if path.startswith("/api/"):
                error = json.loads(answer.body)["error"]
                assert error["code"] == "bad_request" and "could not be read" in error["message"]
            else:
                assert b"could not be read" in answer.body
    assert (
        requests.get(f"{gunicorn.url}/api/v1/contacts/c", headers=AUTH, timeout=5).status_code
        == 404
    )
    assert_log_has_no_error(tmp_path / "gunicorn.log")


@pytest.mark.slow
def test_a_flask_answer_that_leaves_the_body_unread_closes_the_connection(gunicorn, tmp_path):
    """A form field over MAX_FORM_MEMORY_SIZE (413) or a wrong token (401) is answered before the
    body is read: `Connection: close`, so a keep-alive client's next request goes on a new
    connection instead of one gunicorn drops after draining 64 KiB. A body read to its end
    keeps the connection."""
    field = b"x" * 600_000
    form = b'--B\r\nContent-Disposition: form-data; name="password"\r\n\r\n%s\r\n--B--\r\n' % field
    runs = json.dumps({"contacts": [{"id": f"c{i}"} for i in range(20_000)]}).encode()
    unread = [
        (
            "POST",
            "/login",
            {"Content-Type": "multipart/form-data; boundary=B", "Content-Length": str(len(form))},
            form,
            413,
        ),
        (
            "POST",
            "/api/v1/programs/p/nodes/n/runs",
            {
                "Authorization": "Bearer wrong",
                "Content-Type": "application/json",
                "Content-Length": str(len(runs)),
            },
            runs,
            401,
        ),
    ]
    for method, path, headers, body, status in unread:
        answer = raw_exchange(gunicorn.url, raw_request(method, path, headers, body))
        assert (
            answer.status == status and "\r\nConnection: close" in answer.head and answer.closed
        ), (path, answer)
        assert (
            requests.get(f"{gunicorn.url}/healthz", timeout=5).status_code == 200
        )  # a new connection
    contact = json.dumps({"fields": {"FIRSTNAME": "Ann"}}).encode()
    answer = raw_exchange(
        gunicorn.url,
        raw_request(
            "PUT",
            "/api/v1/contacts/c",
            {**AUTH, "Content-Type": "application/json", "Content-Length": str(len(contact))},
            contact,
        ),
        timeout=1,
    )
    assert (
        answer.status == 200 and "\r\nConnection: keep-alive" in answer.head and not answer.closed
    )
    assert_log_has_no_error(tmp_path / "gunicorn.log")
