"""Facebook's webhook signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>`.

Always over the raw bytes as received (Meta signs its ASCII-escaped JSON; re-serialising
changes them). Compared in constant time. A missing or malformed header is simply invalid.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_HEADER = re.compile(r"sha256=([0-9a-fA-F]{64})")


class WebhookSignature:
    """Sign and verify webhook bodies with the app secret (and sign the run callbacks we send,
    bot/callbacks.py, with CALLBACK_SECRET: the same scheme)."""

    def __init__(self, app_secret: str):
        self._secret = app_secret.encode()

    def digest(self, body: bytes) -> str:
        return hmac.new(self._secret, body, hashlib.sha256).hexdigest()

    def sign(self, body: bytes) -> str:
        """The header value Facebook would send for this body (tests use it too)."""
        return "sha256=" + self.digest(body)

    def is_valid(self, body: bytes, header: str | None) -> bool:
        match = _HEADER.fullmatch(header or "")
        return match is not None and hmac.compare_digest(match.group(1).lower(), self.digest(body))
