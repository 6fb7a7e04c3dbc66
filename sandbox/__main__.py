"""Run the Facebook simulator standalone:
`python -m sandbox [--host H] [--port P] [--seed F] [--state F]`.

Environment: SANDBOX_HOST (127.0.0.1), SANDBOX_PORT (8001), SANDBOX_WEBHOOK_URL
(http://127.0.0.1:8000/webhook), SANDBOX_SEED, SANDBOX_STATE, FB_APP_ID (100000000000001),
FB_APP_SECRET (sandbox-app-secret). Command-line options win over the environment.

`--state FILE.json` keeps what the simulator issued (Pages, tokens, Login users and their
tokens, people) across restarts, as Facebook does (sandbox/persist.py): loaded at start, the
seed applied on top of it, rewritten within a second of each change and at stop.

`--seed FILE.json` creates pages, templates and people at startup so a demo loader knows their
ids and tokens in advance:

    {"config": {"read_delay_ms": 3000},
     "pages": [{"id": "104857600000001", "name": "Demo Page", "token": "sbx-page-demo",
                "subscribed_fields": ["messages", "message_deliveries"],
                "templates": [{"name": "order_update", "language": "en", "param_count": 1,
                               "status": "APPROVED"}],
                "people": [{"psid": "6543210987600001", "last_interaction_ago_ms": 3600000},
                           {"psid": "6543210987600002", "last_interaction_ms": null,
                            "receipts": "delivery"}]}]}

Every key but a page's `name` is optional. `last_interaction_ago_ms` is relative to startup
(inside the 24-hour window if under 86400000); `last_interaction_ms` is absolute epoch ms.

A top-level `"users"` list (same shape as `POST /_sandbox/users`) gives the OAuth dialog people
to log in as, so a demo can connect Pages through a sandbox Facebook Login:

    {"users": [{"id": "10160000000000001", "name": "Ann Admin",
                "pages": [{"id": "104857600000001", "tasks": ["MANAGE", "CREATE_CONTENT",
                           "MODERATE", "MESSAGING", "ADVERTISE", "ANALYZE"]},
                          {"name": "Ann's Bakery", "role": "editor", "category": "Bakery"}],
                "declined": []}]}

A page entry names a seeded Page by `id`, or describes a new one (`name`, optional `id`,
`token`, `category`); its role is `tasks` or `role` (admin, editor, moderator, advertiser,
analyst; admin if neither). Users are created after the pages.

Over a kept state the seed adds what is missing: a Page or user already there is kept as it is
(its token, its subscription, its logins), a template already there too, and the people's
`last_interaction_ago_ms` counts from this start again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from typing import Any

from sandbox import users
from sandbox.persist import StateFile
from sandbox.server import SandboxServer
from sandbox.state import DEFAULT_APP_ID, DEFAULT_APP_SECRET, State

log = logging.getLogger("sandbox")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read options, defaulting to the environment."""
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=env.get("SANDBOX_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("SANDBOX_PORT", "8001")))
    parser.add_argument(
        "--webhook-url", default=env.get("SANDBOX_WEBHOOK_URL", "http://127.0.0.1:8000/webhook")
    )
    parser.add_argument(
        "--seed",
        default=env.get("SANDBOX_SEED") or None,
        help="JSON file of pages/people/templates/users to create (env SANDBOX_SEED)",
    )
    parser.add_argument(
        "--state",
        default=env.get("SANDBOX_STATE") or None,
        help="JSON file keeping pages, tokens and users across restarts (env SANDBOX_STATE)",
    )
    return parser.parse_args(argv)


def load_seed(state: State, seed: dict[str, Any]) -> None:
    """Create the seed file's pages, templates, people and Login users."""
    if seed.get("config"):
        state.configure(seed["config"])
    now = state.now_ms()
    for spec in seed.get("pages", []):
        page = seed_page(state, spec)
        for template in spec.get("templates", []):
            if (template["name"], template["language"]) not in page["templates"]:
                state.add_template(
                    page["id"],
                    template["name"],
                    template["language"],
                    template.get("param_count", 0),
                    template.get("status", "APPROVED"),
                )
        for person in spec.get("people", []):
            person = dict(person)
            ago = person.pop("last_interaction_ago_ms", None)
            if ago is not None:
                person["last_interaction_ms"] = now - int(ago)
            state.add_person(page["id"], **person)
    for spec in seed.get("users", []):
        if str(spec.get("id")) not in state.users:
            users.add_user(state, spec)


def seed_page(state: State, spec: dict[str, Any]) -> dict[str, Any]:
    """Return the live record of a seed Page: the kept one if there is one, else a new one."""
    kept = state.page(str(spec["id"])) if spec.get("id") else None
    if kept is not None:
        if "subscribed_fields" in spec:
            kept["subscribed_fields"] = list(spec["subscribed_fields"])
        return kept
    page = state.page(state.add_page(spec["name"], spec.get("id"), spec.get("token"))["id"])
    page["subscribed_fields"] = list(spec.get("subscribed_fields", []))
    return page


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    state = State(
        app_id=os.environ.get("FB_APP_ID", DEFAULT_APP_ID),
        app_secret=os.environ.get("FB_APP_SECRET", DEFAULT_APP_SECRET),
        webhook_url=args.webhook_url,
    )
    kept = StateFile(state, args.state) if args.state else None
    if kept and kept.load():
        log.info("Facebook sandbox state restored from %s", args.state)
    if args.seed:
        with open(args.seed, encoding="utf-8") as handle:
            load_seed(state, json.load(handle))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = SandboxServer(args.host, args.port, state=state).start()
    if kept:
        kept.start()
    log.info(
        "Facebook sandbox listening on %s (Graph API /vNN.N/..., control /_sandbox/), "
        "posting webhooks to %s",
        server.url,
        args.webhook_url,
    )
    try:
        stop.wait()
    finally:
        server.stop()
        if kept:
            kept.stop()
        log.info("Facebook sandbox stopped")


if __name__ == "__main__":
    main()
