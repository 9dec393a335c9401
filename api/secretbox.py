"""API secrets encrypted at rest: AES-256-GCM with a server key (`cryptography`).

Binance's HMAC signatures need the secret itself on the server, so it cannot be a
one-way hash; instead Redis holds ``v1:`` + base64(nonce + ciphertext), with the API
key as associated data (a sealed secret copied to another key's record does not open).

The server key (32 bytes), in this order:

| source                                  | meaning                                               |
|-----------------------------------------|-------------------------------------------------------|
| `EXCHANGE_SECRET_KEY`                   | base64 (url-safe or standard) of 32 bytes             |
| `$EXCHANGE_DATA_DIR/api-secret.key`     | the same, in a file created with mode 0600 on first use |

Every process that shares the Redis (API, `exchange admin`, the market maker) must
see the same key: the same environment variable or the same data dir. Losing the key
means every API key must be reissued. Secrets and the key are never logged.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infra.config import ServicesConfig
from pipeline.errors import ExchangeError

PREFIX: Final = "v1:"
KEY_ENV: Final = "EXCHANGE_SECRET_KEY"
KEY_FILE: Final = "api-secret.key"
NONCE_BYTES: Final = 12


class SecretKeyError(ExchangeError):
    """The server key is missing, malformed, or does not open a stored secret."""


def _decode_key(text: str, where: str) -> bytes:
    raw = text.strip()
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)) if ("-" in raw or "_" in raw) else (
            base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True))
    except (binascii.Error, ValueError):
        raise SecretKeyError(f"{where} is not base64") from None
    if len(key) != 32:
        raise SecretKeyError(f"{where} must hold 32 bytes (base64), not {len(key)}")
    return key


def new_key_text() -> str:
    """A fresh server key, as base64 text."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


class SecretBox:
    """Seals and opens API secrets with one server key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretKeyError("the server key must be 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:  # never show the key
        return "SecretBox(<key hidden>)"

    @staticmethod
    def is_sealed(stored: str) -> bool:
        return stored.startswith(PREFIX)

    def seal(self, secret: str, api_key: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), api_key.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str, api_key: str) -> str:
        """The secret of a stored value (a legacy plain value is returned as is)."""
        if not self.is_sealed(stored):
            return stored
        try:
            raw = base64.b64decode(stored[len(PREFIX):], validate=True)
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], api_key.encode()).decode()
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretKeyError("a stored API secret does not open with this server key") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SecretBox:
        """The box of `EXCHANGE_SECRET_KEY`, else of the data dir's key file (created on first use)."""
        text = environ.get(KEY_ENV, "").strip()
        if text:
            return cls(_decode_key(text, KEY_ENV))
        return cls(load_or_create_key(ServicesConfig.from_env(environ).data_dir / KEY_FILE))


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`; a new one, written with mode 0600, if the file does not exist."""
    try:
        return _decode_key(path.read_text(), str(path))
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    text = new_key_text()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return _decode_key(path.read_text(), str(path))
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return _decode_key(text, str(path))
