"""A thin Python client of the simulator's control API (/_sandbox/...)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import requests


class SandboxError(Exception):
    """The control API refused a request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class SandboxControl:
    """Drive a running simulator: create pages and people, set faults, read logs."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _call(
        self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        """Call the control API and return the decoded JSON, raising SandboxError on refusal."""
        response = self.session.request(
            method,
            f"{self.base_url}/_sandbox{path}",
            json=json,
            params=params,
            timeout=self.timeout,
        )
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise SandboxError(response.status_code, str(message))
        return response.json()

    def reset(self, keep_config: bool = False) -> None:
        """Forget pages, people, logs and faults (config back to creation unless kept)."""
        self._call("POST", "/reset", {"keep_config": keep_config})

    def configure(self, **config: Any) -> dict[str, Any]:
        """Merge config keys and return the whole config."""
        return self._call("POST", "/config", config)

    def config(self) -> dict[str, Any]:
        """Return the current config."""
        return self._call("GET", "/config")

    def create_page(
        self,
        name: str = "Sandbox Page",
        page_id: str | None = None,
        token: str | None = None,
        category: str | None = None,
    ) -> dict[str, Any]:
        """Create a page and return {"id", "name", "token"}."""
        data = {"name": name, "id": page_id, "token": token, "category": category}
        return self._call("POST", "/pages", {k: v for k, v in data.items() if v is not None})

    def page(self, page_id: str) -> dict[str, Any]:
        """Return a page with its subscription, templates, people and user_refs."""
        return self._call("GET", f"/pages/{page_id}")

    def invalidate_page(self, page_id: str) -> None:
        """Make the page token answer 190/460 from now on."""
        self._call("POST", f"/pages/{page_id}/invalidate")

    def unsubscribe_page(self, page_id: str) -> None:
        """Drop the app's webhook subscription, as Meta does after an hour of failures."""
        self._call("POST", f"/pages/{page_id}/unsubscribe")

    def set_usage(self, page_id: str, percent: int | None, regain_minutes: int = 0) -> None:
        """Report this quota use in X-Business-Use-Case-Usage (None removes the header)."""
        self._call(
            "POST",
            f"/pages/{page_id}/usage",
            {"percent": percent, "regain_minutes": regain_minutes},
        )

    def add_template(
        self,
        page_id: str,
        name: str,
        language: str = "en",
        param_count: int = 0,
        status: str = "APPROVED",
    ) -> dict[str, Any]:
        """Register a utility template on the page and return it."""
        return self._call(
            "POST",
            f"/pages/{page_id}/templates",
            {"name": name, "language": language, "param_count": param_count, "status": status},
        )

    def add_person(self, page_id: str, **person: Any) -> str:
        """Create a person (psid, last_interaction_ms, receipts, user_ref) and return the PSID."""
        return self._call("POST", f"/pages/{page_id}/people", person)["psid"]

    def add_people(self, page_id: str, people: list[dict[str, Any]]) -> list[str]:
        """Create many people at once and return their PSIDs."""
        return [p["psid"] for p in self._call("POST", f"/pages/{page_id}/people", people)["people"]]

    # -- Facebook Login ----------------------------------------------------------------------
    def create_user(
        self,
        name: str,
        pages: list[dict[str, Any]] | None = None,
        user_id: str | None = None,
        declined: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create a Login user with roles on Pages; return {"id", "name", "pages": [...]}.

        Each page is {"name", "tasks"|"role", "id"?, "category"?}, or {"id": existing, "tasks"}.
        """
        data: dict[str, Any] = {"name": name, "pages": pages or []}
        if user_id is not None:
            data["id"] = user_id
        if declined is not None:
            data["declined"] = declined
        return self._call("POST", "/users", data)

    def users(self) -> list[dict[str, Any]]:
        """Return every user with Pages, tasks, permissions and `authorized`."""
        return self._call("GET", "/users")["users"]

    def user(self, user_id: str) -> dict[str, Any]:
        """Return one user."""
        return self._call("GET", f"/users/{user_id}")

    def set_auto_login(self, user_id: str | None) -> None:
        """Make the OAuth dialog redirect at once as this user (None: show the page)."""
        self._call("POST", "/login/auto", {"user_id": user_id})

    def invalidate_user(self, user_id: str, pages: bool = True) -> list[str]:
        """End the user's sessions (190/460); return the Pages whose token died with them."""
        return self._call("POST", f"/users/{user_id}/invalidate", {"pages": pages})[
            "pages_invalidated"
        ]

    def set_page_tasks(self, user_id: str, page_id: str, tasks: list[str]) -> list[str]:
        """Set the user's tasks on a Page ([] = no role); return Pages whose token died."""
        return self._call("POST", f"/users/{user_id}/pages/{page_id}", {"tasks": tasks})[
            "pages_invalidated"
        ]

    def set_declined(self, user_id: str, permissions: list[str]) -> dict[str, Any]:
        """Make the user decline these permissions at login (revoked if already granted)."""
        return self._call("POST", f"/users/{user_id}/permissions", {"declined": permissions})

    def remove_app(self, user_id: str, deauthorize_url: str | None = None) -> dict[str, Any]:
        """The user removes the app; return {"pages_invalidated", "deauthorize": answer|None}."""
        data = {"deauthorize_url": deauthorize_url} if deauthorize_url else {}
        return self._call("POST", f"/users/{user_id}/remove_app", data)

    def post_deauthorize(
        self, user_id: str, url: str, signature: str | None = None
    ) -> dict[str, Any]:
        """POST a signed deauthorize request; return {"status", "body", "signed_request"}."""
        return self._callback("deauthorize", user_id, url, signature)

    def post_data_deletion(
        self, user_id: str, url: str, signature: str | None = None
    ) -> dict[str, Any]:
        """POST a signed data-deletion request; return {"status", "body", "signed_request"}."""
        return self._callback("data_deletion", user_id, url, signature)

    def _callback(self, kind: str, user_id: str, url: str, signature: str | None) -> dict[str, Any]:
        data = {"user_id": user_id, "url": url}
        if signature is not None:
            data["signature"] = signature
        return self._call("POST", f"/callbacks/{kind}", data)

    # -- faults --------------------------------------------------------------------------------
    def add_fault(self, **rule: Any) -> str:
        """Add one fault rule and return its id."""
        return self._call("POST", "/faults", rule)["ids"][0]

    def add_faults(self, rules: list[dict[str, Any]]) -> list[str]:
        """Add several fault rules and return their ids."""
        return self._call("POST", "/faults", rules)["ids"]

    def faults(self) -> list[dict[str, Any]]:
        """Return the fault rules still active."""
        return self._call("GET", "/faults")["faults"]

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self._call("DELETE", "/faults")

    def sends(self, **filters: Any) -> list[dict[str, Any]]:
        """Return logged /messages requests (filters: page_id, recipient, status)."""
        return self._call("GET", "/sends", params=filters)["sends"]

    def webhooks(self, **filters: Any) -> list[dict[str, Any]]:
        """Return webhook delivery attempts (filters: kind, page_id)."""
        return self._call("GET", "/webhooks", params=filters)["webhooks"]

    def rates(self, page_id: str | None = None) -> dict[str, int]:
        """Return accepted sends per epoch second for a page (all pages if None)."""
        params = {"page_id": page_id} if page_id else None
        return self._call("GET", "/rates", params=params)["per_second"]

    def post_event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Post a webhook event now; return {"status": target's status, "payload": sent}."""
        return self._call("POST", f"/events/{kind}", fields)

    def flush(self, timeout: float = 10.0) -> bool:
        """Post all scheduled echoes/receipts now; True once nothing is pending."""
        return self._call("POST", "/flush", {"timeout": timeout})["idle"]

    def pending(self) -> int:
        """Return how many scheduled webhooks are still waiting."""
        return self._call("GET", "/pending")["pending"]

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    def __enter__(self) -> SandboxControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
