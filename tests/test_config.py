"""Configuration: sandbox defaults, required secrets outside sandbox, one message per problem."""
from __future__ import annotations

import pytest

from bot.config import Settings
from bot.errors import ConfigError

PRODUCTION = {"REDIS_URL": "redis://127.0.0.1:7777/0", "SECRET_KEY": "s", "API_TOKEN": "a",
              "ADMIN_PASSWORD": "p", "FB_APP_ID": "1", "FB_APP_SECRET": "x", "FB_VERIFY_TOKEN": "v",
              "TOKEN_ENCRYPTION_KEY": "q8d5wH4bPZ0bV1N6oQ0m0c2u4nJkK9m1XG2b4B2l3bA="}


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
    for name in ("SECRET_KEY", "API_TOKEN", "ADMIN_PASSWORD", "FB_APP_SECRET", "FB_VERIFY_TOKEN",
                 "TOKEN_ENCRYPTION_KEY"):
        assert sum(p.startswith(name) for p in problems) == 1, (name, problems)


def test_malformed_values_are_each_named():
    env = {**PRODUCTION, "REDIS_URL": "http://nope", "GRAPH_API_VERSION": "26", "STATS_TIMEZONE": "Mars/Base",
           "WEBHOOK_MAX_BYTES": "lots", "TOKEN_ENCRYPTION_KEY": "not-a-key", "SANDBOX": "maybe"}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env, dotenv=False)
    text = "\n".join(caught.value.problems)
    for name in ("REDIS_URL", "GRAPH_API_VERSION", "STATS_TIMEZONE", "WEBHOOK_MAX_BYTES",
                 "TOKEN_ENCRYPTION_KEY", "SANDBOX"):
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
