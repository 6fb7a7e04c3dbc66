"""The whole loop over real HTTP: the simulator posts signed webhooks to the running app."""

from __future__ import annotations

import time

import pytest

from storage.stats import day_of
from tests.conftest import wait_until


@pytest.fixture
def connected(api, fb, live_app):
    page = fb.create_page(name="Live Page")
    profile = api(
        "post",
        "/profiles",
        json={"name": "Live", "page_id": page["id"], "page_access_token": page["token"]},
    ).get_json()
    return page, profile


def test_optin_posted_by_facebook_reaches_the_contact(fb, refs, store, connected):
    page, profile = connected
    psid = fb.add_person(page["id"])
    result = fb.post_event(
        "optin", page_id=page["id"], psid=psid, ref=refs.sign(profile["id"], "c-42"), repeat=3
    )
    assert result["status"] == 200
    assert store.contacts.get("c-42") == {profile["optin_field"]: psid}
    assert (
        store.inbound.last_seen(profile["id"], psid)
        == result["payload"]["entry"][0]["messaging"][0]["timestamp"]
    )


def test_forged_signature_from_the_wire_is_refused(fb, refs, store, connected):
    page, profile = connected
    psid = fb.add_person(page["id"])
    result = fb.post_event(
        "optin", page_id=page["id"], psid=psid, ref=refs.sign(profile["id"], "c-1"), signature="bad"
    )
    assert result["status"] == 403
    assert store.contacts.get("c-1") is None


def test_receipts_posted_by_facebook_are_counted(fb, store, connected):
    page, profile = connected
    psid = fb.add_person(page["id"])
    sent_ms = int(time.time() * 1000)
    store.messages.record_sent(profile["id"], "c-1", psid, "m_live", sent_ms)
    fb.post_event(
        "delivery", page_id=page["id"], psid=psid, watermark=sent_ms + 5, mids=["m_live"], repeat=2
    )
    fb.post_event("read", page_id=page["id"], psid=psid, watermark=sent_ms + 10, repeat=2)
    counts = wait_until(
        lambda: (c := store.stats.day(profile["id"], day_of(sent_ms, store.tz)))["read"] and c
    )
    assert (counts["sent"], counts["delivered"], counts["read"]) == (1, 1, 1)
