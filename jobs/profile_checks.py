"""Periodic: is each profile's Page token still good, and is our app still subscribed?

Facebook unsubscribes an app from a Page after an hour of failed webhooks ("Webhooks
Disabled"), and tokens die when passwords change or roles go. One Graph call or two per
profile, spaced out, once per PROFILE_CHECK_MINUTES, and once when the workers start (a
restart must not leave "ok" standing for a token Facebook has refused meanwhile). A check
records its time (`health_checked_at`), which the API and the profile page show beside the
health; a check that could not reach Facebook leaves both as they were.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from flask import current_app

from bot import graph
from bot.crypto import TokenDecryptError
from bot.stats_view import today
from storage import get_storage

log = logging.getLogger(__name__)
SPACING_S = 0.2  # at most 5 profiles a second: a health check must not eat the Pages' rate limits
# At start-up Facebook may not answer yet (in sandbox mode the simulator starts beside the worker).
START_RETRIES, RETRY_AFTER_S = 3, 10


def queue_checks() -> int:
    """Ticker task: one small job per profile on the maintenance queue, spaced out, so checks
    never hold up sends and never burst at Facebook. Returns how many were queued."""
    every = current_app.config["SETTINGS"].profile_check_minutes * 60
    return _queue_checks(str(int(time.time() // every)), retries=0)


def queue_start_checks() -> int:
    """Ticker start-up task: the same checks at once, retried while Facebook is unreachable."""
    return _queue_checks(f"start-{int(time.time())}", retries=START_RETRIES)


def _queue_checks(round_: str, retries: int) -> int:
    every = current_app.config["SETTINGS"].profile_check_minutes * 60
    queue = current_app.extensions["rq_maintenance"]
    profiles = get_storage().profiles.list()
    for position, profile in enumerate(profiles):
        queue.enqueue_in(
            timedelta(seconds=position * SPACING_S),
            check_profile,
            profile.id,
            retries,
            job_id=f"check-profile-{profile.id}-{round_}",
            result_ttl=every,
            failure_ttl=86400,
        )
    return len(profiles)


def check_profile(profile_id: str, retries: int = 0) -> str:
    """RQ job: check one profile (checked / needs_reauth / resubscribed / skipped); a check that
    Facebook did not answer is tried again `retries` more times."""
    profile = get_storage().profiles.get(profile_id)
    if profile is None:
        return "skipped"
    outcome = _check(profile)
    if outcome in ("needs_reauth", "resubscribed"):
        log.warning("profile check %s: %s", profile_id, outcome)
    if outcome == "skipped" and retries > 0:
        current_app.extensions["rq_maintenance"].enqueue_in(
            timedelta(seconds=RETRY_AFTER_S),
            check_profile,
            profile_id,
            retries - 1,
            result_ttl=600,
            failure_ttl=86400,
        )
    return outcome


def check_profiles(spacing_s: float = SPACING_S) -> dict[str, int]:
    """Check every profile now, one after another (for tools and tests)."""
    tally = {"checked": 0, "needs_reauth": 0, "resubscribed": 0, "skipped": 0}
    for profile in get_storage().profiles.list():
        tally[_check(profile)] += 1
        time.sleep(spacing_s)
    return tally


def _check(profile) -> str:
    store, client = get_storage(), current_app.extensions["graph"]
    try:
        token = store.profiles.page_token(profile.id)
        info = client.debug_token(token)
        if not info.get("is_valid"):
            reason = str(
                (info.get("error") or {}).get("message", "Facebook says the token is not valid")
            )
            store.profiles.flag_unhealthy(profile.id, "needs_reauth", reason)
            return "needs_reauth"
        missing = set(graph.SUBSCRIBED_FIELDS) - set(
            client.subscribed_fields(profile.page_id, token)
        )
        if missing:
            client.subscribe(profile.page_id, token)
            log.warning(
                "profile %s: app was unsubscribed from page %s; subscribed again",
                profile.id,
                profile.page_id,
            )
        store.profiles.touch_checked(profile.id)
        return "resubscribed" if missing else "checked"
    except (graph.TokenError, TokenDecryptError) as error:
        store.profiles.flag_unhealthy(profile.id, "needs_reauth", str(error)[:300])
        return "needs_reauth"
    except graph.GraphError as error:
        log.info("profile %s not checked this time: %s", profile.id, error.summary())
        return "skipped"


def retention_pass(now_ms: int | None = None) -> dict[str, int]:
    """Ticker task (hourly), so that what each profile keeps stays bounded: statistics past
    STATS_RETENTION_DAYS, per-contact rows past ROW_RETENTION_DAYS, unreachable recipients whose
    time is over, messages awaiting receipts past RECEIPT_WAIT_DAYS (the undelivered count
    as no receipt), and fingerprints of contacts erased more than ERASED_REMEMBERED_DAYS ago."""
    store = get_storage()
    settings = current_app.config["SETTINGS"]
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    wait_cutoff = now_ms - settings.receipt_wait_days * 86_400_000
    done = {"days": 0, "row_days": 0, "unreachable": 0, "no_receipt": 0, "awaiting_dropped": 0}
    done["erasures_forgotten"] = store.erasure.forget_erased(now_ms)
    done["run_keys_timed"] = store.runs.expire_untimed_once()
    day = today(store).isoformat()
    for profile in store.profiles.list():
        # Receipts first: "no receipt" counts on days the trims below still keep.
        undelivered, dropped = store.messages.stop_awaiting(profile.id, wait_cutoff)
        done["no_receipt"] += undelivered
        done["awaiting_dropped"] += dropped
        done["days"] += store.stats.trim_days(profile.id, settings.stats_retention_days, day)
        done["row_days"] += store.stats.trim_rows(profile.id, settings.row_retention_days, day)
        done["unreachable"] += store.sending.trim_unreachable(profile.id, now_ms)
    if any(done.values()):
        log.info(
            "retention: %(days)d profile-days forgotten, %(row_days)d profile-days of rows "
            "dropped, %(unreachable)d unreachable "
            "recipients forgiven, %(awaiting_dropped)d messages no longer awaiting receipts "
            "(%(no_receipt)d never delivered)",
            done,
        )
    return done
