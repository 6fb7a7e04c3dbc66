"""Profile and contact API: bearer auth, validation, the Graph check, tokens never answered."""

from __future__ import annotations

import json
import logging

import pytest

from storage import keys

pytestmark = pytest.mark.usefixtures("redis_client")


@pytest.fixture
def page(fb):
    return fb.create_page(name="Jasper's Market")


def create(api, page, **overrides):
    body = {
        "name": "Jasper",
        "page_id": page["id"],
        "page_access_token": page["token"],
        **overrides,
    }
    return api("post", "/profiles", json=body)


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", "Basic dGVzdA==", "Bearer", "test-api-token"]
)
@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/profiles"),
        ("post", "/profiles"),
        ("get", "/profiles/1"),
        ("get", "/contacts/c-1"),
        ("put", "/contacts/c-1"),
    ],
)
def test_every_endpoint_needs_the_bearer_token(client, method, path, header):
    headers = {"Authorization": header} if header else {}
    answer = client.open(f"/api/v1{path}", method=method.upper(), headers=headers, json={})
    assert answer.status_code == 401
    assert answer.get_json()["error"]["code"] == "unauthorized"


def test_create_checks_the_token_subscribes_the_app_and_never_returns_the_token(
    api, fb, page, redis_client, caplog
):
    caplog.set_level(logging.DEBUG)
    answer = create(api, page)
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert body["name"] == "Jasper" and body["page_name"] == "Jasper's Market"
    assert body["status"] == "enabled" and body["health"] == "ok"
    assert body["optin_field"] == "FBOPTIN_001"
    assert answer.headers["Location"] == f"/api/v1/profiles/{body['id']}"
    assert "messages" in fb.page(page["id"])["subscribed_fields"]
    # The token is in no answer, no log line, and not in Redis in clear.
    listing = api("get", "/profiles").get_data(as_text=True) + api(
        "get", f"/profiles/{body['id']}"
    ).get_data(as_text=True)
    assert page["token"] not in answer.get_data(as_text=True) + listing
    assert page["token"] not in caplog.text
    assert page["token"] not in json.dumps(
        {k: redis_client.dump(k).hex() for k in redis_client.keys("*")}
    )
    assert page["token"] not in str(redis_client.hgetall(keys.profile(body["id"])))


def test_profile_ids_and_optin_fields_are_unique(api, fb):
    first = create(api, fb.create_page(name="A")).get_json()
    second = create(api, fb.create_page(name="B")).get_json()
    assert first["optin_field"] != second["optin_field"]
    assert [p["id"] for p in api("get", "/profiles").get_json()["profiles"]] == [
        first["id"],
        second["id"],
    ]


def test_a_page_belongs_to_one_profile(api, page):
    first = create(api, page).get_json()
    answer = create(api, page, name="Again")
    assert answer.status_code == 409
    assert answer.get_json()["error"] == {
        "code": "page_taken",
        "message": answer.get_json()["error"]["message"],
        "details": {"profile_id": first["id"]},
    }


def test_invalid_token_is_refused_and_nothing_is_stored(api, fb, page, redis_client):
    fb.invalidate_page(page["id"])
    answer = create(api, page)
    assert answer.status_code == 422
    assert answer.get_json()["error"]["code"] == "invalid_token"
    assert "#190" in answer.get_json()["error"]["message"]
    assert redis_client.keys(keys.profile("*")) == []


def test_token_of_another_page_is_refused(api, fb, page):
    other = fb.create_page(name="Other")
    answer = create(api, page, page_access_token=other["token"])
    assert answer.status_code == 422
    assert answer.get_json()["error"]["code"] == "page_not_accessible"


def test_facebook_unreachable_is_502(app, api, page, monkeypatch):
    from storage.embedded import free_port

    app.extensions["graph"].base = f"http://127.0.0.1:{free_port()}/v26.0"
    answer = create(api, page)
    assert (
        answer.status_code == 502 and answer.get_json()["error"]["code"] == "facebook_unavailable"
    )


@pytest.mark.parametrize(
    "body,field",
    [
        ({"page_id": "1", "page_access_token": "t"}, "name"),
        ({"name": "", "page_id": "1", "page_access_token": "t"}, "name"),
        ({"name": "x", "page_id": "not-digits", "page_access_token": "t"}, "page_id"),
        ({"name": "x", "page_id": "1\n", "page_access_token": "t"}, "page_id"),
        ({"name": "x", "page_id": "1", "page_access_token": "t\n"}, "page_access_token"),
        ({"name": "x", "page_id": "1"}, "page_access_token"),
        ({"name": "x", "page_id": "1", "page_access_token": "t", "status": "on"}, "status"),
        ({"name": "x", "page_id": "1", "page_access_token": "t", "surprise": 1}, "surprise"),
        ({"name": ["x"], "page_id": 1, "page_access_token": "t"}, "name"),
    ],
)
def test_validation_lists_each_bad_field(api, body, field, redis_client):
    answer = api("post", "/profiles", json=body)
    assert answer.status_code == 422
    error = answer.get_json()["error"]
    assert error["code"] == "validation_failed" and field in error["details"]["fields"]
    assert redis_client.keys("*") == []


def test_not_json_is_400(api):
    answer = api(
        "post",
        "/profiles",
        data="name=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "invalid_json"


def test_unknown_profile_is_404(api):
    for ident in ("999", "abc"):
        answer = api("get", f"/profiles/{ident}")
        assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found"


def test_contacts_keep_optin_fields_when_replaced(api, store, page, refs):
    profile = create(api, page).get_json()
    store.redis.hset(keys.contact("c-1"), profile["optin_field"], "6543")
    assert (
        api(
            "put", "/contacts/c-1", json={"fields": {"FIRSTNAME": "Ann", "CITY": "Paris"}}
        ).status_code
        == 200
    )
    answer = api("put", "/contacts/c-1", json={"fields": {"FIRSTNAME": "Anne"}}).get_json()
    assert answer["fields"] == {profile["optin_field"]: "6543", "FIRSTNAME": "Anne"}
    # the generic opt-in code's merge field: this contact's signed ref for the profile
    assert refs.verify(answer["optin_refs"]["FBOPTINREF_001"]) == (profile["id"], "c-1")
    assert api("get", "/contacts/c-1").get_json()["fields"]["FIRSTNAME"] == "Anne"


@pytest.mark.parametrize(
    "fields,bad",
    [
        ({"firstname": "x"}, "firstname"),
        ({"FBOPTIN_001": "123"}, "FBOPTIN_001"),
        ({"AGE": 3}, "AGE"),
        ({"BIO": "x" * 4001}, "BIO"),
    ],
)
def test_contact_field_validation(api, fields, bad, redis_client):
    answer = api("put", "/contacts/c-1", json={"fields": fields})
    assert answer.status_code == 422
    assert bad in answer.get_json()["error"]["details"]["fields"]["fields"]
    assert redis_client.keys("*") == []


def test_bad_contact_id_and_unknown_contact(api):
    assert api("get", "/contacts/has%20space").status_code == 422
    assert api("get", "/contacts/c-1%0A").status_code == 422  # a final newline
    assert api("get", "/contacts/nobody").status_code == 404


def test_openapi_document_describes_the_api_with_the_error_shape(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert {"/profiles", "/profiles/{profile_id}", "/contacts/{contact_id}"} <= set(
        document["paths"]
    )
    assert document["components"]["schemas"]["Error"]["required"] == ["error"]
    assert "page_access_token" not in document["components"]["schemas"]["Profile"]["properties"]
