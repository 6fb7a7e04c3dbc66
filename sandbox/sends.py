"""The Send API's rules: validate a POST /{page-id}/messages, accept it, post echo and receipts.

Order of checks follows what Facebook answers first (token, recipient, text, messaging_type,
tag, window, template, metadata); see /work/shared/reference/messenger-facts.md §4 and §5.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sandbox import events
from sandbox.errors import GraphError, invalid_param
from sandbox.state import DAY_MS, State, random_mid
from sandbox.webhooks import Runtime

MESSAGING_TYPES = ("RESPONSE", "UPDATE", "MESSAGE_TAG", "UTILITY")
RETIRED_TAGS = ("CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE")
SEVEN_DAY_TAGS = ("HUMAN_AGENT", "CUSTOMER_FEEDBACK")
MAX_TEXT = 2000
MAX_METADATA = 1000


def outside_window() -> GraphError:
    """Return the refusal for a send outside the 24-hour (or 7-day) window."""
    return GraphError(10, "(#10) This message is sent outside of allowed window.", 2018278)


def no_user() -> GraphError:
    """Return the refusal for a recipient the Page does not know."""
    return GraphError(100, "(#100) No matching user found", 2018001)


def find_target(state: State, page_id: str, recipient: Any) -> dict[str, Any]:
    """Return {"psid"} or {"user_ref"} with the last-interaction time, or raise 2018001."""
    if not isinstance(recipient, dict) or not (recipient.get("id") or recipient.get("user_ref")):
        raise invalid_param(
            'recipient must be {"id": PSID} or {"user_ref": REF}',
            "(#100) The parameter recipient is required",
        )
    with state.lock:
        if recipient.get("id"):
            person = state.person(page_id, str(recipient["id"]))
            if person is None:
                raise no_user()
            return {
                "psid": person["psid"],
                "last": person["last_interaction_ms"],
                "receipts": person["receipts"],
            }
        info = state.user_refs.get(page_id, {}).get(str(recipient["user_ref"]))
        if info is None:
            raise no_user()
        # A checkbox user may write a message later: that PSID's activity counts too.
        linked = state.person(page_id, info["psid"]) if info.get("psid") else None
        times = [
            t
            for t in (info.get("opted_in_ms"), linked and linked["last_interaction_ms"])
            if t is not None
        ]
        return {"user_ref": str(recipient["user_ref"]), "last": max(times, default=None)}


def check_message(message: Any) -> None:
    """Refuse an empty message or a text over 2000 characters."""
    if not isinstance(message, dict) or not any(
        message.get(k) for k in ("text", "attachment", "template")
    ):
        raise invalid_param(
            "message needs text, an attachment or a template",
            "(#100) The parameter message is required",
        )
    text = message.get("text")
    if text is not None and not isinstance(text, str):
        raise invalid_param("message.text must be a string")
    if text is not None and len(text) > MAX_TEXT:
        raise GraphError(
            100, f"(#100) Length of param message[text] must be less than or equal to {MAX_TEXT}"
        )


def check_tag(state: State, tag: Any, last: int | None) -> None:
    """Refuse unknown tags, retired tags once retired, and 7-day tags past 7 days."""
    if tag in RETIRED_TAGS:
        retired_on = state.cfg("tags_retired_on")
        if retired_on and state.today() >= dt.date.fromisoformat(retired_on):
            raise invalid_param(f"The message tag {tag} was retired on {retired_on}")
        return  # before retirement a tagged send goes out whatever the window
    if tag in SEVEN_DAY_TAGS:
        if last is None or state.now_ms() - last > 7 * DAY_MS:
            raise outside_window()
        return
    allowed = ", ".join(RETIRED_TAGS + SEVEN_DAY_TAGS)
    raise invalid_param(
        f"tag {tag!r} is not a message tag", f"(#100) Param tag must be one of {{{allowed}}}"
    )


def check_template(state: State, page: dict[str, Any], message: dict[str, Any]) -> None:
    """Refuse a utility send whose template is unknown, unapproved or has the wrong params."""
    template = message.get("template")
    if not isinstance(template, dict):
        raise invalid_param("UTILITY messages need message.template")
    name = template.get("name")
    language = (template.get("language") or {}).get("code")
    with state.lock:
        known = page["templates"].get((name, language))
        known = dict(known) if known else None
    label = f"Template '{name}' ({language})"
    if known is None:
        raise invalid_param(f"{label} does not exist for this Page")
    if known["status"] != "APPROVED":
        raise invalid_param(f"{label} is {known['status']}, not APPROVED")
    count = body_param_count(template)
    if count != known["param_count"]:
        raise invalid_param(f"{label} expects {known['param_count']} body parameters, got {count}")


def body_param_count(template: dict[str, Any]) -> int:
    """Count the parameters of the template's body component."""
    for component in template.get("components") or []:
        if isinstance(component, dict) and str(component.get("type", "")).lower() == "body":
            return len(component.get("parameters") or [])
    return 0


def validate(state: State, page: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Apply Facebook's checks in Facebook's order; return the target or raise GraphError."""
    target = find_target(state, page["id"], params.get("recipient"))
    message = params.get("message")
    check_message(message)
    mtype = params.get("messaging_type")
    if mtype not in MESSAGING_TYPES:
        raise invalid_param(
            f"messaging_type {mtype!r} is not valid",
            "(#100) Param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG, UTILITY}",
        )
    if mtype == "MESSAGE_TAG":
        check_tag(state, params.get("tag"), target["last"])
    elif mtype in ("RESPONSE", "UPDATE"):
        if target["last"] is None or state.now_ms() - target["last"] > DAY_MS:
            raise outside_window()
    else:
        check_template(state, page, message)
    metadata = message.get("metadata", params.get("metadata"))
    if metadata is not None and len(str(metadata)) > MAX_METADATA:
        raise GraphError(
            100, f"(#100) Length of param metadata must be less than or equal to {MAX_METADATA}"
        )
    return target


def accept(
    runtime: Runtime, page_id: str, target: dict[str, Any], entry: dict[str, Any]
) -> dict[str, Any]:
    """Record an accepted send, schedule its webhooks and return Facebook's answer."""
    state = runtime.state
    mid, sent_ms = random_mid(), state.now_ms()
    entry.update(status="accepted", message_id=mid, timestamp_ms=sent_ms)
    state.log_send(entry)
    state.count_accepted(page_id, int(time.time()))
    if "user_ref" in target:
        # No recipient_id, echo or receipts for user_ref sends (Meta, since 2018-02-19).
        return {"message_id": mid}
    schedule_followups(runtime, page_id, target, mid, sent_ms, entry)
    return {"recipient_id": target["psid"], "message_id": mid}


def schedule_followups(
    runtime: Runtime,
    page_id: str,
    target: dict[str, Any],
    mid: str,
    sent_ms: int,
    entry: dict[str, Any],
) -> None:
    """Queue the echo, then the delivery and read receipts the person's settings allow."""
    state, psid = runtime.state, target["psid"]
    with state.lock:
        cfg = dict(state.config)
    if cfg["echo"]:
        runtime.webhooks.deliver_later(
            "echo",
            lambda: events.echo(
                page_id,
                psid,
                mid,
                cfg["app_id"],
                sent_ms,
                entry["text"],
                entry["metadata"],
                time_ms=state.now_ms(),
            ),
        )
    receipts = target["receipts"]
    if receipts in ("delivery", "read") and cfg["delivery_delay_ms"] is not None:
        mids = [mid] if cfg["delivery_mids"] else None
        runtime.webhooks.deliver_later(
            "delivery",
            lambda: events.delivery(
                page_id, psid, sent_ms, state.now_ms(), mids, time_ms=state.now_ms()
            ),
            cfg["delivery_delay_ms"],
        )
    if receipts == "read" and cfg["read_delay_ms"] is not None:
        runtime.webhooks.deliver_later(
            "read",
            lambda: events.read(page_id, psid, sent_ms, state.now_ms(), time_ms=state.now_ms()),
            cfg["read_delay_ms"],
        )
