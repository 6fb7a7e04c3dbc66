"""State that stays bounded: the hourly retention pass stops awaiting receipts after
RECEIPT_WAIT_DAYS (an undelivered message then counts as "no receipt" on its send day), and the
statistics settle. Real Redis; the pass is called as the ticker calls it, with a fixed clock."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from jobs.profile_checks import retention_pass
from storage import keys
from storage.inbound import Event

DAY_MS = 86_400_000
PAGE = "104857600000777"


@pytest.fixture
def profile(store):
    return store.profiles.create(name="Shop", page_id=PAGE, page_name="Shop", page_token="t")


def day_of(store, ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, store.tz).date().isoformat()


@pytest.mark.parametrize("settings_overrides", [{"RECEIPT_WAIT_DAYS": "7"}])
def test_messages_stop_awaiting_receipts_after_the_wait(
    app, api, store, profile, settings_overrides
):
    now = int(time.time() * 1000)
    old, recent = now - 8 * DAY_MS, now - DAY_MS
    store.messages.record_sent(profile.id, "c1", "psid-1", "m.old-undelivered", old)
    store.messages.record_sent(profile.id, "c2", "psid-2", "m.old-delivered", old + 1)
    store.messages.record_sent(profile.id, "c3", "psid-3", "m.recent", recent)
    store.inbound.apply([Event("delivery", PAGE, "psid-2", old + 5, wm=old + 1)])

    with app.app_context():
        done = retention_pass(now_ms=now)
        assert done["awaiting_dropped"] == 2 and done["no_receipt"] == 1
        again = retention_pass(now_ms=now)
    assert (again["awaiting_dropped"], again["no_receipt"]) == (0, 0)  # done once
    assert store.redis.hkeys(keys.awaiting(profile.id)) == ["psid-3"]
    assert store.stats.day(profile.id, day_of(store, old))["no_receipts"] == 1

    stats = api("get", f"/profiles/{profile.id}/stats?from={day_of(store, old)}").get_json()
    rows = {row["date"]: row for row in stats["days"]}
    settled = rows[day_of(store, old)]
    assert (settled["sent"], settled["delivered"], settled["no_receipts"]) == (2, 1, 1)
    assert settled["awaiting_receipt"] == 0  # it no longer waits forever
    assert rows[day_of(store, recent)]["awaiting_receipt"] == 1  # still within the wait

    # A receipt Facebook sends after the wait finds nothing left to count.
    store.inbound.apply([Event("delivery", PAGE, "psid-1", now, wm=now)])
    assert store.stats.day(profile.id, day_of(store, old))["delivered"] == 1


@pytest.mark.parametrize(
    "settings_overrides", [{"STATS_RETENTION_DAYS": "40", "ROW_RETENTION_DAYS": "30"}]
)
def test_statistics_older_than_their_retention_are_forgotten(
    app, store, profile, settings_overrides
):
    now = int(time.time() * 1000)
    old, kept = now - 41 * DAY_MS, now - 39 * DAY_MS
    store.messages.record_sent(profile.id, "c1", "user_ref:a", "m.1", old)  # no receipts
    store.messages.record_sent(profile.id, "c2", "user_ref:b", "m.2", kept)
    with app.app_context():
        assert retention_pass(now_ms=now)["days"] == 1
    old_day, kept_day = day_of(store, old), day_of(store, kept)
    assert store.redis.zrange(keys.stat_days(profile.id), 0, -1) == [kept_day]
    assert not store.redis.exists(
        keys.day_counters(profile.id, old_day), keys.day_rows(profile.id, old_day, "sent")
    )
    assert store.stats.day(profile.id, kept_day)["sent"] == 1


def test_time_to_delivery_per_day_from_receipts_watermarks(app, api, client, store, profile):
    """Each delivered message counts in one bucket (not cumulative); median and 90th
    percentile come from the day's histogram, never from scanning messages."""
    sent = int(time.time() * 1000) - 3 * DAY_MS
    delays_s = [2, 20, 40, 600, 7200, 172_800]  # 3 within a minute, 1 hour, 1 day, later
    for i, delay in enumerate(delays_s):
        store.messages.record_sent(profile.id, f"c{i}", f"psid-{i}", f"m.{i}", sent)
        store.inbound.apply([Event("delivery", PAGE, f"psid-{i}", sent, wm=sent + delay * 1000)])
    store.inbound.apply([Event("delivery", PAGE, "psid-0", sent, wm=sent + 999_000)])  # again
    day = day_of(store, sent)
    row = next(
        r
        for r in api("get", f"/profiles/{profile.id}/stats?from={day}").get_json()["days"]
        if r["date"] == day
    )
    latency = row["delivery_latency"]
    assert (latency["within_1m"], latency["within_1h"]) == (3, 1)
    assert (latency["within_1d"], latency["later"]) == (1, 1)
    assert row["delivered"] == 6  # a repeated receipt counts once, in one bucket
    # Rank 3 of 6 is the 30-60 s bucket's one message: its upper end, 60 s. Rank 5.4 falls in
    # the 1-2 day bucket (the 2-day delivery), 40 % of the way: 86 400 + 0.4 x 86 400 s.
    assert (latency["p50_s"], latency["p90_s"]) == (60.0, 120_960.0)
    empty = api("get", f"/profiles/{profile.id}/stats").get_json()["totals"]["delivery_latency"]
    assert empty["p50_s"] == 60.0  # the totals row sums the histograms


@pytest.mark.parametrize("settings_overrides", [{"STATS_TIMEZONE": "America/New_York"}])
def test_time_to_delivery_counts_on_the_send_day_across_midnight(
    api, store, profile, settings_overrides
):
    """Sent 20 s before local midnight, delivered 45 s later: the send day has the delivery and
    its latency, the next day has neither."""
    three_days_ago = datetime.fromtimestamp(time.time() - 3 * 86_400, store.tz)
    midnight = three_days_ago.replace(hour=0, minute=0, second=0, microsecond=0)
    next_midnight = midnight + timedelta(days=1)  # wall-clock arithmetic: right across DST too
    sent = int(next_midnight.timestamp() * 1000) - 20_000  # 23:59:40 local
    store.messages.record_sent(profile.id, "c1", "psid-1", "m.1", sent)
    store.inbound.apply([Event("delivery", PAGE, "psid-1", sent + 45_000, wm=sent + 45_000)])
    send_day, next_day = day_of(store, sent), day_of(store, sent + 45_000)
    assert send_day != next_day
    days = {
        r["date"]: r
        for r in api(
            "get", f"/profiles/{profile.id}/stats?from={send_day}&to={next_day}"
        ).get_json()["days"]
    }
    assert days[send_day]["delivered"] == 1
    assert days[send_day]["delivery_latency"]["within_1m"] == 1
    assert 30 < days[send_day]["delivery_latency"]["p50_s"] <= 60  # the 30-60 s bucket
    assert next_day not in days or days[next_day]["delivered"] == 0
