"""Usage statistics: counts, receipts late and twice, time zones, filters, paging, CSV, access."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from storage.inbound import Event
from storage.programs import Node
from tests.test_pages import sign_in_operator, sign_in_owner

ADMIN = ["MANAGE", "CREATE_CONTENT", "MODERATE", "MESSAGING", "ADVERTISE", "ANALYZE"]


def ms(text: str) -> int:
    """Epoch ms of an ISO time like 2026-11-20T10:00:00+00:00."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


class Seeder:
    """Outcomes and receipts written through storage, as runs and webhooks write them."""

    def __init__(self, store, page_id: str, profile_id: str):
        self.store, self.page_id, self.profile_id = store, page_id, profile_id
        self.run_id = "r-seed"
        node = Node("n1", profile_id, "ACCOUNT_UPDATE", "Hi")
        store.runs.create(self.run_id, "p-seed", node, {f"c{i}": {} for i in range(5000)}, 500)

    def sent(self, contact: str, psid: str, at: int, mid: str | None = None) -> str:
        mid = mid or f"m_{contact}_{at}"
        assert self.store.runs.finish(
            self.run_id, contact, "sent", message_id=mid, recipient=psid, at_ms=at
        )
        return mid

    def not_sent(self, contact: str, kind: str, reason: str, at: int, detail: str = "") -> None:
        assert self.store.runs.finish(
            self.run_id, contact, kind, reason=reason, detail=detail, at_ms=at
        )

    def receipt(self, kind: str, psid: str, watermark: int, at: int) -> None:
        self.store.inbound.apply([Event(kind, self.page_id, psid, at, wm=watermark)])


@pytest.fixture
def setup(store, fb):
    page = fb.create_page(name="Stats Page")
    profile = store.profiles.create(
        name="Stats", page_id=page["id"], page_name="Stats Page", page_token=page["token"]
    )
    return page, profile, Seeder(store, page["id"], profile.id)


@pytest.fixture
def operator(client):
    return sign_in_operator(client)


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_counts_after_every_outcome_with_receipts_late_and_twice(api, setup):
    page, profile, seed = setup
    t = now_utc() - timedelta(hours=1)
    at = int(t.timestamp() * 1000)
    for i in range(4):
        seed.sent(f"c{i}", f"psid{i}", at + i)
    seed.sent("c4", "user_ref:u-1", at + 4)  # checkbox: no receipts will come
    seed.not_sent("c5", "warning", "no_optin", at)
    seed.not_sent("c6", "warning", "no_optin", at)
    seed.not_sent(
        "c7", "failed", "recipient_unavailable", at, detail="#551 This person isn't available"
    )
    seed.receipt("delivery", "psid0", at + 10, at + 60_000)
    seed.receipt("delivery", "psid0", at + 10, at + 60_000)  # Facebook repeats itself
    seed.receipt("read", "psid1", at + 10, at + 90_000)  # read before any delivery receipt
    seed.receipt("read", "psid1", at + 10, at + 90_000)
    body = api("get", f"/profiles/{profile.id}/stats").get_json()
    (day,) = body["days"]
    assert (day["sent"], day["delivered"], day["read"], day["warning"], day["failed"]) == (
        5,
        2,
        1,
        2,
        1,
    )
    assert day["no_receipts"] == 1 and day["awaiting_receipt"] == 2
    assert (
        day["sent"] == day["delivered"] + day["awaiting_receipt"] + day["no_receipts"]
    )  # honest accounting
    assert day["read"] <= day["delivered"]
    assert day["reasons"] == {"no_optin": 2, "recipient_unavailable": 1}
    assert body["delivered_last_7_days"] == 2
    # the numbers drill down to their contacts
    delivered = api(
        "get", f"/profiles/{profile.id}/stats/{day['date']}/contacts?kind=delivered"
    ).get_json()
    assert sorted(c["contact_id"] for c in delivered["contacts"]) == ["c0", "c1"]
    failed = api(
        "get", f"/profiles/{profile.id}/stats/{day['date']}/contacts?kind=failed"
    ).get_json()
    assert (
        failed["contacts"][0]["reason"].startswith("The person can't receive")
        and "#551" in failed["contacts"][0]["detail"]
    )
    warned = api(
        "get", f"/profiles/{profile.id}/stats/{day['date']}/contacts?kind=warning&reason=no_optin"
    ).get_json()
    assert warned["total"] == 2


@pytest.mark.parametrize("settings_overrides", [{"STATS_TIMEZONE": "America/New_York"}])
def test_days_follow_the_stats_timezone_and_receipts_count_on_the_send_day(
    api, setup, settings_overrides
):
    _, profile, seed = setup
    tz = ZoneInfo("America/New_York")
    yesterday_ny = datetime.now(tz).date() - timedelta(days=1)
    late_evening = datetime(
        yesterday_ny.year, yesterday_ny.month, yesterday_ny.day, 23, 30, tzinfo=tz
    )
    sent_at = int(late_evening.timestamp() * 1000)  # already "today" in UTC
    seed.sent("c1", "psid1", sent_at)
    seed.receipt("delivery", "psid1", sent_at + 5, sent_at + 3_600_000)  # delivered after midnight
    body = api("get", f"/profiles/{profile.id}/stats").get_json()
    assert [(d["date"], d["sent"], d["delivered"]) for d in body["days"]] == [
        (yesterday_ny.isoformat(), 1, 1)
    ]
    assert body["timezone"] == "America/New_York"


def seed_week(seed):
    """Three days: sends on each, warnings only on the middle one."""
    base = now_utc().replace(hour=12, minute=0, second=0) - timedelta(days=2)
    days = []
    for offset in range(3):
        at = int((base + timedelta(days=offset)).timestamp() * 1000)
        days.append((base + timedelta(days=offset)).date().isoformat())
        seed.sent(f"c{offset}", f"psid{offset}", at)
        if offset == 1:
            seed.not_sent("c9", "warning", "outside_window_no_template", at)
    return days


def test_details_page_filters_by_kind_and_date_kept_in_the_url(client, operator, setup):
    _, profile, seed = setup
    days = seed_week(seed)
    html = client.get(f"/profiles/{profile.id}/stats").get_data(as_text=True)
    assert all(f'data-date="{d}"' in html for d in days)
    warnings = client.get(f"/profiles/{profile.id}/stats?kind=warning").get_data(as_text=True)
    assert [d for d in days if f'data-date="{d}"' in warnings] == [days[1]]
    assert "Outside the 24-hour window and no utility template: 1" in warnings
    narrowed = client.get(f"/profiles/{profile.id}/stats?from={days[2]}&to={days[2]}").get_data(
        as_text=True
    )
    assert [d for d in days if f'data-date="{d}"' in narrowed] == [days[2]]
    assert (
        f"from={days[2]}" in narrowed and f"to={days[2]}" in narrowed
    )  # the CSV link keeps the filters


@pytest.mark.parametrize(
    "query,message",
    [
        ("kind=bogus", "Unknown kind"),
        ("from=yesterday", "“yesterday” is not a date like 2026-11-25"),
        ("from=2026-12-31&to=2026-01-01", "swapped"),
        ("from=2020-01-01&to=2026-01-01", "At most 366 days"),
    ],
)
def test_bad_filter_values_get_a_message_not_an_error_page(
    client, operator, setup, query, message, api
):
    _, profile, _ = setup
    answer = client.get(f"/profiles/{profile.id}/stats?{query}")
    assert answer.status_code == 200 and message in answer.get_data(as_text=True)
    assert (
        api("get", f"/profiles/{profile.id}/stats?{query}").status_code == 422
    )  # the API is strict


def test_empty_period_says_so(client, operator, setup):
    _, profile, _ = setup
    html = client.get(f"/profiles/{profile.id}/stats").get_data(as_text=True)
    assert 'id="no-stats"' in html and "Nothing happened" in html


def test_drill_down_lists_are_paged_and_show_data_to_recognise_contacts(
    client, operator, store, setup
):
    _, profile, seed = setup
    at = int(now_utc().timestamp() * 1000) - 60_000
    for i in range(120):
        seed.sent(f"c{i}", f"psid{i}", at + i)
    store.contacts.merge_many(
        {"c0": {"FIRSTNAME": "Ann", "EMAIL": "ann@example.com", "CITY": "Paris"}}
    )
    day = datetime.fromtimestamp(at / 1000, UTC).date().isoformat()
    first = client.get(f"/profiles/{profile.id}/stats/{day}/sent").get_data(as_text=True)
    assert (
        "Showing 1–50 of 120" in first
        and 'id="next-page"' in first
        and 'id="previous-page"' not in first
    )
    assert "FIRSTNAME: Ann" in first and "EMAIL: ann@example.com" in first and "CITY" not in first
    last = client.get(f"/profiles/{profile.id}/stats/{day}/sent?page=3").get_data(as_text=True)
    assert "Showing 101–120 of 120" in last and 'id="next-page"' not in last
    assert len(re.findall(r"<tr>", last)) == 21  # header + 20
    assert "Showing 1–50 of 120" in client.get(
        f"/profiles/{profile.id}/stats/{day}/sent?page=x"
    ).get_data(as_text=True)
    assert (
        client.get(f"/profiles/{profile.id}/stats/{day}/sent?page={10**30}").status_code == 200
    )  # past the end


def test_csv_exports_are_streamed_and_spreadsheet_safe(client, operator, store, setup):
    _, profile, seed = setup
    at = int(now_utc().timestamp() * 1000) - 60_000
    seed.not_sent("c1", "warning", "no_optin", at)
    store.contacts.merge_many(
        {"c1": {"FIRSTNAME": '=HYPERLINK("http://evil")', "LASTNAME": '+1, "Bob"'}}
    )
    day = datetime.fromtimestamp(at / 1000, UTC).date().isoformat()
    answer = client.get(f"/profiles/{profile.id}/stats/{day}/warning.csv")
    assert answer.is_streamed and answer.mimetype == "text/csv"
    assert "attachment" in answer.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(answer.get_data(as_text=True))))
    assert rows[0] == [
        "contact_id",
        "firstname",
        "lastname",
        "fullname",
        "email",
        "phone",
        "time",
        "reason_code",
        "reason",
        "message_id",
        "detail",
    ]
    assert rows[1][:3] == ["c1", '\'=HYPERLINK("http://evil")', '\'+1, "Bob"']  # text, not formulas
    assert rows[1][7] == "no_optin" and len(rows) == 2
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)
    details = list(
        csv.reader(
            io.StringIO(client.get(f"/profiles/{profile.id}/stats.csv").get_data(as_text=True))
        )
    )
    assert details[0][:4] == ["date", "sent", "delivered", "read"] and details[1][0] == day
    row = dict(zip(details[0], details[1], strict=True))
    assert row["warning"] == "1" and "warning:no_optin=1" in row["reasons"]
    assert row["recovered"] == "0"


def test_csv_cell_escaping():
    from bot.csv_export import safe_cell

    assert [safe_cell(v) for v in ("=1+1", "+44", "-3", "@SUM(A1)", "\tx", "ok", None, 5)] == [
        "'=1+1",
        "'+44",
        "'-3",
        "'@SUM(A1)",
        "'\tx",
        "ok",
        "",
        "5",
    ]


def test_profile_page_shows_the_week_chart_and_reasons_with_advice(client, operator, setup):
    _, profile, seed = setup
    seed_week(seed)
    html = client.get(f"/profiles/{profile.id}").get_data(as_text=True)
    assert 'id="delivered-7-days"' in html and "<svg" in html and html.count("<rect") > 3 * 7
    assert "Outside the 24-hour window and no utility template." in html
    assert "Add an approved utility template to the node" in html  # what to do about it


def test_every_stats_url_is_access_controlled(client, store, setup, api):
    page, profile, seed = setup
    day = now_utc().date().isoformat()
    urls = [
        f"/profiles/{profile.id}/stats",
        f"/profiles/{profile.id}/stats.csv",
        f"/profiles/{profile.id}/stats/{day}/sent",
        f"/profiles/{profile.id}/stats/{day}/sent.csv",
    ]
    for url in urls:
        assert client.get(url).status_code == 302  # not signed in
    other = store.profiles.create(name="Other", page_id="424242", page_name="Other", page_token="t")
    sign_in_owner(client, store, "u-other", [("424242", ADMIN)])
    for url in urls:
        assert client.get(url).status_code == 404, url  # someone else's profile
    assert client.get(f"/profiles/{other.id}/stats").status_code == 200
    assert (
        client.get(f"/api/v1/profiles/{profile.id}/stats").status_code == 401
    )  # the API needs its token


def test_deleted_profile_stats_are_404_and_leave_no_keys(
    client, operator, api, drain, redis_client, setup
):
    _, profile, seed = setup
    seed_week(seed)
    api("delete", f"/profiles/{profile.id}")
    drain()
    assert client.get(f"/profiles/{profile.id}/stats").status_code == 404
    assert api("get", f"/profiles/{profile.id}/stats").status_code == 404
    assert [k for k in redis_client.keys("*") if f":p:{profile.id}:" in k] == []


def test_rows_past_retention_are_dropped_but_counters_stay(store, setup):
    _, profile, seed = setup
    old = now_utc() - timedelta(days=100)
    seed.sent("c1", "psid1", int(old.timestamp() * 1000))
    seed.sent("c2", "psid2", int(now_utc().timestamp() * 1000))
    assert store.stats.trim_rows(profile.id, 90, now_utc().date().isoformat()) == 1
    old_day, new_day = old.date().isoformat(), now_utc().date().isoformat()
    assert (
        store.stats.rows(profile.id, old_day, "sent") == []
        and store.stats.day(profile.id, old_day)["sent"] == 1
    )
    assert len(store.stats.rows(profile.id, new_day, "sent")) == 1
    assert store.stats.trim_rows(profile.id, 90, now_utc().date().isoformat()) == 0  # done once


# -- how the pages show the numbers ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".csv"])
def test_a_drill_down_list_with_a_bad_date_is_400_with_the_stats_page_message(
    client, operator, setup, suffix
):
    _, profile, _ = setup
    message = "“2026-13-45” is not a date like 2026-11-25."
    assert message in client.get(f"/profiles/{profile.id}/stats?from=2026-13-45").get_data(
        as_text=True
    )
    answer = client.get(f"/profiles/{profile.id}/stats/2026-13-45/sent{suffix}")
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400 and message in html
    title, heading = re.search(r"<title>(.*?)</title>.*?<h1>(.*?)</h1>", html, re.S).groups()
    assert "2026-13-45" not in title + heading  # the raw input is never a page's title
    assert (
        client.get(f"/profiles/{profile.id}/stats/20261125/sent{suffix}").status_code == 400
    )  # one spelling
    unknown = client.get(f"/profiles/{profile.id}/stats/2026-11-25/bogus{suffix}")
    assert unknown.status_code == 400 and "There is no list of “bogus”" in unknown.get_data(
        as_text=True
    )


def test_counts_have_thousands_separators_and_the_delivered_rate_beside_them(
    client, operator, setup
):
    _, profile, seed = setup
    at = int(now_utc().timestamp() * 1000) - 60_000
    for i in range(1500):  # 1,000 to one person, who gets them; 500 to another, who does not (yet)
        seed.sent(f"c{i}", "psid-a" if i < 1000 else "psid-b", at)
    seed.receipt("delivery", "psid-a", at, at + 5000)
    day = datetime.fromtimestamp(at / 1000, UTC).date().isoformat()
    profile_page = client.get(f"/profiles/{profile.id}").get_data(as_text=True)
    assert re.search(r'id="delivered-7-days"[^>]*><strong>1,000</strong>', profile_page)
    assert re.search(
        r'id="delivered-rate-7-days">66.6% of 1,500 sent<', profile_page
    )  # 66.67 rounded down
    assert "500 awaiting a receipt" in profile_page
    stats = client.get(f"/profiles/{profile.id}/stats").get_data(as_text=True)
    row = re.search(rf'<tr data-date="{day}">(.*?)</tr>', stats, re.S).group(1)
    cells = [
        re.sub(r"<[^>]+>|\s+", " ", c).split()
        for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    ]
    assert cells[1:5] == [
        ["1,500"],
        ["1,000", "66.6%", "median", "0.5", "s"],  # time to delivery, from the histogram
        ["0"],
        ["500"],
    ]  # sent, delivered + rate, read, awaiting
    assert '<span class="rate" id="total-delivered-rate">66.6%</span>' in stats
    assert "Showing 1–50 of 1,500" in client.get(
        f"/profiles/{profile.id}/stats/{day}/sent"
    ).get_data(as_text=True)


def test_percent_and_thousands_filters():
    from bot.pages.format import percent_of, thousands

    assert [thousands(n) for n in (0, 999, 1000, 1234567)] == ["0", "999", "1,000", "1,234,567"]
    assert [
        percent_of(p, w) for p, w in ((0, 5), (1, 3), (2, 3), (9999, 10000), (5, 5), (3, 0))
    ] == ["0%", "33.3%", "66.6%", "99.9%", "100%", ""]


def test_a_new_profile_says_no_messages_yet_with_a_hint_instead_of_an_empty_chart(
    client, operator, store, fb, setup
):
    _, profile, seed = setup
    html = client.get(f"/profiles/{profile.id}").get_data(as_text=True)
    assert (
        "No messages yet" in html
        and "copy the opt-in code</a>" in html
        and "Messenger node" in html
    )
    assert "<svg" not in html and 'id="delivered-7-days"' not in html
    page = fb.create_page(
        name="Old Page"
    )  # older than a week, quiet this week: it had messages once
    old = store.profiles.create(
        name="Old",
        page_id=page["id"],
        page_name="Old Page",
        page_token=page["token"],
        now=now_utc().timestamp() - 30 * 86_400,
    )
    html = client.get(f"/profiles/{old.id}").get_data(as_text=True)
    assert "No messages in the last 7 days" in html and "No messages yet" not in html
    seed.sent("c1", "psid1", int(now_utc().timestamp() * 1000) - 60_000)
    html = client.get(f"/profiles/{profile.id}").get_data(as_text=True)
    assert "No messages" not in html and "<svg" in html


def contrast(colour: str, background: str = "#ffffff") -> float:
    """WCAG contrast ratio of two #rrggbb colours."""

    def luminance(hex_colour: str) -> float:
        channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(colour), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_chart_legend_names_each_colour_in_text_and_the_colours_stand_out():
    from datetime import date

    from bot.pages.chart import SERIES, bar_chart
    from bot.stats_view import DayRow

    html = str(
        bar_chart(
            [DayRow("2026-11-20", 1500, 1000, 0, 3, 1, 0)], date(2026, 11, 14), date(2026, 11, 20)
        )
    )
    legend = re.search(r'<ul class="legend".*?</ul>', html, re.S).group(
        0
    )  # HTML text, not scaled SVG text
    for _, label, colour in SERIES:
        assert f'fill="{colour}"/></svg>{label}</li>' in legend
        assert f'fill="{colour}"><title>2026-11-20:' in html  # the bars wear the legend's colours
        assert contrast(colour) >= 3, (label, colour)  # WCAG 1.4.11 against the white card
    assert (
        "viewBox" not in html and ">1,500</text>" in html
    )  # labels keep their size; counts are separated
    assert 'fill="#d55e00"><title>2026-11-20: 4 not sent</title>' in html


def test_the_not_sent_total_follows_the_kind_filter(client, operator, setup):
    _, profile, seed = setup
    seed_week(seed)  # one warning
    seed.not_sent(
        "c8", "failed", "recipient_unavailable", int(now_utc().timestamp() * 1000) - 60_000
    )
    totals = {
        kind: re.search(
            r'id="total-not-sent"[^>]*>(.*?)</th>',
            client.get(f"/profiles/{profile.id}/stats?kind={kind}").get_data(as_text=True),
            re.S,
        )
        .group(1)
        .strip()
        for kind in ("all", "warning", "failed")
    }
    assert totals == {"all": "1 / 1", "warning": "1", "failed": "1"}
