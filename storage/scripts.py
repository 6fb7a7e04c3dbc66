"""Lua scripts of the storage layer: the key templates, `_lib.lua` (shared helpers), then the
script's own file.

The key templates (storage/keys.py:lua_templates) are written into each script as a Lua table
when it is loaded, so a key's shape is still written once, in Python, and no call has to send
or decode them (that was a fifth of the webhook script's time).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from storage import keys

_DIR = Path(__file__).parent / "lua"
_USES_LIB = {"apply_events", "record_sent", "finish", "expire_unknown", "rate_reserve", "claim"}
_USES_TEMPLATES = _USES_LIB | {"forget_recipient", "profile_status", "put_program", "take_ready"}


def templates_table() -> str:
    """`local T = {name = "msgr:...%s...", ...}` (JSON strings are valid Lua strings here)."""
    entries = ", ".join(f"{name} = {json.dumps(template)}" for name, template in sorted(keys.lua_templates().items()))
    return f"local T = {{{entries}}}\n"


@lru_cache(maxsize=None)
def source(name: str) -> str:
    parts = [templates_table()] if name in _USES_TEMPLATES else []
    if name in _USES_LIB:
        parts.append((_DIR / "_lib.lua").read_text())
    parts.append((_DIR / f"{name}.lua").read_text())
    return "\n".join(parts)


def register(client, name: str):
    """A redis-py Script: EVALSHA, reloading the script if the server lost it."""
    return client.register_script(source(name))
