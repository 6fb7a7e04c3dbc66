"""Lua scripts of the storage layer, loaded once per Redis client."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_DIR = Path(__file__).parent / "lua"


@lru_cache(maxsize=None)
def source(name: str) -> str:
    return (_DIR / f"{name}.lua").read_text()


def register(client, name: str):
    """A redis-py Script: EVALSHA, reloading the script if the server lost it."""
    return client.register_script(source(name))
