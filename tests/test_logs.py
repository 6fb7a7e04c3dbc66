"""Logs are JSON lines naming the request (or run) they belong to, and never carry secrets."""

from __future__ import annotations

import json
import logging
import re

from bot.logs import JsonFormatter


def test_log_lines_are_json_with_the_request_id_and_no_secret(client, caplog):
    caplog.set_level(logging.INFO)
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post(
        "/login",
        data={"password": "hunter2-not-it", "csrf_token": token},
        headers={"X-Request-Id": "req-42"},
    )
    lines = [
        JsonFormatter().format(r) for r in caplog.records if "sign-in refused" in r.getMessage()
    ]
    assert lines, "the refused sign-in was not logged"
    entry = json.loads(lines[-1])
    assert (
        entry["id"] == "req-42"
        and entry["level"] == "warning"
        and entry["logger"] == "bot.pages.login"
    )
    assert "hunter2" not in "".join(lines)
