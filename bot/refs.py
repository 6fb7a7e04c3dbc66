"""Signed opt-in refs: which contact of which profile an opt-in button stands for.

Facebook passes the ref back untouched in `optin.ref`, `referral.ref` or
`postback.referral.ref`. A ref may hold only `A-Z a-z 0-9 - _ =` and at most 250 characters
(MESSENGER.md), so it is one base64url token (no padding) of
`version byte | "<profile id>:<contact id>" | first 16 bytes of HMAC-SHA256`.
Nobody can attach their Messenger account to another contact by editing the page's HTML
without our secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

_VERSION = b"\x01"
_MAC_BYTES = 16
MAX_REF_LENGTH = 250
_REF_CHARS = re.compile(r"[A-Za-z0-9_-]{1,250}")


class OptinRefs:
    """Sign and verify opt-in refs with a key derived from SECRET_KEY."""

    def __init__(self, secret_key: str):
        self._key = hmac.new(secret_key.encode(), b"messenger-optin-ref", hashlib.sha256).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def sign(self, profile_id: str, contact_id: str) -> str:
        """The ref for a contact of a profile; ValueError if it would exceed Facebook's limit."""
        payload = _VERSION + f"{profile_id}:{contact_id}".encode()
        ref = _encode(payload + self._mac(payload))
        if len(ref) > MAX_REF_LENGTH:
            raise ValueError("contact id too long for an opt-in ref")
        return ref

    def fingerprint(self, contact_id: str) -> str:
        """A keyed fingerprint of a contact id, kept a while after its erasure: it names
        nobody without our secret, yet tells a replayed opt-in of an erased contact."""
        return hmac.new(self._key, b"erased:" + contact_id.encode(), hashlib.sha256).hexdigest()[
            :32
        ]

    def names(self, ref: object) -> str | None:
        """The contact id a ref carries, its signature unchecked (erasure removes every ref
        naming the person, forged or not)."""
        raw = _decode(ref)
        if raw is None or len(raw) <= _MAC_BYTES or not raw.startswith(_VERSION):
            return None
        _, sep, contact_id = raw[1:-_MAC_BYTES].decode("utf-8", "replace").partition(":")
        return contact_id if sep and contact_id else None

    def verify(self, ref: object) -> tuple[str, str] | None:
        """(profile id, contact id) when the ref is ours and intact, else None."""
        raw = _decode(ref)
        if raw is None:
            return None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not payload.startswith(_VERSION) or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        profile_id, sep, contact_id = payload[1:].decode("utf-8", "replace").partition(":")
        return (profile_id, contact_id) if sep and profile_id and contact_id else None


def _decode(ref: object) -> bytes | None:
    if not isinstance(ref, str) or not _REF_CHARS.fullmatch(ref):
        return None
    try:
        raw = base64.urlsafe_b64decode(ref + "=" * (-len(ref) % 4))
    except (binascii.Error, ValueError):
        return None
    # base64 ignores a last character's unused low bits: one spelling only
    return raw if _encode(raw) == ref else None


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
