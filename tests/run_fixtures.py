"""Fixtures and helpers of the node-run tests (loaded for every test module by conftest's
`pytest_plugins`): a Page on the simulator served live, its profile, opted-in contacts, a
program with one Messenger node, and runs started and drained."""

from __future__ import annotations

import time

import pytest

from storage import keys
from storage.inbound import Event

TEMPLATE = {"name": "order_update", "language": "en", "parameters": ["ORDER_ID"]}


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def page(fb, live_app):
    page = fb.create_page(name="Shop")
    fb.add_template(page["id"], "order_update", "en", param_count=1)
    return page


@pytest.fixture
def profile(api, page):
    answer = api(
        "post",
        "/profiles",
        json={"name": "Shop", "page_id": page["id"], "page_access_token": page["token"]},
    )
    return answer.get_json()


@pytest.fixture
def opted_in(fb, store, page, profile):
    """Create a person on the Page and opt a contact in (window open unless `last` says when)."""

    def make(contact: str, last_interaction_ms: int | None = 0, **fields) -> str:
        last = now_ms() if last_interaction_ms == 0 else last_interaction_ms
        psid = fb.add_person(page["id"], last_interaction_ms=last)
        store.inbound.apply(
            [Event("optin", page["id"], psid, last or 1, profile=profile["id"], contact=contact)]
        )
        if last is None:  # never interacted: forget the opt-in's interaction time too
            store.redis.hdel(keys.seen(profile["id"]), psid)
        store.contacts.merge_many({contact: fields})
        return psid

    return make


@pytest.fixture
def program(api, profile):
    def save(
        message="Hi @FIRSTNAME|there@, order @ORDER_ID@ shipped.",
        template=None,
        status="active",
        node_id="n1",
    ):
        node = {
            "id": node_id,
            "type": "messenger",
            "profile_id": profile["id"],
            "tag": "POST_PURCHASE_UPDATE",
            "message": message,
        }
        if template:
            node["utility_template"] = template
        answer = api(
            "put", "/programs/p1", json={"name": "Orders", "status": status, "nodes": [node]}
        )
        assert answer.status_code in (200, 201), answer.get_json()
        return answer.get_json()

    return save


def connect_page_with_people(
    fb, store, api, contacts: list[str], page_name: str = "Shop", profile_name: str = ""
) -> tuple[dict, dict]:
    """A Page on the simulator connected as a profile, and one person per contact opted in
    (as the webhook would) inside the 24-hour window: (page, profile)."""
    page = fb.create_page(name=page_name)
    name = profile_name or page_name
    profile = api(
        "post",
        "/profiles",
        json={"name": name, "page_id": page["id"], "page_access_token": page["token"]},
    ).get_json()
    now = now_ms()
    psids = fb.add_people(page["id"], [{"last_interaction_ms": now} for _ in contacts])
    events = [
        Event("optin", page["id"], psid, now, profile=profile["id"], contact=cid)
        for cid, psid in zip(contacts, psids, strict=True)
    ]
    for start in range(0, len(events), 2000):
        store.inbound.apply(events[start : start + 2000])
    return page, profile


def start_run(api, contacts, run_id=None, node="n1"):
    body = {"contacts": [c if isinstance(c, dict) else {"id": c} for c in contacts]}
    if run_id:
        body["run_id"] = run_id
    return api("post", f"/programs/p1/nodes/{node}/runs", json=body)


def outcomes(api, run_id) -> dict[str, dict]:
    body = api("get", f"/runs/{run_id}?limit=1000").get_json()
    return {c["id"]: c for c in body["contacts"]}


def run_to_end(api, drain, contacts, **kwargs) -> tuple[str, dict]:
    answer = start_run(api, contacts, **kwargs)
    assert answer.status_code == 202, answer.get_json()
    drain()
    return answer.get_json()["run_id"], outcomes(api, answer.get_json()["run_id"])
