"""The README documents what the code reads: every setting, both commands."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from bot.config import settings_table

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def readme_settings_table() -> str:
    """The Markdown table of the README's Configuration section."""
    section = README[README.index("\n## Configuration\n") :]
    lines = section.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = itertools.takewhile(lambda line: line.startswith("|"), lines[first:])
    return "\n".join(rows)


def test_readme_settings_table_is_the_one_generated_from_the_settings():
    assert readme_settings_table() == settings_table(), (
        "regenerate the README's table: .venv/bin/python -c "
        "'from bot.config import settings_table; print(settings_table())'"
    )


def test_readme_gives_the_two_commands():
    assert "make run" in README and "make test" in README


# -- the sandbox walkthrough: tests/test_make_run.py runs it against a real `make run` -------------

WALKTHROUGH_HEADING = "## Try it in sandbox mode"


@dataclass(frozen=True)
class Step:
    command: str  # a shell command, as the README shows it (localhost:8000)
    expected: object = None  # the JSON the README says it prints (abridged), if it says


def walkthrough_steps() -> list[Step]:
    """The walkthrough's shell blocks, each with the JSON block that follows it, if any."""
    section = README[README.index(WALKTHROUGH_HEADING) :]
    section = section[: section.index("\n## ", 1)]
    steps: list[Step] = []
    for kind, body in re.findall(r"```(sh|json)\n(.*?)```", section, re.S):
        if kind == "sh":
            steps.append(Step(body.replace("\\\n", " ")))
        else:
            assert steps and steps[-1].expected is None, "a JSON block with no command before it"
            steps[-1] = Step(steps[-1].command, json.loads(body))
    return steps


def abridged_match(expected: object, actual: object) -> bool:
    """True if `actual` has everything `expected` shows: dict keys may be left out of
    `expected`, list items may not (a list shown is the whole list, in order)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and abridged_match(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(abridged_match(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return expected == actual


def test_the_walkthrough_goes_step_by_step_with_what_each_prints():
    steps = walkthrough_steps()
    commands = [s.command for s in steps]
    assert any("/preview" in c for c in commands) and any("/runs/demo-1" in c for c in commands)
    assert all(s.expected is not None for s in steps if "curl" in s.command), (
        "a step without its output"
    )
    assert all(c.count("curl") <= 1 for c in commands), "one command per step"


def test_abridged_match_needs_every_shown_field_and_every_list_item():
    actual = {"a": 1, "b": [{"id": "x", "n": 2}, {"id": "y"}], "c": None}
    assert abridged_match({"a": 1, "b": [{"id": "x"}, {"id": "y"}]}, actual)
    assert not abridged_match({"b": [{"id": "x"}]}, actual)
    assert not abridged_match({"a": 2}, actual)
    assert not abridged_match({"d": None}, actual)
