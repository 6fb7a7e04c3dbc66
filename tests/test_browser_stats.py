"""In headless Chromium: the profile page, its 7-day link, the warnings filter, a drill-down
list and its CSV. One screenshot of each page goes to tests/artifacts/."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.conftest import ARTIFACTS
from tests.test_stats import Seeder

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("settings_overrides", [{"SESSION_COOKIE_SECURE": "0"}])
def test_profile_page_to_details_to_warnings_to_contacts_to_csv(
    page_in_browser, live_app, fb, store, settings_overrides
):
    page = page_in_browser
    fb_page = fb.create_page(name="Bakery")
    profile = store.profiles.create(
        name="Bakery <updates>",
        page_id=fb_page["id"],
        page_name="Bakery",
        page_token=fb_page["token"],
    )
    seed = Seeder(store, fb_page["id"], profile.id)
    now = int(time.time() * 1000)
    three_days_ago_noon = (now // 86_400_000 - 3) * 86_400_000 + 12 * 3_600_000
    for i in range(12):
        seed.sent(f"c{i}", f"psid{i}", three_days_ago_noon + i * 60_000)
    for i in range(8):
        seed.sent(f"d{i}", f"qsid{i}", now - 60_000 + i)
    seed.receipt("delivery", "qsid0", now, now + 1000)
    seed.receipt("read", "qsid1", now, now + 2000)
    store.contacts.merge_many({"w1": {"FIRSTNAME": "<b>Wanda</b>", "EMAIL": "wanda@example.com"}})
    seed.not_sent("w1", "warning", "no_optin", now - 30_000)
    seed.not_sent("w2", "warning", "outside_window_no_template", now - 20_000)
    seed.not_sent(
        "f1",
        "failed",
        "recipient_unavailable",
        now - 10_000,
        detail="#551 This person isn't available",
    )

    page.goto(f"{live_app.url}/login")
    page.fill("#password", "test-admin")
    page.click("#sign-in")
    page.goto(f"{live_app.url}/profiles/{profile.id}")
    expect(page.locator("#delivered-7-days")).to_contain_text("2 messages delivered")
    expect(page.locator("#problems")).to_contain_text("has not opted in")
    page.screenshot(path=str(ARTIFACTS / "stats-profile-page.png"), full_page=True)

    page.click("#delivered-7-days")
    expect(page.locator("#stats-table")).to_be_visible()
    assert page.locator("#stats-table tbody tr").count() == 2
    page.screenshot(path=str(ARTIFACTS / "stats-details.png"), full_page=True)

    page.select_option("#kind", "warning")
    page.click("#apply-filters")
    expect(page.locator("#stats-table tbody tr")).to_have_count(1)
    assert "kind=warning" in page.url  # the view is bookmarkable
    page.screenshot(path=str(ARTIFACTS / "stats-warnings.png"), full_page=True)

    page.click("#stats-table tbody tr a.warning")
    expect(page.locator("#contacts-table tbody tr")).to_have_count(2)
    expect(page.locator("#contacts-table")).to_contain_text(
        "FIRSTNAME: <b>Wanda</b>"
    )  # shown as text, not markup
    page.screenshot(path=str(ARTIFACTS / "stats-contacts.png"), full_page=True)

    with page.expect_download() as download:
        page.click("#download-csv")
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    assert [r[0] for r in rows[1:]] == ["w1", "w2"] and rows[1][1] == "<b>Wanda</b>"
    assert download.value.suggested_filename.endswith("-warning.csv")
