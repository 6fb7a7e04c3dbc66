"""Request bodies the domain takes, whoever hands them over (the JSON API,
`bot.engine.enqueue_run`): ids, data fields, run and preview requests, on marshmallow. The API's
other schemas and its OpenAPI document: bot/api/schemas.py."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict, overload

from marshmallow import Schema, ValidationError, fields, validate

if TYPE_CHECKING:
    from typing import Unpack

    # The keyword arguments every marshmallow field takes (private, but the one spelling of them).
    from marshmallow.fields import _BaseFieldKwargs

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

    @overload
    def __call__(self, value: str) -> str: ...

    @overload
    def __call__(self, value: bytes) -> bytes: ...

    def __call__(self, value: Any) -> Any:  # as Regexp's: the overloads say what comes back
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def data_field_problems(value: Mapping[Any, object]) -> dict[str, str]:
    """Data fields: UPPER_CASE names, string values; opt-in fields are set by opt-ins only."""
    problems: dict[str, str] = {}
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

    def __init__(self, **kwargs: Unpack[_BaseFieldKwargs]) -> None:
        super().__init__(keys=fields.String(), values=fields.Raw(), **kwargs)

    def _deserialize(
        self, value: object, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> dict[str, str]:
        # Not annotated in marshmallow; its values are checked to be strings just below.
        result: dict[str, str] = super()._deserialize(  # type: ignore[no-untyped-call]
            value, attr, data, **kwargs
        )
        problems = data_field_problems(result)
        if problems:
            raise ValidationError(problems)
        return result


class RunContact(TypedDict):
    """A run's contact, as loaded: its id and data fields."""

    id: str
    fields: dict[str, str]


class RunRequest(TypedDict):
    """A run (or preview) request, as loaded."""

    run_id: str | None
    contacts: list[RunContact]
    callback_url: str | None


class RunContactSchema(Schema):
    id = fields.String(required=True, validate=FullMatch(ID_PATTERN, error=ID_ERROR))
    # Shadows `Schema.fields` only in the class body: marshmallow's metaclass takes declared
    # fields out of it, and the API's field is named "fields".
    fields = DataFields(load_default=dict)  # type: ignore[assignment]


MAX_RUN_CONTACTS = 10_000
MAX_PREVIEW_CONTACTS = 1_000
MAX_CALLBACK_URL = 2000


class RunContacts(fields.List[RunContact]):
    """A run's contacts. The usual item (an id, perhaps string data fields) is checked here
    directly: marshmallow's nested schema costs ~18 µs a contact, 180 ms for 10 000. A list
    with any other item goes through the nested schema, whose messages are the API's errors."""

    def __init__(self, **kwargs: Unpack[_BaseFieldKwargs]) -> None:
        super().__init__(fields.Nested(RunContactSchema), **kwargs)

    def _deserialize(
        self, value: object, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> list[Any]:  # list[RunContact]: marshmallow's List types its items as optional
        plain = plain_run_contacts(value)
        return plain if plain is not None else super()._deserialize(value, attr, data, **kwargs)


_RUN_CONTACT_KEYS = frozenset(("id", "fields"))


def plain_run_contacts(items: object) -> list[RunContact] | None:
    """`items` loaded as RunContactSchema would load them, or None if any is not plainly valid."""
    if type(items) is not list:
        return None
    loaded: list[RunContact] = []
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
    # Where the run's summary is posted once every contact has its outcome. Its scheme and
    # address are checked against the settings by bot/callbacks.py (`url_problem`).
    callback_url = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(1, MAX_CALLBACK_URL)
    )


PREVIEW_LIMIT_ERROR = (
    f"at most {MAX_PREVIEW_CONTACTS} contacts per preview; "
    f"a run takes up to {MAX_RUN_CONTACTS:,}".replace(",", " ")
)


class PreviewRequestSchema(RunRequestSchema):
    """A run's body: `run_id` is checked as a run checks it, then ignored with `callback_url` (a
    preview records nothing, posts nothing); fewer contacts, as each is rendered and answered
    at once."""

    contacts = RunContacts(
        required=True,
        validate=[
            validate.Length(min=1),
            validate.Length(max=MAX_PREVIEW_CONTACTS, error=PREVIEW_LIMIT_ERROR),
        ],
    )
