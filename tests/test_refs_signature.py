"""Opt-in refs and webhook signatures: the two checks that keep strangers out."""
from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bot.refs import OptinRefs
from bot.signature import WebhookSignature

CONTACT_IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@-",
                      min_size=1, max_size=128)


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
    assert ours.verify("contact-1") is None       # a raw contact id is not a ref
    assert ours.verify(None) is None and ours.verify(123) is None and ours.verify("") is None
    assert ours.verify("a" * 251) is None


def test_signature_accepts_only_the_exact_body():
    sig = WebhookSignature("app-secret")
    body = b'{"object":"page","entry":[]}'
    header = sig.sign(body)
    assert sig.is_valid(body, header)
    assert sig.is_valid(body, header.upper().replace("SHA256=", "sha256="))  # hex case does not matter
    assert not sig.is_valid(body + b" ", header)
    assert not sig.is_valid(body, None)
    assert not sig.is_valid(body, header[7:])          # missing the sha256= prefix
    assert not sig.is_valid(body, "sha1=" + header[7:])
    assert not sig.is_valid(body, header + "00")
