"""Demo data for sandbox mode: one Page in the simulator, its profile, contacts and a program.

`make run` without Facebook credentials writes the simulator's seed file and loads this into
Redis, so a newcomer can start a run from the README and watch outcomes and receipts arrive.
Loading again keeps what is there and only re-opens the demo people's 24-hour windows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bot import graph
from storage import Storage
from storage.inbound import Event
from storage.programs import Node, UtilityTemplate

PAGE = {"id": "104857600000999", "name": "Demo Bakery", "token": "sbx-page-demo-bakery"}
HOUR_MS = 3_600_000
# contact id: (PSID or None if not opted in, hours since they last wrote to the Page, data fields)
PEOPLE = {
    "ann": ("6543210987600101", 1, {"FIRSTNAME": "Ann", "ORDER_ID": "566701"}),
    "ben": ("6543210987600102", 5, {"FIRSTNAME": "Ben", "ORDER_ID": "566702"}),
    "cara": ("6543210987600103", 72, {"FIRSTNAME": "Cara", "ORDER_ID": "566703"}),
    "dan": ("6543210987600104", 72, {"FIRSTNAME": "Dan"}),
    "eve": (None, 0, {"FIRSTNAME": "Eve", "ORDER_ID": "566705"}),
}
PROGRAM_ID, NODE_ID = "demo", "welcome"
MESSAGE = "Hi @FIRSTNAME|there@, your order @ORDER_ID|@ is baked and on its way."
TEMPLATE = UtilityTemplate("order_update", "en", ("ORDER_ID",))


def sandbox_seed() -> dict[str, object]:
    """The simulator's seed: the demo Page, its approved template and its people."""
    people = [
        {"psid": psid, "last_interaction_ago_ms": hours * HOUR_MS}
        for psid, hours, _ in PEOPLE.values()
        if psid
    ]
    return {
        "config": {"delivery_delay_ms": 1500, "read_delay_ms": 4000},
        # The demo profile is connected, so its Page is subscribed to our webhook fields.
        "pages": [
            {
                **PAGE,
                "subscribed_fields": list(graph.SUBSCRIBED_FIELDS),
                "templates": [
                    {
                        "name": TEMPLATE.name,
                        "language": TEMPLATE.language,
                        "param_count": len(TEMPLATE.parameters),
                    }
                ],
                "people": people,
            }
        ],
        # Who can "Log in with Facebook" in sandbox mode: an owner of the demo Page, with a
        # second Page to connect, and a Page on which they are only an Analyst (refused).
        "users": [
            {
                "id": "900000000000001",
                "name": "Demo Owner",
                "pages": [
                    {"id": PAGE["id"], "role": "admin"},
                    {"id": "104857600000998", "name": "Demo Café", "role": "editor"},
                    {"id": "104857600000997", "name": "Demo Newsletter", "role": "analyst"},
                ],
            }
        ],
    }


def write_seed(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sandbox_seed(), indent=1))
    return path


def load(store: Storage) -> str:
    """Create the demo profile, contacts and program unless present; return the profile id."""
    profile_id = store.profiles.owner_of_page(PAGE["id"])
    if profile_id is None:
        profile_id = store.profiles.create(
            name="Demo Bakery", page_id=PAGE["id"], page_name=PAGE["name"], page_token=PAGE["token"]
        ).id
        store.contacts.merge_many({cid: fields for cid, (_, _, fields) in PEOPLE.items()})
        node = Node(
            id=NODE_ID,
            profile_id=profile_id,
            tag="POST_PURCHASE_UPDATE",
            message=MESSAGE,
            utility_template=TEMPLATE,
        )
        store.programs.put(PROGRAM_ID, "Order updates (demo)", "active", [node])
    now = int(time.time() * 1000)
    store.inbound.apply(
        [
            Event("optin", PAGE["id"], psid, now - hours * HOUR_MS, profile=profile_id, contact=cid)
            for cid, (psid, hours, _) in PEOPLE.items()
            if psid
        ]
    )
    return profile_id
