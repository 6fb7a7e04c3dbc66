"""Marshmallow schemas of the JSON API: request validation and the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime

from marshmallow import (
    EXCLUDE,
    INCLUDE,
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
    validates_schema,
)

from bot.reasons import REASONS
from bot.stats_view import LIST_KINDS, list_reason_ok
from bot.validation import (  # the request bodies the domain takes
    ID_ERROR,
    ID_PATTERN,
    DataFields,
    FullMatch,
)

PAGE_MAX = 1000  # rows per page of any paged list


class ErrorBody(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBody, required=True)


class ProfileCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 100))
    page_id = fields.String(
        required=True,
        validate=FullMatch(r"^[0-9]{1,32}$", error="must be a Facebook Page id (digits)"),
    )
    page_access_token = fields.String(
        required=True,
        load_only=True,
        validate=FullMatch(
            r"^[\x21-\x7e]{1,1000}$",
            error="must be a Facebook access token (visible ASCII, no spaces)",
        ),
    )
    status = fields.String(load_default="enabled", validate=validate.OneOf(("enabled", "disabled")))


class ProfilePatchSchema(Schema):
    name = fields.String(validate=validate.Length(1, 100))
    status = fields.String(validate=validate.OneOf(("enabled", "disabled")))
    page_access_token = fields.String(
        load_only=True,
        validate=FullMatch(
            r"^[\x21-\x7e]{1,1000}$",
            error="must be a Facebook access token (visible ASCII, no spaces)",
        ),
        metadata={"description": "A new token of the same Page (checked with Facebook)"},
    )


class RecoverSchema(Schema):
    """Send again the recoverable failures of the profile's runs created in [since, until]."""

    since = fields.AwareDateTime(required=True, default_timezone=UTC)
    until = fields.AwareDateTime(load_default=None, default_timezone=UTC)
    include_interrupted = fields.Boolean(
        load_default=False,
        metadata={
            "description": "also sends that were interrupted (they may have reached Facebook)"
        },
    )

    @validates_schema
    def a_window_in_the_past(self, data, **_kwargs):
        now = datetime.now(UTC)
        if data["since"] > now:
            raise ValidationError("must not be in the future", "since")
        if data.get("until") is not None and data["until"] <= data["since"]:
            raise ValidationError("must be after since", "until")


class RecoveryAcceptedSchema(Schema):
    recovery_id = fields.String()
    contacts = fields.Integer()
    status_url = fields.String()


class RecoveryRunSchema(Schema):
    run_id = fields.String()
    recovers_run = fields.String()
    total = fields.Integer()
    status_url = fields.String()


class RecoveryContactSchema(Schema):
    run_id = fields.String()
    id = fields.String()
    outcome = fields.String()
    reason_code = fields.String()
    message_id = fields.String()


class RecoveryStatusSchema(Schema):
    recovery_id = fields.String()
    profile_id = fields.String()
    state = fields.String(metadata={"enum": ["preparing", "sending", "done"]})
    since = fields.DateTime()
    until = fields.DateTime()
    include_interrupted = fields.Boolean()
    contacts = fields.Integer()
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    runs = fields.List(fields.Nested(RecoveryRunSchema))
    outcomes = fields.List(fields.Nested(RecoveryContactSchema))
    next_cursor = fields.String(allow_none=True)


class OptinCodeSchema(Schema):
    profile_id = fields.String()
    contact_id = fields.String(allow_none=True)
    ref = fields.String()
    html = fields.String()


class SendingSchema(Schema):
    """Whether the profile sends: "open", or "paused" (its breaker) / "probing" (one send tests
    whether it may resume)."""

    state = fields.String(metadata={"enum": ["open", "paused", "probing"]})
    reason = fields.String(
        allow_none=True,
        metadata={"enum": ["error_rate", "page_blocked", "messages_disabled", "policy_block"]},
    )
    message = fields.String(allow_none=True)
    advice = fields.String(allow_none=True)
    detail = fields.String(allow_none=True)
    since = fields.DateTime(allow_none=True)
    resume_at = fields.DateTime(allow_none=True)


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
    sending = fields.Nested(SendingSchema)
    created_at = fields.DateTime()


class ProfileListSchema(Schema):
    profiles = fields.List(fields.Nested(ProfileSchema))


class ContactPutSchema(Schema):
    # mypy sees Schema.fields (the bound fields) overridden; marshmallow's metaclass takes
    # declared fields out of the class body, so a field may be named "fields".
    fields = DataFields(required=True)  # type: ignore[assignment]


class ContactSchema(Schema):
    id = fields.String()
    optin_refs = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={
            "description": "FBOPTINREF_XXX merge field values: the contact's signed "
            "ref for each profile's generic opt-in code"
        },
    )
    # a field named "fields": see ContactPutSchema
    fields = fields.Dict(keys=fields.String(), values=fields.String())  # type: ignore[assignment]


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
    template = fields.String(
        metadata={"description": "the utility template's name (kind utility_template)"}
    )
    tag = fields.String(metadata={"description": "the message tag (kind tag)"})


class RunContactOutcomeSchema(Schema):
    id = fields.String()
    outcome = fields.String(metadata={"enum": ["sent", "warning", "failed", "pending", "unknown"]})
    reason_code = fields.String()
    reason = fields.String()
    message_id = fields.String()
    detail = fields.String()
    at = fields.DateTime(allow_none=True)
    sent_as = fields.Nested(
        SentAsSchema,
        allow_none=True,
        metadata={
            "description": "what went out (sent outcomes only; null otherwise): a standard "
            "text, a utility template (its name) or a tagged message (its tag)"
        },
    )


class RunUnknownSchema(Schema):
    count = fields.Integer(metadata={"description": "open contacts whose send's answer was lost"})
    settle_by = fields.DateTime(
        metadata={
            "description": "when the last of them is failed (interrupted) unless Facebook's "
            "echo makes it sent first"
        }
    )


class RunStatusSchema(Schema):
    run_id = fields.String()
    program_id = fields.String()
    node_id = fields.String()
    state = fields.String(metadata={"enum": ["queued", "running", "done"]})
    counts = fields.Nested(RunCountsSchema)
    # `unknown` is also the name of a Schema setting: the field gets it as its data key only
    unknown_open = fields.Nested(
        RunUnknownSchema,
        attribute="unknown",
        data_key="unknown",
        allow_none=True,
        metadata={"description": "set when the only open contacts are unknown; null otherwise"},
    )
    contacts = fields.List(fields.Nested(RunContactOutcomeSchema))
    next_cursor = fields.String(allow_none=True)


class TemplateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 512))
    language = fields.String(
        required=True,
        validate=FullMatch(r"^[a-z]{2,3}(_[A-Z]{2})?$", error="a language code like en or en_US"),
    )
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
    nodes = fields.List(
        fields.Nested(NodeSchema), required=True, validate=validate.Length(0, MAX_NODES)
    )


class JsonObjectSchema(Schema):
    """Any JSON object, loaded as it is: for a body checked piece by piece."""

    class Meta:
        unknown = INCLUDE


_PLAIN = {
    "Missing data for required field.": "is missing",
    "Unknown field.": "is not a known field",
    "Field may not be null.": "may not be null",
    "Not a valid string.": "must be a string",
    "Not a valid list.": "must be a list",
    "Invalid input type.": "must be a JSON object",
}


def plain_problems(
    messages: dict | list | str, path: str = "", subject: str = "the value"
) -> list[str]:
    """Marshmallow's nested messages as sentences ("utility_template.language: a language code
    like en or en_US", "message is missing"); `subject` names the value itself."""
    if isinstance(messages, dict):
        return [
            problem
            for key, inner in messages.items()
            for problem in plain_problems(inner, _path(path, key), subject)
        ]
    if isinstance(messages, list):
        return [problem for inner in messages for problem in plain_problems(inner, path, subject)]
    plain = _PLAIN.get(messages)
    return [f"{path or subject} {plain}" if plain else f"{path or subject}: {messages}"]


def _path(path: str, key: object) -> str:
    if key == "_schema":  # a problem of the value itself
        return path
    return f"{path}.{key}" if path else str(key)


class PageArgs(Schema):
    """`?cursor=&limit=` of a paged list; other query arguments are the route's."""

    class Meta:
        unknown = EXCLUDE

    cursor = fields.Integer(load_default=0, validate=validate.Range(min=0))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, PAGE_MAX))


class RunPageArgs(PageArgs):
    limit = fields.Integer(load_default=500, validate=validate.Range(1, PAGE_MAX))


class StatsContactsArgs(PageArgs):
    kind = fields.String(required=True, validate=validate.OneOf(LIST_KINDS))
    reason = fields.String(load_default=None, validate=validate.OneOf(sorted(REASONS)))

    @pre_load
    def no_empty_reason(self, data, **_kwargs):
        return {k: v for k, v in data.items() if not (k == "reason" and v == "")}

    @validates_schema
    def reason_of_warnings_or_failures(self, data, **_kwargs):
        if not list_reason_ok(data.get("kind", ""), data.get("reason")):
            raise ValidationError(
                "only the lists of warnings and failures filter by reason", "reason"
            )


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


class DeliveryLatencySchema(Schema):
    p50_s = fields.Float(allow_none=True)
    p90_s = fields.Float(allow_none=True)
    within_1m = fields.Integer()
    within_1h = fields.Integer(metadata={"description": "after the first minute"})
    within_1d = fields.Integer(metadata={"description": "after the first hour"})
    later = fields.Integer()


class DayStatsSchema(Schema):
    date = fields.Date(allow_none=True)
    sent = fields.Integer()
    delivered = fields.Integer()
    read = fields.Integer()
    awaiting_receipt = fields.Integer()
    no_receipts = fields.Integer()
    warning = fields.Integer()
    failed = fields.Integer()
    recovered = fields.Integer(
        metadata={"description": "of the failed, sent again by a recovery (counted on its day)"}
    )
    unconfirmed = fields.Integer(
        metadata={"description": "sends whose answer was lost, until the echo or the deadline"}
    )
    delivery_latency = fields.Nested(DeliveryLatencySchema)
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


class OptOutSchema(Schema):
    """Withdraw a contact's consent to one profile."""

    profile_id = fields.String(required=True, validate=FullMatch(ID_PATTERN, error=ID_ERROR))


class OptedOutSchema(Schema):
    contact_id = fields.String()
    profile_id = fields.String()
    state = fields.String(metadata={"description": "opted_out"})
    withdrawn = fields.Boolean(
        metadata={"description": "false: consent had already been withdrawn (nothing recorded)"}
    )


class ConsentEventSchema(Schema):
    at = fields.String(metadata={"description": "ISO 8601, UTC"})
    type = fields.String(validate=validate.OneOf(["opt_in", "opt_out"]))
    source = fields.String(
        metadata={
            "description": "opt-ins: plugin, checkbox, m.me, postback; withdrawals: api, "
            "operator, messenger_stop, data_deletion, deauthorize, unreachable"
        }
    )
    verified = fields.Boolean(
        metadata={"description": "our signed ref (opt-ins), an authenticated caller (opt-outs)"}
    )
    recipient = fields.String(
        allow_none=True, metadata={"description": 'the PSID or "user_ref:<ref>"'}
    )
    page_id = fields.String()


class ProfileConsentSchema(Schema):
    profile_id = fields.String()
    state = fields.String(validate=validate.OneOf(["opted_in", "opted_out", "never"]))
    events = fields.List(
        fields.Nested(ConsentEventSchema), metadata={"description": "oldest first"}
    )


class ConsentSchema(Schema):
    contact_id = fields.String()
    profiles = fields.List(fields.Nested(ProfileConsentSchema))


class ErasedSchema(Schema):
    contact_id = fields.String()
    erased = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        metadata={"description": "what was removed or made anonymous, by kind"},
    )
