"""Contacts and their data fields (FIRSTNAME, ..., and every profile's FBOPTIN_XXX).

Keys: contact:{cid}. Opt-in fields are written only by opt-ins (storage/inbound.py), so a
contact update never touches them.
"""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline

from storage import keys
from storage.redis_types import field_map, text_map, texts
from storage.transactions import optimistic


def is_optin_field(name: str) -> bool:
    return name.startswith(keys.OPTIN_FIELD_PREFIX)


class Contacts:
    """Read and write contact data fields."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def get(self, cid: str) -> dict[str, str] | None:
        data = text_map(self.redis.hgetall(keys.contact(cid)))
        return data or None

    def get_many(self, cids: list[str]) -> dict[str, dict[str, str]]:
        """Fields of each existing contact, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for cid in cids:
            pipe.hgetall(keys.contact(cid))
        return {cid: data for cid, data in zip(cids, pipe.execute(), strict=True) if data}

    def replace(self, cid: str, fields: dict[str, str]) -> dict[str, str]:
        """Make the contact's data fields exactly `fields`, keeping its opt-in fields."""
        key = keys.contact(cid)

        def write(pipe: Pipeline) -> None:  # again if an opt-in lands meanwhile
            stale = [f for f in texts(pipe.hkeys(key)) if not is_optin_field(f) and f not in fields]
            pipe.multi()
            if stale:
                pipe.hdel(key, *stale)
            if fields:
                pipe.hset(key, mapping=field_map(fields))
            pipe.hgetall(key)

        current: dict[str, str] = optimistic(self.redis, key, write, f"contact {cid}")[1][-1]
        return current

    def merge_many(
        self, updates: dict[str, dict[str, str]], pipeline: Pipeline | None = None
    ) -> None:
        """Set the given fields on many contacts (used when a run hands contacts over)."""
        pipe = pipeline if pipeline is not None else self.redis.pipeline()
        for cid, fields in updates.items():
            if fields:
                pipe.hset(keys.contact(cid), mapping=field_map(fields))
        if pipeline is None:
            pipe.execute()
