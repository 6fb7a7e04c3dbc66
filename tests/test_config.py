"""Configuration: sandbox defaults, required secrets outside sandbox, one message per problem."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from dataclasses import fields
from datetime import date

import pytest

from bot.config import PROCESS_SETTINGS, SETTINGS, Settings, settings_table
from bot.errors import ConfigError

PRODUCTION = {
    "REDIS_URL": "redis://127.0.0.1:7777/0",
    "SECRET_KEY": "s",
    "API_TOKEN": "a",
    "ADMIN_PASSWORD": "p",
    "FB_APP_ID": "1",
    "FB_APP_SECRET": "x",
    "FB_VERIFY_TOKEN": "v",
    "TOKEN_ENCRYPTION_KEY": "q8d5wH4bPZ0bV1N6oQ0m0c2u4nJkK9m1XG2b4B2l3bA=",
}


def test_sandbox_mode_works_with_only_a_redis_url():
    settings = Settings.from_env({"REDIS_URL": "unix:///tmp/x.sock"}, dotenv=False)
    assert settings.sandbox is True
    assert settings.graph_api_url == "http://127.0.0.1:8001"
    assert settings.graph_api_version == "v26.0"
    assert settings.api_token and settings.token_encryption_keys


def test_facebook_credentials_switch_to_live_mode_and_graph_facebook():
    settings = Settings.from_env(PRODUCTION, dotenv=False)
    assert settings.sandbox is False
    assert settings.graph_api_url == "https://graph.facebook.com"


def test_live_mode_lists_every_missing_secret_once():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REDIS_URL": "redis://h:1/0", "FB_APP_ID": "1"}, dotenv=False)
    problems = caught.value.problems
    for name in (
        "SECRET_KEY",
        "API_TOKEN",
        "ADMIN_PASSWORD",
        "FB_APP_SECRET",
        "FB_VERIFY_TOKEN",
        "TOKEN_ENCRYPTION_KEY",
    ):
        assert sum(p.startswith(name) for p in problems) == 1, (name, problems)


def test_malformed_values_are_each_named():
    env = {
        **PRODUCTION,
        "REDIS_URL": "http://nope",
        "GRAPH_API_VERSION": "26",
        "STATS_TIMEZONE": "Mars/Base",
        "WEBHOOK_MAX_BYTES": "lots",
        "TOKEN_ENCRYPTION_KEY": "not-a-key",
        "SANDBOX": "maybe",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env, dotenv=False)
    text = "\n".join(caught.value.problems)
    for name in (
        "REDIS_URL",
        "GRAPH_API_VERSION",
        "STATS_TIMEZONE",
        "WEBHOOK_MAX_BYTES",
        "TOKEN_ENCRYPTION_KEY",
        "SANDBOX",
    ):
        assert name in text
    assert len(caught.value.problems) == 6


def test_missing_redis_url_explains_make_run():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({}, dotenv=False)
    assert "make run" in caught.value.problems[0]


def test_summary_for_logs_has_no_secrets():
    summary = Settings.from_env(PRODUCTION, dotenv=False).public_summary()
    joined = " ".join(summary.values())
    assert "q8d5wH4b" not in joined and "secret_key" not in summary


def test_a_malformed_value_is_named_once_and_its_default_used_meanwhile():
    with pytest.raises(ConfigError) as caught:  # SANDBOX falls back to "no FB_APP_ID": sandbox mode
        Settings.from_env({"REDIS_URL": "redis://h:1/0", "SANDBOX": "maybe"}, dotenv=False)
    assert caught.value.problems == ["SANDBOX must be 1 or 0 (got 'maybe')"]


def test_range_date_choice_and_url_problems_say_what_is_expected():
    env = {
        **PRODUCTION,
        "SEND_CONCURRENCY": "500",
        "TAG_RETIREMENT_DATE": "27/04/2026",
        "LOG_LEVEL": "loud",
        "PUBLIC_URL": "example.com",
        "GRAPH_TIMEOUT_SECONDS": "0",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env, dotenv=False)
    assert caught.value.problems == [
        "PUBLIC_URL must be an http(s) URL (got 'example.com')",
        "GRAPH_TIMEOUT_SECONDS must be between 1 and 120 (got 0)",
        "SEND_CONCURRENCY must be between 1 and 128 (got 500)",
        "TAG_RETIREMENT_DATE must be a date like 2026-04-27 (got '27/04/2026')",
        "LOG_LEVEL must be one of DEBUG, ERROR, INFO, WARNING (got 'LOUD')",
    ]


@pytest.mark.parametrize("zone", ["Europe", "Mars/Base", "../etc", "x" * 300])
def test_a_time_zone_that_is_no_zone_is_a_problem_not_a_crash(zone):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**PRODUCTION, "STATS_TIMEZONE": zone}, dotenv=False)
    assert caught.value.problems == [
        f"STATS_TIMEZONE must be an IANA time zone such as Europe/Paris (got {zone!r})"
    ]


def test_each_bad_encryption_key_gets_its_line_and_an_empty_list_is_refused():
    good = PRODUCTION["TOKEN_ENCRYPTION_KEY"]
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {**PRODUCTION, "TOKEN_ENCRYPTION_KEY": f"bad, {good}, worse"}, dotenv=False
        )
    assert [p.split(" is ")[0] for p in caught.value.problems] == [
        "TOKEN_ENCRYPTION_KEY key #1",
        "TOKEN_ENCRYPTION_KEY key #3",
    ]
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**PRODUCTION, "TOKEN_ENCRYPTION_KEY": " , "}, dotenv=False)
    assert caught.value.problems == ["TOKEN_ENCRYPTION_KEY must list at least one Fernet key"]
    keys = Settings.from_env(
        {**PRODUCTION, "TOKEN_ENCRYPTION_KEY": f" {good} ,{good}"}, dotenv=False
    )
    assert keys.token_encryption_keys == (good, good)


def test_sandbox_defaults_follow_the_simulator_port_and_the_secret_key():
    settings = Settings.from_env(
        {"REDIS_URL": "redis://h:1/0", "SANDBOX_PORT": "9001", "SECRET_KEY": "k"}, dotenv=False
    )
    assert settings.graph_api_url == settings.fb_login_url == "http://127.0.0.1:9001"
    assert settings.session_cookie_secure is False and settings.secret_key == "k"
    # the same key every start, so Page tokens stored in sandbox mode stay readable
    assert settings.token_encryption_keys == (
        base64.urlsafe_b64encode(hashlib.sha256(b"k").digest()).decode(),
    )


def test_live_defaults_and_explicit_urls():
    live = Settings.from_env(PRODUCTION, dotenv=False)
    assert (live.fb_login_url, live.session_cookie_secure, live.public_url) == (
        "https://www.facebook.com",
        True,
        "",
    )
    given = Settings.from_env(
        {
            **PRODUCTION,
            "GRAPH_API_URL": "http://graph.test:81/",
            "SANDBOX": "1",
            "SESSION_COOKIE_SECURE": "no",
            "PUBLIC_URL": "https://bot.example/",
        },
        dotenv=False,
    )
    assert (given.sandbox, given.graph_api_url, given.fb_login_url) == (
        True,
        "http://graph.test:81",
        "http://graph.test:81",
    )
    assert (given.session_cookie_secure, given.public_url) == (False, "https://bot.example")


def test_sandbox_0_without_credentials_asks_for_every_secret():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REDIS_URL": "redis://h:1/0", "SANDBOX": "0"}, dotenv=False)
    assert [p.split(" ")[0] for p in caught.value.problems] == [
        "SECRET_KEY",
        "API_TOKEN",
        "ADMIN_PASSWORD",
        "FB_APP_ID",
        "FB_APP_SECRET",
        "FB_VERIFY_TOKEN",
        "TOKEN_ENCRYPTION_KEY",
    ]
    assert caught.value.problems[0] == f"SECRET_KEY is not set: {SETTINGS['SECRET_KEY'].meaning}"


def test_typed_values_come_from_the_declared_defaults():
    settings = Settings.from_env(PRODUCTION, dotenv=False)
    assert (settings.graph_timeout_seconds, settings.send_rate_per_page, settings.port) == (
        10.0,
        20.0,
        8000,
    )
    assert settings.tag_retirement_date == date(2026, 4, 27) and settings.log_level == "INFO"
    assert {f.name for f in fields(Settings)} == {s.attribute for s in SETTINGS.values()}


def test_settings_table_has_one_row_per_setting_with_its_default_and_meaning():
    rows = settings_table().splitlines()
    assert rows[:2] == ["| name | default | meaning |", "| --- | --- | --- |"]
    names = [row.split(" | ")[0].removeprefix("| ") for row in rows[2:]]
    assert names == [f"`{name}`" for name in [*SETTINGS, *PROCESS_SETTINGS]]
    port = SETTINGS["PORT"]
    assert f"| `PORT` | `{port.default}` | {port.meaning} |" in rows
    assert (
        "| `SECRET_KEY` | required outside sandbox "
        "(sandbox: `sandbox-secret-key-not-for-production`) |" in settings_table()
    )


def test_a_pipe_in_a_meaning_cannot_break_the_table(monkeypatch):
    odd = dataclasses.replace(SETTINGS["PORT"], meaning="a | b")
    monkeypatch.setitem(SETTINGS, "PORT", odd)
    assert "| `PORT` | `8000` | a \\| b |" in settings_table().splitlines()


def test_retention_settings_must_nest():
    """A receipt may not outlive the rows it adds to, nor rows their day's counters."""
    redis = {"REDIS_URL": "redis://h:1/0"}
    env = {**redis, "RECEIPT_WAIT_DAYS": "30", "ROW_RETENTION_DAYS": "20"}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env, dotenv=False)
    assert caught.value.problems == [
        "RECEIPT_WAIT_DAYS (30) must not exceed ROW_RETENTION_DAYS (20): a receipt would "
        "rebuild rows already dropped"
    ]
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {**redis, "ROW_RETENTION_DAYS": "40", "STATS_RETENTION_DAYS": "31"}, dotenv=False
        )
    assert "ROW_RETENTION_DAYS (40) must not exceed STATS_RETENTION_DAYS (31)" in str(caught.value)
    nested = {**redis, "RECEIPT_WAIT_DAYS": "20", "ROW_RETENTION_DAYS": "20"}
    assert Settings.from_env(nested, dotenv=False).row_retention_days == 20
