"""In headless Chromium: sign in, connect a Page through (simulated) Facebook Login, copy the
opt-in code. Screenshots go to tests/artifacts/ for a reviewer."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

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
