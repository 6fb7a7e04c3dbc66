"""Page tokens encrypted at rest with Fernet; several keys allow rotation (newest first)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bot.errors import BotError


class TokenDecryptError(BotError):
    """A stored token cannot be decrypted with any configured key."""


class TokenCipher:
    """Encrypt with the first key; decrypt with any; re-encrypt old tokens with `rotate`."""

    def __init__(self, keys: tuple[str, ...] | list[str]):
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def encrypt(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, stored: str) -> str:
        try:
            return self._fernet.decrypt(stored.encode()).decode()
        except InvalidToken as exc:
            raise TokenDecryptError(
                "stored token does not decrypt with TOKEN_ENCRYPTION_KEY "
                "(was a key removed before rotation finished?)"
            ) from exc

    def rotate(self, stored: str) -> str:
        """The same token encrypted with the newest key."""
        try:
            return self._fernet.rotate(stored.encode()).decode()
        except InvalidToken as exc:
            raise TokenDecryptError(
                "stored token does not decrypt with TOKEN_ENCRYPTION_KEY"
            ) from exc
