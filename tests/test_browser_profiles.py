"""In headless Chromium: sign in, connect a Page through (simulated) Facebook Login, copy the
opt-in code. Screenshots go to tests/artifacts/ for a reviewer."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from playwright.sync_api import expect

from bot import stats_view
from bot.pages.format import duration
from storage.inbound import Event
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("settings_overrides", [{"SESSION_COOKIE_SECURE": "0"}])
def test_sign_in_create_a_profile_and_copy_the_optin_code(
    page_in_browser, live_app, fb, store, settings_overrides
):
    page = page_in_browser
    ann = fb.create_user("Ann", pages=[{"name": "Ann's Bakery", "role": "admin"}])
    page.goto(f"{live_app.url}/profiles")
    assert page.url.startswith(f"{live_app.url}/login")
    page.fill("#password", "test-admin")
    page.click("#sign-in")
    page.click("#new-profile")
    page.fill("#name", "Bakery updates")
    page.click("#facebook-connect")
    # the simulator's Facebook Login dialog
    page.wait_for_selector("#login-form")
    page.screenshot(path=str(ARTIFACTS / "facebook-login-dialog.png"))
    page.click(f"#login-as-{ann['id']}")
    page.wait_for_selector("#page")
    assert "Ann's Bakery — Admin" in page.inner_text("#page")
    page.screenshot(path=str(ARTIFACTS / "profile-new-pick-page.png"))
    page.click("#save")
    page.wait_for_selector("#optin-code")
    assert page.inner_text("h1") == "Bakery updates"
    assert page.inner_text("#optin-field") == "FBOPTIN_001"
    page.click("#copy-optin-code")
    expect(page.locator("#copy-status")).to_have_text("Copied.")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.input_value("#optin-code")
    assert (
        "fb-send-to-messenger" in copied
        and ann["pages"][0]["id"] in copied
        and "@FBOPTINREF_001@" in copied
    )
    page.screenshot(path=str(ARTIFACTS / "profile-page.png"), full_page=True)
    (profile,) = store.profiles.list()
    assert profile.connected_by == ann["id"]


@pytest.mark.parametrize("settings_overrides", [{"SESSION_COOKIE_SECURE": "0"}])
@pytest.mark.parametrize("width", [1200, 390])
def test_a_paused_profile_says_why_and_resumes_from_its_page(
    page_in_browser, live_app, fb, store, settings_overrides, width
):
    page = page_in_browser
    page.set_viewport_size({"width": width, "height": 900})
    fb_page, profile = bakery_profile(fb, store)
    assert fb.post_event("policy_block", page_id=fb_page["id"])["status"] == 200
    sign_in_as_operator(page, live_app)
    page.goto(f"{live_app.url}/profiles/{profile.id}")
    card = page.locator("#sending-paused")
    expect(card).to_contain_text("blocked the Page from messaging for its Platform Policies")
    expect(card).to_contain_text("until Facebook lifts the block")
    page.screenshot(path=str(ARTIFACTS / f"profile-paused-{width}.png"), full_page=True)
    assert overflowing(page) == [], "the page must fit the screen"
    page.click("#resume-sending")
    expect(page.locator("body")).to_contain_text("Sending is resumed for “Bakery updates”")
    expect(page.locator("#sending-paused")).to_have_count(0)
    assert store.sending.state(profile.id).state == "open"


@pytest.mark.parametrize("settings_overrides", [{"SESSION_COOKIE_SECURE": "0"}])
@pytest.mark.parametrize("width", [1200, 390])
def test_recover_failed_sends_counts_first_then_shows_the_progress(
    page_in_browser, live_app, fb, store, settings_overrides, width
):
    page = page_in_browser
    page.set_viewport_size({"width": width, "height": 900})
    fb_page, profile = bakery_profile(fb, store)
    sign_in_as_operator(page, live_app)
    page.goto(f"{live_app.url}/profiles/{profile.id}")
    page.click("#recover-link")
    expect(page.locator("#recover")).to_contain_text("may have delivered it")
    page.click("#count")
    expect(page.locator("#recover-count")).to_contain_text("0 contacts would be sent again")
    assert page.locator("#recover-start").count() == 0  # nothing to send: no button
    page.screenshot(path=str(ARTIFACTS / f"recover-{width}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def bakery_profile(fb, store):
    """A Page on the simulator and its profile, made directly in storage."""
    fb_page = fb.create_page(name="Bakery")
    profile = store.profiles.create(
        name="Bakery updates",
        page_id=fb_page["id"],
        page_name="Bakery",
        page_token=fb_page["token"],
    )
    return fb_page, profile


def sign_in_as_operator(page, live_app) -> None:
    page.goto(f"{live_app.url}/login")
    page.fill("#password", "test-admin")
    page.click("#sign-in")


def overflowing(page) -> list[str]:
    return page.evaluate(
        "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right"
        " > window.innerWidth + 1).map(e => e.tagName + '#' + e.id + '.' + e.className)"
    )


@pytest.mark.parametrize("settings_overrides", [{"SESSION_COOKIE_SECURE": "0"}])
@pytest.mark.parametrize("width", [1200, 390])
def test_consent_counts_history_and_time_to_delivery(
    page_in_browser, live_app, fb, store, settings_overrides, width
):
    page = page_in_browser
    page.set_viewport_size({"width": width, "height": 900})
    fb_page, profile = bakery_profile(fb, store)
    sent = int(time.time() * 1000) - 60_000
    store.contacts.merge_many({c: {"FIRSTNAME": c.title()} for c in ("ann", "bob", "cy")})
    store.inbound.apply(
        [
            Event("optin", fb_page["id"], f"9{n}", sent, profile=profile.id, contact=c)
            for n, c in enumerate(("ann", "bob", "cy"))
        ]
    )
    store.consent.withdraw(profile.id, "cy", source="api", page_id=fb_page["id"], at_ms=sent + 1)
    for n, c in enumerate(("ann", "bob")):  # both delivered 8 s after sending
        store.messages.record_sent(profile.id, c, f"9{n}", f"m_{n}", sent)
        store.inbound.apply(
            [
                Event(
                    "delivery",
                    fb_page["id"],
                    f"9{n}",
                    sent + 8000,
                    wm=sent + 8000,
                    mids=(f"m_{n}",),
                )
            ]
        )
    day = datetime.fromtimestamp(sent / 1000, store.tz).date().isoformat()
    latency = stats_view.delivery_latency(store.stats.day(profile.id, day))
    assert 5 < latency["p50_s"] <= 10 and latency["within_1m"] == 2  # the 5-10 s bucket

    sign_in_as_operator(page, live_app)
    page.goto(f"{live_app.url}/profiles/{profile.id}")
    expect(page.locator("#opted-in-count")).to_have_text("2")
    expect(page.locator("#opted-out-count")).to_have_text("1")
    page.screenshot(path=str(ARTIFACTS / f"profile-consent-{width}.png"), full_page=True)
    assert overflowing(page) == []

    page.goto(f"{live_app.url}/profiles/{profile.id}/stats")
    expect(page.locator(".latency").first).to_have_text(f"median {duration(latency['p50_s'])}")
    page.screenshot(path=str(ARTIFACTS / f"stats-latency-{width}.png"), full_page=True)

    page.goto(f"{live_app.url}/profiles/{profile.id}/stats/{day}/delivered")
    page.click("#contacts-table a:text('ann')")
    expect(page.locator("#consent-state")).to_have_text("opted in")
    expect(page.locator("#consent-events")).to_contain_text("Send to Messenger button")
    page.screenshot(path=str(ARTIFACTS / f"consent-history-{width}.png"), full_page=True)
    assert overflowing(page) == []
    page.click("#withdraw-consent")
    expect(page.locator("#consent-state")).to_have_text("opted out")
    expect(page.locator("#consent-events")).to_contain_text("withdrawn on this page")
    assert store.consent.state(profile.id, "ann") == "opted_out"
    assert profile.optin_field not in store.contacts.get("ann")
