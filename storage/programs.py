"""Programs and their Messenger nodes, as the program engine configures them.

Keys: program:{id} (name, status, nodes JSON, updated_at), programs, p:{pid}:programs (which
programs use a profile: the "in use by an active program" rule reads it).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from storage import keys, scripts
from storage.errors import ProfileUnavailable

STATUSES = ("draft", "active", "paused")


@dataclass(frozen=True)
class UtilityTemplate:
    name: str
    language: str
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Node:
    id: str
    profile_id: str
    tag: str
    message: str
    utility_template: UtilityTemplate | None = None
    type: str = "messenger"

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.utility_template is not None:
            data["utility_template"]["parameters"] = list(self.utility_template.parameters)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Node:
        template = data.get("utility_template")
        return cls(
            id=data["id"],
            profile_id=str(data["profile_id"]),
            tag=data["tag"],
            message=data["message"],
            type=data.get("type", "messenger"),
            utility_template=UtilityTemplate(
                template["name"], template["language"], tuple(template.get("parameters", ()))
            )
            if template
            else None,
        )


@dataclass(frozen=True)
class Program:
    id: str
    name: str
    status: str
    nodes: tuple[Node, ...]
    updated_at: int

    def node(self, node_id: str) -> Node | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    @property
    def profile_ids(self) -> set[str]:
        return {n.profile_id for n in self.nodes}


class Programs:
    """Save, read and delete programs, keeping the profile -> programs index in step."""

    def __init__(self, redis):
        self.redis = redis
        self._put = scripts.register(redis, "put_program")

    def put(self, prog_id: str, name: str, status: str, nodes: list[Node]) -> Program:
        """Create or replace a program atomically; ProfileUnavailable if a node's profile is
        missing or disabled at that moment (index of profiles in use kept in step)."""
        nodes_json = json.dumps([n.to_dict() for n in nodes])
        profile_ids = json.dumps(sorted({n.profile_id for n in nodes}))
        result = self._put(args=[prog_id, name, status, nodes_json, int(time.time()), profile_ids])
        if result[0] == "unavailable":
            raise ProfileUnavailable(result[1], result[2])
        return self.get(prog_id)

    def delete(self, prog_id: str) -> bool:
        return bool(self._put(args=[prog_id, "", "", "", 0, "[]"])[0])

    def get(self, prog_id: str) -> Program | None:
        data = self.redis.hgetall(keys.program(prog_id))
        if not data:
            return None
        return Program(
            id=prog_id,
            name=data["name"],
            status=data["status"],
            nodes=tuple(Node.from_dict(n) for n in json.loads(data["nodes"])),
            updated_at=int(data["updated_at"]),
        )

    def using_profile(self, pid: str) -> list[Program]:
        """Programs with a node that uses the profile."""
        programs = [
            self.get(prog_id) for prog_id in sorted(self.redis.smembers(keys.profile_programs(pid)))
        ]
        return [p for p in programs if p is not None]
