"""Programs API: the program engine saves programs and their Messenger nodes here."""

from __future__ import annotations

from datetime import UTC, datetime

from marshmallow import Schema, ValidationError

from bot import personalize, policy
from bot.api import bp, load_body
from bot.api.contacts import check_id
from bot.api.schemas import (
    MAX_NODES,
    JsonObjectSchema,
    NodeSchema,
    ProgramFieldsSchema,
    plain_problems,
)
from bot.errors import ApiError, not_found
from bot.validation import FIELD_NAME
from storage import Storage, get_storage
from storage.programs import Node, Program, UtilityTemplate


def node_problems(node: dict, profiles: dict) -> list[str]:
    """Why a node cannot be saved, by our rules: each problem in words the program builder can
    show. `node` holds the fields that passed the shape check (others are reported with it)."""
    problems = []
    if "profile_id" in node:
        profile = profiles.get(node["profile_id"])
        if profile is None:
            problems.append(f"profile {node['profile_id']!r} does not exist")
        elif not profile.enabled:
            problems.append(
                f"profile {node['profile_id']!r} is disabled; "
                "enable it before choosing it in a node"
            )
    if "tag" in node and node["tag"] not in policy.TAGS:
        problems.append(f"tag must be one of {', '.join(policy.TAGS)} (got {node['tag']!r})")
    if "message" in node:
        problems += _message_problems(node["message"])
    template = node.get("utility_template")
    for name in (template or {}).get("parameters", []):
        if not FIELD_NAME.match(name):
            problems.append(
                f"utility template parameter {name!r} is not a data field name (like ORDER_ID)"
            )
    return problems


def _message_problems(text: str) -> list[str]:
    if not text.strip():
        return ["the message is empty"]
    problems = []
    if len(personalize.PLACEHOLDER.sub("", text)) > policy.MAX_TEXT_CHARS:
        problems.append(f"the message is longer than {policy.MAX_TEXT_CHARS} characters")
    return problems + personalize.problems(text)


def _load(schema: Schema, data: object) -> tuple[dict, dict]:
    """(what loaded, marshmallow's messages): the valid part even when some fields are not."""
    try:
        # any JSON: marshmallow refuses a non-object itself (its stubs want a Mapping)
        return schema.load(data), {}  # type: ignore[arg-type]
    except ValidationError as exc:  # a schema's errors are a dict: messages_dict
        return exc.valid_data if isinstance(exc.valid_data, dict) else {}, exc.messages_dict


def checked_nodes(raw: list, store: Storage) -> tuple[list[dict], dict[str, list[str]]]:
    """(nodes, invalid nodes -> problems). Shape and rule problems are listed together per node;
    a node without a usable id (missing, malformed, or taken by an earlier node) is named by its
    position: "#3" is the third."""
    loaded = [_load(NodeSchema(), item) for item in raw]
    profiles = {
        pid: store.profiles.get(pid) if pid.isdigit() else None
        for pid in {data["profile_id"] for data, _ in loaded if "profile_id" in data}
    }
    invalid, seen = {}, set()
    for position, (data, messages) in enumerate(loaded, 1):
        problems = plain_problems(messages, subject="the node") + node_problems(data, profiles)
        name = data.get("id")
        if name in seen:
            problems.insert(0, f"another node has the id {name!r}")
        if name is None or name in seen:
            name = f"#{position}"
        seen.add(name)
        if problems:
            invalid[name] = problems
    return [data for data, _ in loaded], invalid


def _nodes_list_problems(body: dict) -> list[str]:
    """What is wrong with the node list itself (then its nodes are not checked)."""
    if "nodes" not in body:
        return ["nodes is missing"]
    if not isinstance(body["nodes"], list):
        return ["nodes must be a list"]
    if len(body["nodes"]) > MAX_NODES:
        return [f"at most {MAX_NODES} nodes (got {len(body['nodes'])})"]
    return []


def program_json(program: Program) -> dict:
    return {
        "id": program.id,
        "name": program.name,
        "status": program.status,
        "nodes": [n.to_dict() for n in program.nodes],
        "updated_at": datetime.fromtimestamp(program.updated_at, UTC).isoformat(),
    }


def get_program_or_404(program_id: str) -> Program:
    program = get_storage().programs.get(check_id(program_id, "program"))
    if program is None:
        raise not_found("program", program_id)
    return program


@bp.put("/programs/<program_id>")
def put_program(program_id: str):
    """Create or replace a program; one 422 names every invalid node and why, with the
    program's own field problems."""
    check_id(program_id, "program")
    body = load_body(JsonObjectSchema())
    store = get_storage()
    program, messages = _load(
        ProgramFieldsSchema(), {k: v for k, v in body.items() if k != "nodes"}
    )
    fields = {name: plain_problems(inner, name) for name, inner in messages.items()}
    nodes: list[dict] = []
    invalid: dict[str, list[str]] = {}
    if list_problems := _nodes_list_problems(body):
        fields["nodes"] = list_problems
    else:
        nodes, invalid = checked_nodes(body["nodes"], store)
    if invalid:
        raise ApiError(
            422,
            "invalid_nodes",
            f"{len(invalid)} node(s) cannot be saved",
            {"nodes": invalid, "fields": fields},
        )
    if fields:
        raise ApiError(422, "validation_failed", "The request is not valid", {"fields": fields})
    saved = [
        Node(
            id=n["id"],
            profile_id=n["profile_id"],
            tag=n["tag"],
            message=n["message"],
            utility_template=UtilityTemplate(t["name"], t["language"], tuple(t["parameters"]))
            if (t := n.get("utility_template"))
            else None,
        )
        for n in nodes
    ]
    existed = store.programs.get(program_id) is not None
    saved_program = store.programs.put(program_id, program["name"], program["status"], saved)
    return program_json(saved_program), 200 if existed else 201


@bp.get("/programs/<program_id>")
def get_program(program_id: str):
    return program_json(get_program_or_404(program_id))


@bp.delete("/programs/<program_id>")
def delete_program(program_id: str):
    if not get_storage().programs.delete(check_id(program_id, "program")):
        raise not_found("program", program_id)
    return "", 204
