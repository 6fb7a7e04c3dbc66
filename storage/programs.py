"""Programs and their Messenger nodes, as the program engine configures them.

Keys: program:{id} (name, status, nodes JSON, updated_at), programs, p:{pid}:programs (which
programs use a profile: the "in use by an active program" rule reads it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis

from storage import keys, scripts
from storage.errors import ProfileUnavailable, StorageError
from storage.redis_types import text_map, text_set

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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.utility_template is not None:
            data["utility_template"]["parameters"] = list(self.utility_template.parameters)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Node:
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

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._put = scripts.register(redis, "put_program")

    def put(self, prog_id: str, name: str, status: str, nodes: list[Node]) -> Program:
        """Create or replace a program atomically; ProfileUnavailable if a node's profile is
        missing or disabled at that moment (index of profiles in use kept in step)."""
        nodes_json = json.dumps([n.to_dict() for n in nodes])
        profile_ids = json.dumps(sorted({n.profile_id for n in nodes}))
        result: list[str | int] = self._put(
            args=[prog_id, name, status, nodes_json, int(time.time()), profile_ids]
        )
        if result[0] == "unavailable":  # then profile id and why, both strings
            raise ProfileUnavailable(str(result[1]), str(result[2]))
        program = self.get(prog_id)
        if program is None:  # deleted by another request before we read it back
            raise StorageError(f"program {prog_id} was deleted as it was saved")
        return program

    def delete(self, prog_id: str) -> bool:
        return bool(self._put(args=[prog_id, "", "", "", 0, "[]"])[0])

    def get(self, prog_id: str) -> Program | None:
        data = text_map(self.redis.hgetall(keys.program(prog_id)))
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
            self.get(prog_id)
            for prog_id in sorted(text_set(self.redis.smembers(keys.profile_programs(pid))))
        ]
        return [p for p in programs if p is not None]
