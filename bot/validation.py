"""Request bodies the domain takes, whoever hands them over (the JSON API, `bot.engine.enqueue_run`):
ids, data fields, run and preview requests, on marshmallow. The API's other schemas and its
OpenAPI document: bot/api/schemas.py."""

from __future__ import annotations

import re

from marshmallow import Schema, ValidationError, fields, validate

ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
ID_ERROR = "1-128 letters, digits or . _ : @ -"
ID = re.compile(ID_PATTERN)
FIELD_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
MAX_FIELD_VALUE = 4000
MAX_FIELDS = 200


class FullMatch(validate.Regexp):
    """`validate.Regexp` over the whole value. Its `re.match` lets `$` match before a final
    newline, so "c1\n" passed for an id; the published pattern (JSON Schema: `$` is the end of
    the input) stays as written."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def data_field_problems(value: dict) -> dict[str, str]:
    """Data fields: UPPER_CASE names, string values; opt-in fields are set by opt-ins only."""
    problems = {}
    if len(value) > MAX_FIELDS:
        return {"_": f"at most {MAX_FIELDS} fields"}
    for name, field_value in value.items():
        if not isinstance(name, str) or not FIELD_NAME.match(name):
            problems[str(name)] = (
                "field names are upper case letters, digits and _ (like FIRSTNAME)"
            )
        elif name.startswith("FBOPTIN_"):
            problems[name] = "opt-in fields are set only when the contact opts in"
        elif not isinstance(field_value, str):
            problems[name] = "values are strings"
        elif len(field_value) > MAX_FIELD_VALUE:
            problems[name] = f"at most {MAX_FIELD_VALUE} characters"
    return problems


class DataFields(fields.Dict):
    """A contact's data fields: name -> string value."""

    def __init__(self, **kwargs):
        super().__init__(keys=fields.String(), values=fields.Raw(), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        result = super()._deserialize(value, attr, data, **kwargs)
        problems = data_field_problems(result)
        if problems:
            raise ValidationError(problems)
        return result


class RunContactSchema(Schema):
    id = fields.String(required=True, validate=FullMatch(ID_PATTERN, error=ID_ERROR))
    fields = DataFields(load_default=dict)


MAX_RUN_CONTACTS = 10_000
MAX_PREVIEW_CONTACTS = 1_000


class RunContacts(fields.List):
    """A run's contacts. The usual item (an id, perhaps string data fields) is checked here
    directly: marshmallow's nested schema costs ~18 µs a contact, 180 ms for 10 000. A list
    with any other item goes through the nested schema, whose messages are the API's errors."""

    def __init__(self, **kwargs):
        super().__init__(fields.Nested(RunContactSchema), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        plain = plain_run_contacts(value)
        return plain if plain is not None else super()._deserialize(value, attr, data, **kwargs)


_RUN_CONTACT_KEYS = frozenset(("id", "fields"))


def plain_run_contacts(items) -> list[dict] | None:
    """`items` loaded as RunContactSchema would load them, or None if any is not plainly valid."""
    if type(items) is not list:
        return None
    loaded = []
    for item in items:
        if type(item) is not dict or not _RUN_CONTACT_KEYS.issuperset(item):
            return None
        ident, data = item.get("id"), item.get("fields", {})
        if (
            type(ident) is not str
            or not ID.fullmatch(ident)
            or type(data) is not dict
            or data_field_problems(data)
        ):
            return None
        loaded.append({"id": ident, "fields": data})
    return loaded


class RunRequestSchema(Schema):
    run_id = fields.String(
        load_default=None, allow_none=True, validate=FullMatch(ID_PATTERN, error=ID_ERROR)
    )
    contacts = RunContacts(required=True, validate=validate.Length(1, MAX_RUN_CONTACTS))


PREVIEW_LIMIT_ERROR = (
    f"at most {MAX_PREVIEW_CONTACTS} contacts per preview; "
    f"a run takes up to {MAX_RUN_CONTACTS:,}".replace(",", " ")
)


class PreviewRequestSchema(RunRequestSchema):
    """A run's body: `run_id` is checked as a run checks it, then ignored (a preview records
    nothing); fewer contacts, as each is rendered and answered at once."""

    contacts = RunContacts(
        required=True,
        validate=[
            validate.Length(min=1),
            validate.Length(max=MAX_PREVIEW_CONTACTS, error=PREVIEW_LIMIT_ERROR),
        ],
    )
