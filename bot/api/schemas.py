"""Marshmallow schemas of the JSON API: request validation and the OpenAPI document."""
from __future__ import annotations

import re

from marshmallow import Schema, ValidationError, fields, validate

ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
FIELD_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
MAX_FIELD_VALUE = 4000
MAX_FIELDS = 200


class ErrorBody(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBody, required=True)


class ProfileCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 100))
    page_id = fields.String(required=True, validate=validate.Regexp(r"^[0-9]{1,32}$", error="must be a Facebook Page id (digits)"))
    page_access_token = fields.String(required=True, load_only=True, validate=validate.Length(1, 1000))
    status = fields.String(load_default="enabled", validate=validate.OneOf(("enabled", "disabled")))


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
    fields = fields.Dict(keys=fields.String(), values=fields.String())
