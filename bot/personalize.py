"""Message personalisation: `@FIELD@` and `@FIELD|fallback@`, plain substitution only.

`@FIELD@` becomes the contact's value of data field FIELD (empty if it has none);
`@FIELD|text@` uses `text` when the value is empty. Field names are upper case, like the
platform's data fields. An `@` that does not start such a placeholder is literal text (an
e-mail address, "@Support"), except `@word@`/`@word|..@` shapes with a bad field name or an
unclosed `@FIELD|...`, which are refused at node save time rather than sent half-rendered.
Nothing here evaluates anything: values are inserted verbatim.
"""

from __future__ import annotations

import re

# A well-formed placeholder.
PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]{0,63})(?:\|([^@\n]{0,200}))?@")
# Shapes that look like a placeholder but are not well-formed.
_SUSPECT = re.compile(r"@([A-Za-z_][A-Za-z0-9_ ]{0,63})(\|[^@\n]*)?(@|$|\n)")


def problems(text: str) -> list[str]:
    """Why a message template is malformed (empty list when it is fine)."""
    found = []
    well_formed = {m.span() for m in PLACEHOLDER.finditer(text)}
    covered = [range(a, b) for a, b in well_formed]
    for match in _SUSPECT.finditer(text):
        start = match.start()
        if any(start in span for span in covered):
            continue
        name, fallback, end = match.group(1), match.group(2), match.group(3)
        if end == "@" and not re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", name):
            found.append(
                f"@{name}@: field names are upper case letters, digits and _ (like @FIRSTNAME@)"
            )
        elif fallback is not None and end != "@":
            found.append(f"@{name}{fallback}: the placeholder is not closed with @")
    return found


def fields_used(text: str) -> list[str]:
    """Data fields the text reads, in order of first use."""
    return list(dict.fromkeys(m.group(1) for m in PLACEHOLDER.finditer(text)))


def render(text: str, fields: dict[str, str]) -> str:
    """The text with every placeholder replaced by the contact's value or its fallback."""

    def value(match: re.Match[str]) -> str:
        return fields.get(match.group(1)) or (match.group(2) or "")

    return PLACEHOLDER.sub(value, text)
