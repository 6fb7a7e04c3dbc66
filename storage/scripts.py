"""Lua scripts of the storage layer: `_lib.lua` (shared helpers) + the script's own file."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_DIR = Path(__file__).parent / "lua"
_USES_LIB = {"apply_events", "record_sent", "finish", "expire_unknown", "rate_reserve", "claim"}


@lru_cache(maxsize=None)
def source(name: str) -> str:
    own = (_DIR / f"{name}.lua").read_text()
    return (_DIR / "_lib.lua").read_text() + "\n" + own if name in _USES_LIB else own


def register(client, name: str):
    """A redis-py Script: EVALSHA, reloading the script if the server lost it."""
    return client.register_script(source(name))
