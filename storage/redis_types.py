"""Redis replies (and one argument) typed as what they are; these functions convert nothing.

Storage's client is made with decode_responses=True (storage.connect), so the `bytes | str`
that redis-py's types allow in a reply is always `str` here: these functions say so to the
type checker where a reply enters storage's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from redis.typing import EncodableT, FieldT

# What redis-py declares for the ZRANGE family (a list of members, or of (member, score)).
Range = list[bytes | str] | list[tuple[bytes | str, Any]] | list[list[Any]]


def text(reply: bytes | str | None) -> str | None:
    """GET, HGET."""
    return cast("str | None", reply)


def texts(reply: list[bytes | str]) -> list[str]:
    """LRANGE, HKEYS."""
    return cast("list[str]", reply)


def texts_or_none(reply: list[bytes | str | None]) -> list[str | None]:
    """HMGET."""
    return cast("list[str | None]", reply)


def text_set(reply: set[bytes | str]) -> set[str]:
    """SMEMBERS."""
    return cast("set[str]", reply)


def text_map(reply: dict[bytes | str, bytes | str]) -> dict[str, str]:
    """HGETALL."""
    return cast("dict[str, str]", reply)


def members(reply: Range) -> list[str]:
    """The ZRANGE family without scores."""
    return cast("list[str]", reply)


def scored(reply: Range) -> list[tuple[str, float]]:
    """The ZRANGE family with scores: (member, score)."""
    return cast("list[tuple[str, float]]", reply)


def scanned_map(
    reply: tuple[int, dict[bytes | str, bytes | str] | list[bytes | str]],
) -> tuple[int, dict[str, str]]:
    """HSCAN with values: (next cursor, field -> value)."""
    return cast("tuple[int, dict[str, str]]", reply)


def field_map(mapping: Mapping[str, EncodableT]) -> Mapping[FieldT, EncodableT]:
    """HSET's `mapping`: redis-py's type takes only mappings keyed by its whole field type
    (a Mapping's key type is invariant), which a `dict[str, str]` is not."""
    return cast("Mapping[FieldT, EncodableT]", mapping)
