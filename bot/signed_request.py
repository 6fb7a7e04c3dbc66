"""Facebook's `signed_request` (deauthorize and data-deletion callbacks).

`<signature>.<payload>`, both base64url without padding; the signature is HMAC-SHA256 of the
payload *as encoded*, keyed with the app secret; the payload must say `HMAC-SHA256`.
(messenger-facts.md §8.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any


def _decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def parse_signed_request(value: object, app_secret: str) -> dict[str, Any] | None:
    """The payload if the signature is ours and valid, else None."""
    if not isinstance(value, str) or value.count(".") != 1 or len(value) > 8192:
        return None
    signature_part, payload_part = value.split(".", 1)
    try:
        signature = _decode(signature_part)
        payload = json.loads(_decode(payload_part))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    expected = hmac.new(app_secret.encode(), payload_part.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected) or not isinstance(payload, dict):
        return None
    if str(payload.get("algorithm", "")).upper() != "HMAC-SHA256":
        return None
    return payload


def make_signed_request(payload: dict[str, Any], app_secret: str) -> str:
    """Sign a payload the way Facebook does (tests and the simulator's peers use it)."""
    encoded = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    signature = hmac.new(app_secret.encode(), encoded.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(signature).rstrip(b"=").decode() + "." + encoded
