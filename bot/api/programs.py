"""Programs API: the program engine saves programs and their Messenger nodes here."""
from __future__ import annotations

from datetime import datetime, timezone

from bot import personalize, policy
from bot.api import bp, load_body
from bot.api.schemas import FIELD_NAME, ProgramPutSchema
from bot.api.contacts import check_id
from bot.errors import ApiError, not_found
from storage import get_storage
from storage.programs import Node, Program, UtilityTemplate


def node_problems(node: dict, profiles: dict) -> list[str]:
    """Why a node cannot be saved: each problem in words the program builder can show."""
    problems = []
    profile = profiles.get(node["profile_id"])
    if profile is None:
        problems.append(f"profile {node['profile_id']!r} does not exist")
    elif not profile.enabled:
        problems.append(f"profile {node['profile_id']!r} is disabled; enable it before choosing it in a node")
    if node["tag"] not in policy.TAGS:
        problems.append(f"tag must be one of {', '.join(policy.TAGS)} (got {node['tag']!r})")
    text = node["message"]
    if not text.strip():
        problems.append("the message is empty")
    elif len(personalize.PLACEHOLDER.sub("", text)) > policy.MAX_TEXT_CHARS:
        problems.append(f"the message is longer than {policy.MAX_TEXT_CHARS} characters")
    problems += personalize.problems(text)
    template = node.get("utility_template")
    for name in (template or {}).get("parameters", []):
        if not FIELD_NAME.match(name):
            problems.append(f"utility template parameter {name!r} is not a data field name (like ORDER_ID)")
    return problems


def program_json(program: Program) -> dict:
    return {"id": program.id, "name": program.name, "status": program.status,
            "nodes": [n.to_dict() for n in program.nodes],
            "updated_at": datetime.fromtimestamp(program.updated_at, timezone.utc).isoformat()}


def get_program_or_404(program_id: str) -> Program:
    program = get_storage().programs.get(check_id(program_id, "program"))
    if program is None:
        raise not_found("program", program_id)
    return program


@bp.put("/programs/<program_id>")
def put_program(program_id: str):
    """Create or replace a program; 422 names every invalid node and why."""
    check_id(program_id, "program")
    body = load_body(ProgramPutSchema())
    store = get_storage()
    profiles = {pid: store.profiles.get(pid) if pid.isdigit() else None
                for pid in {n["profile_id"] for n in body["nodes"]}}
    invalid = {}
    seen_ids = set()
    for node in body["nodes"]:
        problems = node_problems(node, profiles)
        if node["id"] in seen_ids:
            problems.append("another node has the same id")
        seen_ids.add(node["id"])
        if problems:
            invalid[node["id"]] = problems
    if invalid:
        raise ApiError(422, "invalid_nodes", f"{len(invalid)} node(s) cannot be saved", {"nodes": invalid})
    nodes = [Node(id=n["id"], profile_id=n["profile_id"], tag=n["tag"], message=n["message"],
                  utility_template=UtilityTemplate(t["name"], t["language"], tuple(t["parameters"]))
                  if (t := n.get("utility_template")) else None) for n in body["nodes"]]
    existed = store.programs.get(program_id) is not None
    program = store.programs.put(program_id, body["name"], body["status"], nodes)
    return program_json(program), 200 if existed else 201


@bp.get("/programs/<program_id>")
def get_program(program_id: str):
    return program_json(get_program_or_404(program_id))


@bp.delete("/programs/<program_id>")
def delete_program(program_id: str):
    if not get_storage().programs.delete(check_id(program_id, "program")):
        raise not_found("program", program_id)
    return "", 204
