"""In headless Chromium at a phone's width (390 px): every page fits without sideways scrolling,
and the chart's legend and labels stay readable. Screenshots go to tests/artifacts/narrow-*.png."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ARTIFACTS
from tests.test_stats import Seeder

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}


def seed_busy_profile(fb, store):
    """A profile with long names, every kind of row and contacts with long data fields."""
    fb_page = fb.create_page(name="The Very Long Name Of A Facebook Page For A Bakery")
    profile = store.profiles.create(
        name="Bakery order updates for the whole region",
        page_id=fb_page["id"],
        page_name=fb_page["name"],
        page_token=fb_page["token"],
    )
    seed = Seeder(store, fb_page["id"], profile.id)
    now = int(time.time() * 1000)
    for day in range(7):
        at = now - day * 86_400_000 - 60_000
        for i in range(40):
            seed.sent(f"c{day * 100 + i}", f"psid{day}", at + i)
        seed.receipt("delivery", f"psid{day}", at + 20, at + 1000)
        seed.not_sent(f"w{day}", "warning", "outside_window_no_template", at)
        seed.not_sent(
            f"f{day}",
            "failed",
            "recipient_unavailable",
            at,
            detail="#551 This person isn't available",
        )
    store.contacts.merge_many(
        {
            "w0": {
                "FIRSTNAME": "Wanda",
                "LASTNAME": "Longname-Smithson-Worthington",
                "EMAIL": "wanda.longname-smithson-worthington@example.com",
            }
        }
    )
    return profile, time.strftime("%Y-%m-%d", time.gmtime(now / 1000))


@pytest.mark.parametrize("settings_overrides", [{"SESSION_COOKIE_SECURE": "0", "SANDBOX": "1"}])
def test_every_page_fits_a_phone_and_the_chart_stays_legible(
    browser, live_app, fb, store, settings_overrides
):
    profile, day = seed_busy_profile(fb, store)
    fresh_page = fb.create_page(name="A Brand New Page")
    fresh = store.profiles.create(
        name="Brand new",
        page_id=fresh_page["id"],
        page_name=fresh_page["name"],
        page_token=fresh_page["token"],
    )
    ann = fb.create_user(
        "Ann", pages=[{"name": "Ann's Bakery with a rather long Page name", "role": "admin"}]
    )
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    page.set_default_timeout(10_000)
    too_wide, chart = {}, {}

    def check(name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"narrow-{name}.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            too_wide[name] = width

    try:
        page.goto(f"{live_app.url}/login")
        check("login")
        page.fill("#password", "test-admin")
        page.click("#sign-in")
        page.wait_for_selector("#new-profile")
        check("profiles")
        for name, path in (
            ("profile", f"/profiles/{profile.id}"),
            ("profile-new", f"/profiles/{fresh.id}"),
            ("stats", f"/profiles/{profile.id}/stats"),
            ("stats-warnings", f"/profiles/{profile.id}/stats?kind=warning"),
            ("list-sent", f"/profiles/{profile.id}/stats/{day}/sent"),
            ("list-warnings", f"/profiles/{profile.id}/stats/{day}/warning"),
            ("list-bad-date", f"/profiles/{profile.id}/stats/not-a-date/sent"),
            ("error", "/profiles/99999"),
        ):
            page.goto(f"{live_app.url}{path}")
            check(name)
            if name == "profile":
                chart = read_chart(page)
        page.goto(f"{live_app.url}/profiles/new")
        check("new-profile")
        page.fill("#name", "Bakery updates")
        page.click("#facebook-connect")
        page.wait_for_selector("#login-form")
        page.click(f"#login-as-{ann['id']}")
        page.wait_for_selector("#page")
        check("new-profile-pick-page")
    finally:
        context.close()
    assert too_wide == {}, f"pages wider than the phone (px): {too_wide}"
    # The legend names every colour in text of at least 12 px; axis labels are at least 11 px tall.
    assert chart["legend"] == ["Sent", "Delivered", "Not sent"], chart
    assert min(chart["legend_px"]) >= 12 and chart["labels_px"] and min(chart["labels_px"]) >= 11, (
        chart
    )


def read_chart(page) -> dict:
    """The chart's legend texts and font sizes, and the rendered height of its labels."""
    legend = page.locator("ul.legend li")
    return {
        "legend": legend.all_inner_texts(),
        "legend_px": legend.evaluate_all(
            "items => items.map(e => parseFloat(getComputedStyle(e).fontSize))"
        ),
        "labels_px": page.locator("#last-week svg[role=img] text").evaluate_all(
            "texts => texts.map(t => t.getBoundingClientRect().height)"
        ),
    }
