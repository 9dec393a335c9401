"""Accounts and API keys, kept in Redis (hashes), owned by the API and the admin tools.

Keys:

- ``acct:seq``: the last account id given (INCR).
- ``acct:{id}``: hash ``name``, ``role`` (``user`` or ``admin``), ``created``.
- ``acct:{id}:keys``: set of the account's API keys.
- ``apikey:{key}``: hash ``account_id``, ``secret``, ``permissions`` (comma list of
  ``read``, ``trade``, ``admin``), ``created``.

Secrets: Binance's HMAC-SHA256 signatures need the secret itself on the server, so
it cannot be stored as a one-way hash. It is stored as is in Redis, which is the
trust boundary (protect it like the database: no public port, AUTH, disk
permissions); it is never logged and never returned after creation. Encrypting it
at rest with a server key is future work.

Sign-up / login for the web UI (passwords hashed with a real password hashing
library, sessions) is not built yet.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Final

import msgspec

Permission = str
PERMISSIONS: Final = ("read", "trade", "admin")
USER_PERMISSIONS: Final = ("read", "trade")


class ApiKey(msgspec.Struct, frozen=True):
    """An API key as the API checks it (the secret stays server-side)."""

    key: str
    account_id: int
    secret: str
    permissions: frozenset[str]

    def allows(self, permission: str) -> bool:
        return permission in self.permissions


class NewKey(msgspec.Struct, frozen=True):
    account_id: int
    api_key: str
    secret: str
    permissions: tuple[str, ...]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def create_account(client: Any, name: str, *, admin: bool = False) -> NewKey:
    """A new account and its first API key (read + trade, plus admin for an admin account)."""
    account_id = int(await client.incr("acct:seq"))
    await client.hset(f"acct:{account_id}", mapping={"name": name, "role": "admin" if admin else "user",
                                                      "created": str(time.time_ns() // 1_000_000)})
    permissions = (*USER_PERMISSIONS, "admin") if admin else USER_PERMISSIONS
    return await create_api_key(client, account_id, permissions)


async def account_exists(client: Any, account_id: int) -> bool:
    return bool(await client.exists(f"acct:{account_id}"))


async def create_api_key(client: Any, account_id: int, permissions: tuple[str, ...] = USER_PERMISSIONS) -> NewKey:
    """A new API key and secret for an existing account."""
    unknown = set(permissions) - set(PERMISSIONS)
    if unknown:
        raise ValueError(f"unknown permissions {sorted(unknown)}")
    if not await account_exists(client, account_id):
        raise LookupError(f"no account {account_id}")
    key = secrets.token_hex(32)
    secret = secrets.token_hex(32)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset(f"apikey:{key}", mapping={"account_id": str(account_id), "secret": secret,
                                           "permissions": ",".join(permissions),
                                           "created": str(time.time_ns() // 1_000_000)})
        pipe.sadd(f"acct:{account_id}:keys", key)
        await pipe.execute()
    return NewKey(account_id, key, secret, tuple(permissions))


async def revoke_api_key(client: Any, key: str) -> bool:
    """Delete an API key; whether it existed."""
    data = await client.hgetall(f"apikey:{key}")
    if not data:
        return False
    account_id = _text(data.get(b"account_id", data.get("account_id", "")))
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(f"apikey:{key}")
        pipe.srem(f"acct:{account_id}:keys", key)
        await pipe.execute()
    return True


async def find_api_key(client: Any, key: str) -> ApiKey | None:
    """The key's record, or None if it does not exist."""
    data = {_text(k): _text(v) for k, v in (await client.hgetall(f"apikey:{key}")).items()}
    if not data.get("secret") or not data.get("account_id"):
        return None
    return ApiKey(key, int(data["account_id"]), data["secret"],
                  frozenset(p for p in data.get("permissions", "").split(",") if p))
