"""Contacts and their data fields (FIRSTNAME, ..., and every profile's FBOPTIN_XXX).

Keys: contact:{cid}. Opt-in fields are written only by opt-ins (storage/inbound.py), so a
contact update never touches them.
"""

from __future__ import annotations

from redis.exceptions import WatchError

from storage import keys
from storage.errors import StorageError

_WATCH_ATTEMPTS = 20


def is_optin_field(name: str) -> bool:
    return name.startswith(keys.OPTIN_FIELD_PREFIX)


class Contacts:
    """Read and write contact data fields."""

    def __init__(self, redis):
        self.redis = redis

    def get(self, cid: str) -> dict[str, str] | None:
        data = self.redis.hgetall(keys.contact(cid))
        return data or None

    def get_many(self, cids: list[str]) -> dict[str, dict[str, str]]:
        """Fields of each existing contact, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for cid in cids:
            pipe.hgetall(keys.contact(cid))
        return {cid: data for cid, data in zip(cids, pipe.execute()) if data}

    def replace(self, cid: str, fields: dict[str, str]) -> dict[str, str]:
        """Make the contact's data fields exactly `fields`, keeping its opt-in fields."""
        key = keys.contact(cid)
        with self.redis.pipeline() as pipe:
            for _ in range(_WATCH_ATTEMPTS):  # optimistic: retried if an opt-in lands meanwhile
                try:
                    pipe.watch(key)
                    stale = [
                        f for f in pipe.hkeys(key) if not is_optin_field(f) and f not in fields
                    ]
                    pipe.multi()
                    if stale:
                        pipe.hdel(key, *stale)
                    if fields:
                        pipe.hset(key, mapping=fields)
                    pipe.hgetall(key)
                    return pipe.execute()[-1]
                except WatchError:
                    continue
        raise StorageError(f"contact {cid} kept changing; update abandoned")

    def merge_many(self, updates: dict[str, dict[str, str]], pipeline=None) -> None:
        """Set the given fields on many contacts (used when a run hands contacts over)."""
        pipe = pipeline if pipeline is not None else self.redis.pipeline()
        for cid, fields in updates.items():
            if fields:
                pipe.hset(keys.contact(cid), mapping=fields)
        if pipeline is None:
            pipe.execute()
