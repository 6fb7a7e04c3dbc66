"""`python -m bot.rotate_tokens`: re-encrypt every stored token (Page tokens, and the login
tokens page owners' roles are re-checked with) with the newest key.

Rotation: put a new key first in TOKEN_ENCRYPTION_KEY (`new,old`), restart web and workers,
run this, then remove the old key.
"""

from __future__ import annotations

import sys

import storage
from bot.config import settings_or_exit
from bot.crypto import TokenCipher


def main() -> int:
    settings = settings_or_exit()
    store = storage.Storage(
        storage.connect(settings), cipher=TokenCipher(settings.token_encryption_keys)
    )
    print(f"re-encrypted {store.profiles.rotate_tokens()} Page tokens with the newest key")
    print(f"re-encrypted {store.users.rotate_tokens()} login tokens with the newest key")
    return 0


if __name__ == "__main__":
    sys.exit(main())
