"""The OpenAPI document of the JSON API, served at /api/v1/openapi.json.

Written here, next to the schemas it references, so the contract is read in one place.
"""

from __future__ import annotations

from functools import lru_cache

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from bot import validation as v
from bot.api import bp
from bot.api import schemas as s


def _errors(*statuses: int) -> dict:
    text = {
        400: "Not JSON",
        401: "Missing or wrong bearer token",
        404: "Not found",
        409: "Conflict",
        413: "Body too large",
        422: "Validation failed (details list each problem)",
        502: "Facebook could not be reached",
        503: "Storage unavailable",
    }
    return {
        str(code): {"description": text[code], "content": {"application/json": {"schema": "Error"}}}
        for code in statuses
    }


def _ok(status: int, schema: str, description: str) -> dict:
    return {
        str(status): {
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


INVALID_NODES = (
    'Validation failed. `invalid_nodes`: details.nodes maps each invalid node (by id, or "#3" for '
    "the third node when it has no usable id) to its problems in words, shape and rules together, "
    "and details.fields the program's own field problems; `validation_failed` (details.fields) "
    "when only those are wrong"
)


def _body(schema: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _id_param(name: str, pattern: str | None = None) -> dict:
    schema = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, kind: str) -> dict:
    schema = (
        {"type": "string", "format": "date"} if kind == "date" else {"type": kind, "minimum": 0}
    )
    return {"name": name, "in": "query", "required": False, "schema": schema}


@lru_cache(maxsize=1)
def build_spec() -> dict:
    spec = APISpec(
        title="Messenger channel API",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Facebook Messenger channel of the automation platform."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name, schema in {
        "Error": s.ErrorSchema,
        "ProfileCreate": s.ProfileCreateSchema,
        "Profile": s.ProfileSchema,
        "ProfileList": s.ProfileListSchema,
        "ContactPut": s.ContactPutSchema,
        "Contact": s.ContactSchema,
        "ProgramPut": s.ProgramPutSchema,
        "Program": s.ProgramSchema,
        "RunRequest": v.RunRequestSchema,
        "RunAccepted": s.RunAcceptedSchema,
        "RunStatus": s.RunStatusSchema,
        "PreviewRequest": v.PreviewRequestSchema,
        "Preview": s.PreviewSchema,
        "Stats": s.StatsSchema,
        "StatsContacts": s.StatsContactsSchema,
        "OptinCode": s.OptinCodeSchema,
        "ProfilePatch": s.ProfilePatchSchema,
        "Recover": s.RecoverSchema,
        "RecoveryAccepted": s.RecoveryAcceptedSchema,
        "RecoveryStatus": s.RecoveryStatusSchema,
        "OptOut": s.OptOutSchema,
        "OptedOut": s.OptedOutSchema,
        "Consent": s.ConsentSchema,
        "Erased": s.ErasedSchema,
    }.items():
        spec.components.schema(name, schema=schema)
    common = _errors(401, 503)
    spec.path(
        "/profiles",
        operations={
            "post": {
                "summary": "Connect a Facebook Page as a profile",
                "requestBody": _body("ProfileCreate"),
                "responses": {
                    **_ok(201, "Profile", "Created"),
                    **_errors(400, 409, 413, 422, 502),
                    **common,
                },
            },
            "get": {
                "summary": "List profiles",
                "responses": {**_ok(200, "ProfileList", "Profiles"), **common},
            },
        },
    )
    spec.path(
        "/profiles/{profile_id}",
        parameters=[_id_param("profile_id")],
        operations={
            "get": {
                "summary": "Read a profile",
                "responses": {**_ok(200, "Profile", "The profile"), **_errors(404), **common},
            },
            "patch": {
                "summary": "Rename, enable or disable "
                "(409 profile_in_use when active programs use it)",
                "requestBody": _body("ProfilePatch"),
                "responses": {
                    **_ok(200, "Profile", "The profile"),
                    **_errors(400, 404, 409, 422),
                    **common,
                },
            },
            "delete": {
                "summary": "Delete the profile and all its statistics (409 profile_in_use)",
                "responses": {"204": {"description": "Deleted"}, **_errors(404, 409), **common},
            },
        },
    )
    spec.path(
        "/profiles/{profile_id}/resume",
        parameters=[_id_param("profile_id")],
        operations={
            "post": {
                "summary": "Resume a paused profile's sending now, whatever paused it "
                "(the profile's `sending` shows why it paused)",
                "responses": {**_ok(200, "Profile", "The profile"), **_errors(404), **common},
            },
        },
    )
    spec.path(
        "/profiles/{profile_id}/recover",
        parameters=[_id_param("profile_id")],
        operations={
            "post": {
                "summary": "Send again the failures of the profile's runs created in a window "
                "whose reason was about the Page or Facebook (token_invalid, page_blocked, "
                "facebook_unavailable, rate_limited, sending_paused; interrupted only if asked); "
                "202 a new recovery, 200 the same request again",
                "requestBody": _body("Recover"),
                "responses": {
                    **_ok(202, "RecoveryAccepted", "Recovery started"),
                    **_ok(200, "RecoveryAccepted", "The same recovery, asked again"),
                    **_errors(400, 404, 413, 422),
                    **common,
                },
            },
        },
    )
    spec.path(
        "/recoveries/{recovery_id}",
        parameters=[
            _id_param("recovery_id", v.ID_PATTERN),
            _query("cursor", "integer"),
            _query("limit", "integer"),
        ],
        operations={
            "get": {
                "summary": "A recovery's progress, its runs and each contact's new outcome",
                "responses": {
                    **_ok(200, "RecoveryStatus", "The recovery"),
                    **_errors(404, 422),
                    **common,
                },
            },
        },
    )
    spec.path(
        "/profiles/{profile_id}/optin-code",
        parameters=[
            _id_param("profile_id"),
            {"name": "contact_id", "in": "query", "required": False, "schema": {"type": "string"}},
        ],
        operations={
            "get": {
                "summary": "The opt-in HTML (for one contact, or generic with a merge field)",
                "responses": {**_ok(200, "OptinCode", "The code"), **_errors(404, 422), **common},
            }
        },
    )
    spec.path(
        "/contacts/{contact_id}",
        parameters=[_id_param("contact_id")],
        operations={
            "put": {
                "summary": "Set a contact's data fields (opt-in fields are kept)",
                "requestBody": _body("ContactPut"),
                "responses": {
                    **_ok(200, "Contact", "The contact"),
                    **_errors(400, 413, 422),
                    **common,
                },
            },
            "get": {
                "summary": "Read a contact with every FBOPTIN_XXX field",
                "responses": {**_ok(200, "Contact", "The contact"), **_errors(404, 422), **common},
            },
            "delete": {
                "summary": "Erase a person: data fields, opt-in values, PSID and user_ref links, "
                "consent ledger, statistics rows and run outcomes naming them (counters keep "
                "their numbers)",
                "responses": {
                    **_ok(200, "Erased", "Erased; nothing in storage names the person"),
                    **_errors(404, 409, 422),
                    **common,
                },
            },
        },
    )
    spec.path(
        "/contacts/{contact_id}/consent",
        parameters=[_id_param("contact_id")],
        operations={
            "get": {
                "summary": "The contact's consent per profile: state and events, oldest first",
                "responses": {**_ok(200, "Consent", "The ledger"), **_errors(404, 422), **common},
            }
        },
    )
    spec.path(
        "/contacts/{contact_id}/opt-out",
        parameters=[_id_param("contact_id")],
        operations={
            "post": {
                "summary": "Withdraw consent to a profile: the FBOPTIN_XXX value is cleared and "
                "nodes give the warning opted_out until the person opts in again",
                "requestBody": _body("OptOut"),
                "responses": {
                    **_ok(200, "OptedOut", "Withdrawn (or already withdrawn)"),
                    **_errors(400, 404, 422),
                    **common,
                },
            }
        },
    )
    spec.path(
        "/profiles/{profile_id}/consent.csv",
        parameters=[_id_param("profile_id")],
        operations={
            "get": {
                "summary": "The consent ledger of every contact of the profile, one row per event",
                "responses": {
                    "200": {"description": "CSV", "content": {"text/csv": {}}},
                    **_errors(404, 422),
                    **common,
                },
            }
        },
    )
    spec.path(
        "/profiles/{profile_id}/stats/{day}/contacts",
        parameters=[
            _id_param("profile_id"),
            {
                "name": "day",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "format": "date"},
            },
            {
                "name": "kind",
                "in": "query",
                "required": True,
                "schema": {
                    "type": "string",
                    "enum": ["sent", "delivered", "read", "warning", "failed"],
                },
            },
            {"name": "reason", "in": "query", "required": False, "schema": {"type": "string"}},
            _query("cursor", "integer"),
            _query("limit", "integer"),
        ],
        operations={
            "get": {
                "summary": "The contacts behind one number (kind and reason on a day), paged",
                "responses": {
                    **_ok(200, "StatsContacts", "Contacts"),
                    **_errors(404, 422),
                    **common,
                },
            }
        },
    )
    spec.path(
        "/profiles/{profile_id}/stats",
        parameters=[
            _id_param("profile_id"),
            _query("from", "date"),
            _query("to", "date"),
            {
                "name": "kind",
                "in": "query",
                "required": False,
                "schema": {
                    "type": "string",
                    "enum": ["all", "sent", "delivered", "read", "warning", "failed"],
                },
            },
        ],
        operations={
            "get": {
                "summary": "Per-day counters and reasons; delivered in the last 7 days",
                "responses": {**_ok(200, "Stats", "Statistics"), **_errors(404, 422), **common},
            }
        },
    )
    program_id = _id_param("program_id", v.ID_PATTERN)
    put_errors = _errors(400, 413, 422)
    put_errors["422"] = {**put_errors["422"], "description": INVALID_NODES}
    spec.path(
        "/programs/{program_id}",
        parameters=[program_id],
        operations={
            "put": {
                "summary": "Create or replace a program and its Messenger nodes",
                "requestBody": _body("ProgramPut"),
                "responses": {
                    **_ok(200, "Program", "Replaced"),
                    **_ok(201, "Program", "Created"),
                    **put_errors,
                    **common,
                },
            },
            "get": {
                "summary": "Read a program",
                "responses": {**_ok(200, "Program", "The program"), **_errors(404, 422), **common},
            },
            "delete": {
                "summary": "Delete a program",
                "responses": {"204": {"description": "Deleted"}, **_errors(404, 422), **common},
            },
        },
    )
    node_params = [program_id, _id_param("node_id", v.ID_PATTERN)]
    spec.path(
        "/programs/{program_id}/nodes/{node_id}/runs",
        parameters=node_params,
        operations={
            "post": {
                "summary": "Hand up to 10 000 contacts to a Messenger node "
                "(idempotent with run_id)",
                "requestBody": _body("RunRequest"),
                "responses": {
                    **_ok(202, "RunAccepted", "Accepted; sending happens in the background"),
                    **_errors(400, 404, 409, 413, 422),
                    **common,
                },
            }
        },
    )
    spec.path(
        "/programs/{program_id}/nodes/{node_id}/preview",
        parameters=node_params,
        operations={
            "post": {
                "summary": "What each contact would get now; sends nothing (a run's body: "
                f"run_id is checked, then ignored; at most {v.MAX_PREVIEW_CONTACTS} contacts)",
                "requestBody": _body("PreviewRequest"),
                "responses": {
                    **_ok(200, "Preview", "Per-contact outcome and rendered text"),
                    **_errors(400, 404, 413, 422),
                    **common,
                },
            }
        },
    )
    spec.path(
        "/runs/{run_id}",
        parameters=[
            _id_param("run_id", v.ID_PATTERN),
            _query("cursor", "integer"),
            _query("limit", "integer"),
        ],
        operations={
            "get": {
                "summary": "State, counts and per-contact outcomes of a run (paged)",
                "responses": {**_ok(200, "RunStatus", "The run"), **_errors(404, 422), **common},
            }
        },
    )
    document = spec.to_dict()
    document["servers"] = [{"url": "/api/v1"}]
    document["security"] = [{"bearer": []}]
    return document


@bp.get("/openapi.json")
def openapi_document():
    return build_spec()
