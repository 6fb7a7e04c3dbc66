"""The README documents what the code reads: every setting, both commands."""
from __future__ import annotations

from pathlib import Path

from bot.config import PROCESS_SETTINGS, SETTINGS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme_table():
    missing = [name for name in {**SETTINGS, **PROCESS_SETTINGS} if f"| `{name}` |" not in README]
    assert missing == []


def test_readme_gives_the_two_commands():
    assert "make run" in README and "make test" in README
