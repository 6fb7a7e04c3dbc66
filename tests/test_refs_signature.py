"""Opt-in refs and webhook signatures: the two checks that keep strangers out."""

from __future__ import annotations

import base64
import re

from hypothesis import given
from hypothesis import strategies as st

from bot.refs import OptinRefs
from bot.signature import WebhookSignature

CONTACT_IDS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@-",
    min_size=1,
    max_size=128,
)


@given(profile=st.integers(1, 10**9), contact=CONTACT_IDS)
def test_ref_round_trip_fits_facebook_limits(profile, contact):
    refs = OptinRefs("secret")
    ref = refs.sign(str(profile), contact)
    assert re.fullmatch(r"[A-Za-z0-9_=-]{1,250}", ref)
    assert refs.verify(ref) == (str(profile), contact)


def test_ref_from_another_secret_or_edited_is_refused():
    ours, theirs = OptinRefs("secret"), OptinRefs("other")
    ref = ours.sign("3", "contact-1")
    assert theirs.verify(ref) is None
    tampered = ref[:-2] + ("AA" if ref[-2:] != "AA" else "BB")
    assert ours.verify(tampered) is None
    assert ours.verify("contact-1") is None  # a raw contact id is not a ref
    assert ours.verify(None) is None and ours.verify(123) is None and ours.verify("") is None
    assert ours.verify("a" * 251) is None


URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def other_spellings(ref: str) -> list[str]:
    """`ref` with its last character changed but the same decoded bytes: the bits of the last
    character that no byte uses (4 of its 6 when 1 byte is left over, 2 when 2 are) set
    otherwise."""
    unused = {2: 4, 3: 2}.get(len(ref) % 4, 0)  # a canonical encoding leaves them 0
    value = URLSAFE.index(ref[-1])
    return [ref[:-1] + URLSAFE[value | low] for low in range(1, 1 << unused)]


@given(profile=st.integers(1, 10**9), contact=CONTACT_IDS)
def test_only_the_canonical_base64_spelling_of_a_ref_is_accepted(profile, contact):
    refs = OptinRefs("secret")
    ref = refs.sign(str(profile), contact)
    for spelling in other_spellings(ref):
        assert base64.urlsafe_b64decode(
            spelling + "=" * (-len(spelling) % 4)
        ) == base64.urlsafe_b64decode(
            ref + "=" * (-len(ref) % 4)
        )  # the same bytes, signature and all
        assert refs.verify(spelling) is None


def test_a_ref_with_leftover_bits_has_other_spellings():
    ref = OptinRefs("secret").sign("3", "contact-1")  # 28 bytes: 1 left over, 4 unused bits
    assert len(other_spellings(ref)) == 15


def test_signature_accepts_only_the_exact_body():
    sig = WebhookSignature("app-secret")
    body = b'{"object":"page","entry":[]}'
    header = sig.sign(body)
    assert sig.is_valid(body, header)
    assert sig.is_valid(
        body, header.upper().replace("SHA256=", "sha256=")
    )  # hex case does not matter
    assert not sig.is_valid(body + b" ", header)
    assert not sig.is_valid(body, None)
    assert not sig.is_valid(body, header[7:])  # missing the sha256= prefix
    assert not sig.is_valid(body, "sha1=" + header[7:])
    assert not sig.is_valid(body, header + "00")
