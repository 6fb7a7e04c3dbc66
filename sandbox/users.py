"""People who log in with Facebook: users, their roles on Pages, their grants, their sessions.

A user is an app-scoped id (not a PSID) with a name and a role on some Pages, given as the list
of Page `tasks` Graph reports (messenger-facts.md §7.3). The simulator keeps one token per Page,
so a Page token "obtained through" a user is the Page's token with that user recorded as one of
its sponsors. When the last sponsor goes (app removed, password changed, role lost) the token
dies with that cause's subcode, as every Page token derived from a session does on Facebook; the
next /me/accounts then hands out a fresh token, like a new login would.
"""

from __future__ import annotations

from typing import Any

from sandbox.state import USER_ID_BASE, State, random_token

ADMIN = ["MANAGE", "CREATE_CONTENT", "MODERATE", "MESSAGING", "ADVERTISE", "ANALYZE"]
ROLES = {
    "admin": ADMIN,
    "editor": [t for t in ADMIN if t != "MANAGE"],
    "moderator": ["MESSAGING", "MODERATE", "ADVERTISE", "ANALYZE"],
    "advertiser": ["ADVERTISE", "ANALYZE"],
    "analyst": ["ANALYZE"],
}
# What Facebook Login for Business grants when a config_id replaces `scope` (MESSENGER.md).
DEFAULT_SCOPES = [
    "pages_show_list",
    "pages_manage_metadata",
    "pages_messaging",
    "pages_read_engagement",
    "business_management",
    "page_utility_messaging",
]
# Subcodes of error 190 for a dead session, worded as Graph words them ({app_id} filled in).
# 492 is our reading of Graph's "user no longer has a role on the Page" session error.
INVALID_MESSAGES = {
    458: "Error validating access token: The user has not authorized application {app_id}.",
    460: "Error validating access token: The session has been invalidated because the user "
    "changed their password or Facebook has changed the session for security reasons.",
    463: "Error validating access token: Session has expired.",
    492: "Error validating access token: The user is not an administrator, editor, or "
    "moderator of the Page.",
}


def reason(state: State, subcode: int) -> dict[str, Any]:
    """Return why a token died: its 190 subcode and Facebook's message."""
    return {
        "subcode": subcode,
        "message": INVALID_MESSAGES[subcode].format(app_id=state.cfg("app_id")),
    }


def tasks_of(spec: dict[str, Any]) -> list[str]:
    """Return the tasks of a page spec: `tasks`, else a `role` name, else Admin."""
    if "tasks" in spec:
        tasks = spec["tasks"]
        if not isinstance(tasks, list) or not set(tasks) <= set(ADMIN):
            raise ValueError(f"tasks must be a list drawn from {', '.join(ADMIN)}")
        return list(dict.fromkeys(tasks))  # as given, without duplicates
    role = str(spec.get("role") or "admin").lower()
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    return list(ROLES[role])


def add_user(state: State, spec: dict[str, Any]) -> dict[str, Any]:
    """Create a user (and any Page of theirs the simulator lacks); return id, name, pages."""
    unknown = set(spec) - {"id", "name", "pages", "declined"}
    if unknown:
        raise ValueError(f"unknown user keys: {', '.join(sorted(unknown))}")
    pages = spec.get("pages") or []
    if not isinstance(pages, list) or not all(isinstance(p, dict) for p in pages):
        raise ValueError("pages must be a list of objects")
    roles = [(p, tasks_of(p)) for p in pages]  # validate everything before creating anything
    with state.lock:
        user_id = str(spec["id"]) if spec.get("id") else new_user_id(state)
        if user_id in state.users:
            raise KeyError(f"user {user_id} already exists")
        user = {
            "id": user_id,
            "name": str(spec.get("name") or f"Sandbox User {user_id}"),
            "pages": {},
            "authorized": False,
            "declined": list(spec.get("declined") or []),
            "grants": {},
            "accounts_listed": 0,
        }
        state.users[user_id] = user
        for page_spec, tasks in roles:
            page = ensure_page(state, page_spec)
            if tasks:
                user["pages"][page["id"]] = tasks
        return {
            "id": user_id,
            "name": user["name"],
            "pages": [page_summary(state, pid) for pid in user["pages"]],
        }


def new_user_id(state: State) -> str:
    """Return the next generated user id not already given explicitly."""
    with state.lock:
        user_id = state.next_id("user", USER_ID_BASE)
        while user_id in state.users:
            user_id = state.next_id("user", USER_ID_BASE)
        return user_id


def ensure_page(state: State, spec: dict[str, Any]) -> dict[str, Any]:
    """Return the Page a spec names, creating it when it is new to the simulator."""
    page = state.page(str(spec["id"])) if spec.get("id") else None
    if page is None:
        page = state.add_page(
            str(spec.get("name") or "Sandbox Page"),
            spec.get("id"),
            spec.get("token"),
            spec.get("category"),
        )
    return page


def page_summary(state: State, page_id: str) -> dict[str, Any]:
    """Return a Page's id, name and current token."""
    page = state.pages[page_id]
    return {"id": page_id, "name": page["name"], "token": page["token"]}


def public_user(state: State, user: dict[str, Any]) -> dict[str, Any]:
    """Return a user as the control API shows it."""
    with state.lock:
        pages = [
            {"id": pid, "name": state.pages[pid]["name"], "tasks": list(tasks)}
            for pid, tasks in user["pages"].items()
        ]
        return {
            "id": user["id"],
            "name": user["name"],
            "pages": pages,
            "authorized": user["authorized"],
            "declined": list(user["declined"]),
            "permissions": permissions(user),
            "accounts_listed": user.get("accounts_listed", 0),
        }


def permissions(user: dict[str, Any]) -> list[dict[str, str]]:
    """Return /me/permissions rows: public_profile always, then each scope asked at login."""
    rows = [{"permission": "public_profile", "status": "granted"}]
    return rows + [
        {"permission": p, "status": s} for p, s in user["grants"].items() if p != "public_profile"
    ]


def granted_scopes(user: dict[str, Any]) -> list[str]:
    """Return the scopes the user has granted the app."""
    return [row["permission"] for row in permissions(user) if row["status"] == "granted"]


def grant(state: State, user_id: str, scopes: list[str]) -> None:
    """Record a login: the app is authorised and asked scopes granted unless declined."""
    with state.lock:
        user = state.users[user_id]
        user["authorized"] = True
        for scope in scopes:
            user["grants"][scope] = "declined" if scope in user["declined"] else "granted"


def set_declined(state: State, user_id: str, scopes: list[str]) -> None:
    """Make the user decline these scopes at login, revoking them if already granted."""
    with state.lock:
        user = state.users[user_id]
        user["declined"] = list(scopes)
        for scope in scopes:
            if scope in user["grants"]:
                user["grants"][scope] = "declined"


# -- Page tokens and sessions ----------------------------------------------------------------
def kill_page_token(state: State, page_id: str, subcode: int) -> None:
    """Make the Page's token answer 190 with this subcode."""
    with state.lock:
        page = state.pages[page_id]
        page.update(valid=False, invalid=reason(state, subcode), sponsors=[])


def renew_page_token(state: State, page_id: str) -> str:
    """Retire a dead Page token (it keeps its error) and give the Page a fresh one."""
    with state.lock:
        page = state.pages[page_id]
        why = page["invalid"] or reason(state, 460)
        state.dead_tokens[page["token"]] = {"page_id": page_id, **why}
        state.tokens.pop(page["token"], None)
        page.update(token=random_token(), valid=True, invalid=None, sponsors=[])
        state.tokens[page["token"]] = page_id
        return page["token"]


def drop_sponsor(state: State, user_id: str, page_ids: list[str], subcode: int) -> list[str]:
    """Forget the user as a source of these Page tokens; kill those left with no source."""
    killed = []
    with state.lock:
        for page_id in page_ids:
            page = state.pages.get(page_id)
            if page is None or user_id not in page["sponsors"]:
                continue
            page["sponsors"].remove(user_id)
            if not page["sponsors"] and page["valid"]:
                kill_page_token(state, page_id, subcode)
                killed.append(page_id)
    return killed


def end_sessions(state: State, user_id: str, subcode: int, pages: bool = True) -> list[str]:
    """Kill the user's tokens (and, with pages, Page tokens got through them); list killed Pages."""
    with state.lock:
        for record in state.user_tokens.values():
            if record["user_id"] == user_id and record["invalid"] is None:
                record["invalid"] = reason(state, subcode)
        if subcode == 458:
            state.users[user_id]["authorized"] = False
        if not pages:
            return []
        return drop_sponsor(state, user_id, list(state.pages), subcode)


def set_tasks(
    state: State, user_id: str, page_id: str, tasks: list[str], name: str | None = None
) -> list[str]:
    """Give the user these tasks on a Page (no tasks: no role); return Pages whose token died."""
    tasks = tasks_of({"tasks": tasks})
    with state.lock:
        user = state.users[user_id]
        ensure_page(state, {"id": page_id, "name": name})
        if tasks:
            user["pages"][page_id] = tasks
            return []
        user["pages"].pop(page_id, None)
        return drop_sponsor(state, user_id, [page_id], 492)


def accounts(state: State, user_id: str) -> list[dict[str, Any]]:
    """Return the user's Pages for /me/accounts, renewing dead tokens and noting the sponsor."""
    with state.lock:
        user = state.users[user_id]
        # Counted so tests can see how often a service asks (users kept from older states: 0).
        user["accounts_listed"] = user.get("accounts_listed", 0) + 1
        if "pages_show_list" not in granted_scopes(user):
            return []  # without pages_show_list the edge lists nothing
        listed = []
        for page_id, tasks in user["pages"].items():
            page = state.pages[page_id]
            if not page["valid"]:
                renew_page_token(state, page_id)
            if user_id not in page["sponsors"]:
                page["sponsors"].append(user_id)
            listed.append(
                {
                    "id": page_id,
                    "name": page["name"],
                    "access_token": page["token"],
                    "category": page["category"],
                    "tasks": list(tasks),
                }
            )
        return listed
