"""Marshmallow schemas of the JSON API: request validation and the OpenAPI document."""
from __future__ import annotations

import re

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

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


class ErrorBody(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBody, required=True)


class ProfileCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 100))
    page_id = fields.String(required=True, validate=FullMatch(r"^[0-9]{1,32}$", error="must be a Facebook Page id (digits)"))
    page_access_token = fields.String(required=True, load_only=True, validate=FullMatch(
        r"^[\x21-\x7e]{1,1000}$", error="must be a Facebook access token (visible ASCII, no spaces)"))
    status = fields.String(load_default="enabled", validate=validate.OneOf(("enabled", "disabled")))


class ProfilePatchSchema(Schema):
    name = fields.String(validate=validate.Length(1, 100))
    status = fields.String(validate=validate.OneOf(("enabled", "disabled")))


class OptinCodeSchema(Schema):
    profile_id = fields.String()
    contact_id = fields.String(allow_none=True)
    ref = fields.String()
    html = fields.String()


class ProfileSchema(Schema):
    id = fields.String()
    name = fields.String()
    page_id = fields.String()
    page_name = fields.String()
    status = fields.String()
    optin_field = fields.String()
    health = fields.String(metadata={"enum": ["ok", "needs_reauth", "disconnected", "blocked"]})
    health_reason = fields.String()
    health_checked_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class ProfileListSchema(Schema):
    profiles = fields.List(fields.Nested(ProfileSchema))


def data_field_problems(value: dict) -> dict[str, str]:
    """Data fields: UPPER_CASE names, string values; opt-in fields are set by opt-ins only."""
    problems = {}
    if len(value) > MAX_FIELDS:
        return {"_": f"at most {MAX_FIELDS} fields"}
    for name, field_value in value.items():
        if not isinstance(name, str) or not FIELD_NAME.match(name):
            problems[str(name)] = "field names are upper case letters, digits and _ (like FIRSTNAME)"
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


class ContactPutSchema(Schema):
    fields = DataFields(required=True)


class ContactSchema(Schema):
    id = fields.String()
    optin_refs = fields.Dict(keys=fields.String(), values=fields.String(),
                             metadata={"description": "FBOPTINREF_XXX merge field values: the contact's signed "
                                                      "ref for each profile's generic opt-in code"})
    fields = fields.Dict(keys=fields.String(), values=fields.String())


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
        if type(ident) is not str or not ID.fullmatch(ident) or type(data) is not dict or data_field_problems(data):
            return None
        loaded.append({"id": ident, "fields": data})
    return loaded


class RunRequestSchema(Schema):
    run_id = fields.String(load_default=None, allow_none=True,
                           validate=FullMatch(ID_PATTERN, error=ID_ERROR))
    contacts = RunContacts(required=True, validate=validate.Length(1, MAX_RUN_CONTACTS))


PREVIEW_LIMIT_ERROR = (f"at most {MAX_PREVIEW_CONTACTS} contacts per preview; "
                       f"a run takes up to {MAX_RUN_CONTACTS:,}".replace(",", " "))


class PreviewRequestSchema(RunRequestSchema):
    """A run's body: `run_id` is checked as a run checks it, then ignored (a preview records
    nothing); fewer contacts, as each is rendered and answered at once."""
    contacts = RunContacts(required=True, validate=[validate.Length(min=1),
                                                    validate.Length(max=MAX_PREVIEW_CONTACTS, error=PREVIEW_LIMIT_ERROR)])


class RunAcceptedSchema(Schema):
    run_id = fields.String()
    status_url = fields.String()
    created = fields.Boolean()
    duplicates_ignored = fields.Integer()


class RunCountsSchema(Schema):
    sent = fields.Integer()
    warning = fields.Integer()
    failed = fields.Integer()
    pending = fields.Integer()


class SentAsSchema(Schema):
    kind = fields.String(metadata={"enum": ["text", "utility_template", "tag"]})
    template = fields.String(metadata={"description": "the utility template's name (kind utility_template)"})
    tag = fields.String(metadata={"description": "the message tag (kind tag)"})


class RunContactOutcomeSchema(Schema):
    id = fields.String()
    outcome = fields.String(metadata={"enum": ["sent", "warning", "failed", "pending", "unknown"]})
    reason_code = fields.String()
    reason = fields.String()
    message_id = fields.String()
    detail = fields.String()
    at = fields.DateTime(allow_none=True)
    sent_as = fields.Nested(SentAsSchema, allow_none=True, metadata={
        "description": "what went out (sent outcomes only; null otherwise): a standard text, a utility "
                       "template (its name) or a tagged message (its tag)"})


class RunStatusSchema(Schema):
    run_id = fields.String()
    program_id = fields.String()
    node_id = fields.String()
    state = fields.String(metadata={"enum": ["queued", "running", "done"]})
    counts = fields.Nested(RunCountsSchema)
    contacts = fields.List(fields.Nested(RunContactOutcomeSchema))
    next_cursor = fields.String(allow_none=True)


class TemplateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 512))
    language = fields.String(required=True, validate=FullMatch(r"^[a-z]{2,3}(_[A-Z]{2})?$",
                                                                     error="a language code like en or en_US"))
    parameters = fields.List(fields.String(), load_default=list, validate=validate.Length(0, 20))


class NodeSchema(Schema):
    id = fields.String(required=True, validate=FullMatch(ID_PATTERN, error=ID_ERROR))
    type = fields.String(required=True, validate=validate.OneOf(("messenger",)))
    profile_id = fields.String(required=True)
    tag = fields.String(required=True)
    message = fields.String(required=True)
    utility_template = fields.Nested(TemplateSchema, load_default=None, allow_none=True)


MAX_NODES = 200


class ProgramFieldsSchema(Schema):
    """A program's own fields; its nodes are checked one by one (bot/api/programs.py)."""
    name = fields.String(required=True, validate=validate.Length(1, 200))
    status = fields.String(required=True, validate=validate.OneOf(("draft", "active", "paused")))


class ProgramPutSchema(ProgramFieldsSchema):
    nodes = fields.List(fields.Nested(NodeSchema), required=True, validate=validate.Length(0, MAX_NODES))


class JsonObjectSchema(Schema):
    """Any JSON object, loaded as it is: for a body checked piece by piece."""

    class Meta:
        unknown = INCLUDE


_PLAIN = {"Missing data for required field.": "is missing", "Unknown field.": "is not a known field",
          "Field may not be null.": "may not be null", "Not a valid string.": "must be a string",
          "Not a valid list.": "must be a list", "Invalid input type.": "must be a JSON object"}


def plain_problems(messages: dict | list | str, path: str = "", subject: str = "the value") -> list[str]:
    """Marshmallow's nested messages as sentences ("utility_template.language: a language code
    like en or en_US", "message is missing"); `subject` names the value itself."""
    if isinstance(messages, dict):
        return [problem for key, inner in messages.items()
                for problem in plain_problems(inner, _path(path, key), subject)]
    if isinstance(messages, list):
        return [problem for inner in messages for problem in plain_problems(inner, path, subject)]
    plain = _PLAIN.get(messages)
    return [f"{path or subject} {plain}" if plain else f"{path or subject}: {messages}"]


def _path(path: str, key: object) -> str:
    if key == "_schema":  # a problem of the value itself
        return path
    return f"{path}.{key}" if path else str(key)


class ProgramSchema(Schema):
    id = fields.String()
    name = fields.String()
    status = fields.String()
    nodes = fields.List(fields.Nested(NodeSchema))
    updated_at = fields.DateTime()


class PreviewContactSchema(Schema):
    id = fields.String()
    outcome = fields.String(metadata={"enum": ["send", "warning", "failed"]})
    reason_code = fields.String()
    reason = fields.String()
    messaging_type = fields.String()
    text = fields.String(allow_none=True)
    template = fields.Dict(allow_none=True)


class PreviewSchema(Schema):
    contacts = fields.List(fields.Nested(PreviewContactSchema))


class DayStatsSchema(Schema):
    date = fields.Date(allow_none=True)
    sent = fields.Integer()
    delivered = fields.Integer()
    read = fields.Integer()
    awaiting_receipt = fields.Integer()
    no_receipts = fields.Integer()
    warning = fields.Integer()
    failed = fields.Integer()
    reasons = fields.Dict(keys=fields.String(), values=fields.Integer())


class StatsSchema(Schema):
    profile_id = fields.String()
    from_ = fields.Date(data_key="from")
    to = fields.Date()
    kind = fields.String()
    timezone = fields.String()
    delivered_last_7_days = fields.Integer()
    totals = fields.Nested(DayStatsSchema)
    days = fields.List(fields.Nested(DayStatsSchema))


class StatsContactSchema(Schema):
    contact_id = fields.String()
    fields_ = fields.Dict(data_key="fields", keys=fields.String(), values=fields.String())
    at = fields.DateTime(allow_none=True)
    sent_at = fields.DateTime(allow_none=True)
    reason_code = fields.String()
    reason = fields.String()
    message_id = fields.String()
    detail = fields.String()


class StatsContactsSchema(Schema):
    profile_id = fields.String()
    date = fields.Date()
    kind = fields.String()
    reason = fields.String(allow_none=True)
    total = fields.Integer()
    contacts = fields.List(fields.Nested(StatsContactSchema))
    next_cursor = fields.String(allow_none=True)
