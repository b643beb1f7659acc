"""Optional encryption of message payloads at rest in Redis (Fernet: AES-128-CBC + HMAC)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence


class MessageCipher:
    """Encrypts with the first key and decrypts with any, so keys can be rotated: put the
    new key first and keep the old ones until messages sealed with them have expired."""

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        from cryptography.fernet import Fernet, MultiFernet

        if isinstance(keys, str | bytes) or not keys:
            raise TypeError(
                "symmetric_encryption_keys must be a non-empty list of keys, "
                f"got {type(keys).__name__}"
            )
        self._fernet = MultiFernet([Fernet(_fernet_key(key)) for key in keys])

    def encrypt(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes, ttl: int | None = None) -> bytes:
        """The plaintext; ``ValueError`` if no key opens the token, it was tampered with,
        or it was sealed more than ``ttl`` seconds ago."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token, ttl)
        except InvalidToken:
            raise ValueError(
                "message cannot be decrypted with any configured key (or is too old)"
            ) from None


def _fernet_key(key: str | bytes) -> bytes:
    """Any secret string becomes a valid Fernet key by hashing it to 32 bytes."""
    raw = key.encode() if isinstance(key, str) else key
    if not raw:
        raise TypeError("An encryption key may not be empty")
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())
