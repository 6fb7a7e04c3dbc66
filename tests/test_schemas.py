"""The run request's direct check of plain contacts loads exactly what its nested schema loads,
and refuses (by handing over to that schema, whose messages are the API's) everything else."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields, validate

from bot.validation import (
    MAX_RUN_CONTACTS,
    RunContactSchema,
    RunRequestSchema,
    plain_run_contacts,
)


class NestedOnly(Schema):
    """RunRequestSchema's contacts as marshmallow alone loads them (the reference)."""

    contacts = fields.List(
        fields.Nested(RunContactSchema),
        required=True,
        validate=validate.Length(1, MAX_RUN_CONTACTS),
    )


def load(schema: Schema, body: dict):
    try:
        return "loaded", schema.load(body)["contacts"]
    except ValidationError as error:
        return "refused", error.messages["contacts"]


valid_ids = st.from_regex(r"[A-Za-z0-9._:@-]{1,128}", fullmatch=True)
ids = st.one_of(
    valid_ids,
    valid_ids,
    valid_ids,  # mostly valid, so that one bad part decides
    st.sampled_from(["", "c1\n", "has space", "x" * 129, "é"]),
    st.integers(),
    st.none(),
)
valid_names = st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True)
names = st.one_of(valid_names, valid_names, st.sampled_from(["FBOPTIN_001", "lower", "", "X" * 65]))
values = st.one_of(
    st.text(max_size=20), st.text(max_size=20), st.just("v" * 4001), st.integers(), st.none()
)
field_maps = st.one_of(
    *[st.dictionaries(names, values, max_size=3)] * 3, st.none(), st.lists(st.text(), max_size=1)
)
contacts = st.one_of(
    *[st.fixed_dictionaries({"id": ids}, optional={"fields": field_maps})] * 4,
    st.fixed_dictionaries({"id": ids, "other": st.text(max_size=3)}),
    st.sampled_from([None, "c1", 1, [], {}]),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(contacts, max_size=4))
@example([{"id": "c1", "fields": {"lower": "x"}}])
@example([{"id": "c1\n"}])
@example([{"id": "c1", "fields": {"FIRSTNAME": 1}}])
@example([{"id": "c1", "fields": None}])
def test_plain_contacts_load_as_the_nested_schema_loads_them(items):
    body = {"contacts": items}
    assert load(RunRequestSchema(), body) == load(NestedOnly(), body)


def test_only_plain_contacts_take_the_direct_path():
    assert plain_run_contacts([{"id": "c1"}, {"id": "c2", "fields": {"FIRSTNAME": "Ann"}}]) == [
        {"id": "c1", "fields": {}},
        {"id": "c2", "fields": {"FIRSTNAME": "Ann"}},
    ]
    for not_plain in (
        [{"id": "c1\n"}],
        [{"id": "c1", "x": 1}],
        [{"id": "c1", "fields": None}],
        ["c1"],
        {"id": "c1"},
    ):
        assert plain_run_contacts(not_plain) is None


@pytest.mark.parametrize("size", [10_000])
def test_the_largest_run_request_loads_and_one_more_is_refused(size):
    body = {"contacts": [{"id": f"c{i}", "fields": {"FIRSTNAME": "Ann"}} for i in range(size)]}
    assert len(RunRequestSchema().load(body)["contacts"]) == size
    body["contacts"].append({"id": "one-more"})
    with pytest.raises(ValidationError):
        RunRequestSchema().load(body)
