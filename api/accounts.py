"""Accounts and API keys, kept in Redis (hashes), owned by the API and the admin tools.

Keys:

- ``acct:seq``: the last account id given (INCR).
- ``acct:{id}``: hash ``name``, ``role`` (``user`` or ``admin``), ``created``.
- ``acct:{id}:keys``: set of the account's API keys.
- ``apikey:{key}``: hash ``account_id``, ``secret``, ``permissions`` (comma list of
  ``read``, ``trade``, ``admin``), ``created``.

Secrets: Binance's HMAC-SHA256 signatures need the secret itself on the server, so
it cannot be stored as a one-way hash. It is stored encrypted with the server key
(`api.secretbox`: AES-GCM, the API key as associated data); a record written before
encryption (a plain secret) still works and is sealed the first time it is read, or
by `seal_plain_secrets` (run at the API's start-up). Secrets are never logged and
never returned after creation.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import time
from typing import Any, Final

import msgspec

from api.secretbox import KEY_ENV, SecretBox, SecretKeyError
from api.store import is_cluster

log = logging.getLogger(__name__)

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


@functools.lru_cache(maxsize=4)
def _box_for(key_text: str, data_dir: str) -> SecretBox:
    return SecretBox.from_env({KEY_ENV: key_text, "EXCHANGE_DATA_DIR": data_dir})


def default_box() -> SecretBox:
    """The server key's box as this process's environment names it (`SecretBox.from_env`)."""
    return _box_for(os.environ.get(KEY_ENV, ""), os.environ.get("EXCHANGE_DATA_DIR", ""))


async def create_account(client: Any, name: str, *, admin: bool = False, box: SecretBox | None = None) -> NewKey:
    """A new account and its first API key (read + trade, plus admin for an admin account)."""
    account_id = int(await client.incr("acct:seq"))
    await client.hset(f"acct:{account_id}", mapping={"name": name, "role": "admin" if admin else "user",
                                                      "created": str(time.time_ns() // 1_000_000)})
    permissions = (*USER_PERMISSIONS, "admin") if admin else USER_PERMISSIONS
    return await create_api_key(client, account_id, permissions, box=box)


async def account_exists(client: Any, account_id: int) -> bool:
    return bool(await client.exists(f"acct:{account_id}"))


async def create_api_key(client: Any, account_id: int, permissions: tuple[str, ...] = USER_PERMISSIONS, *,
                         box: SecretBox | None = None) -> NewKey:
    """A new API key and secret for an existing account."""
    unknown = set(permissions) - set(PERMISSIONS)
    if unknown:
        raise ValueError(f"unknown permissions {sorted(unknown)}")
    if not await account_exists(client, account_id):
        raise LookupError(f"no account {account_id}")
    key = secrets.token_hex(32)
    secret = secrets.token_hex(32)
    sealed = (box or default_box()).seal(secret, key)
    record = {"account_id": str(account_id), "secret": sealed, "permissions": ",".join(permissions),
              "created": str(time.time_ns() // 1_000_000)}
    if is_cluster(client):
        # the two keys are in different slots: one after the other, the list entry first, so a crash
        # in between leaves a listed key with no record (unknown to `find_api_key`: it never works),
        # never a working key nobody can list (a cluster pipeline gives no order between nodes)
        await client.sadd(f"acct:{account_id}:keys", key)
        await client.hset(f"apikey:{key}", mapping=record)
    else:
        async with client.pipeline(transaction=True) as pipe:
            pipe.sadd(f"acct:{account_id}:keys", key)
            pipe.hset(f"apikey:{key}", mapping=record)
            await pipe.execute()
    return NewKey(account_id, key, secret, tuple(permissions))


KEY_REVOKED_CHANNEL: Final = "apikeys:revoked"
"""Pub/sub channel of revoked API keys (the key's text): API processes drop them from their key cache."""


async def revoke_api_key(client: Any, key: str) -> bool:
    """Delete an API key, then tell every API process (`KEY_REVOKED_CHANNEL`); whether it existed."""
    data = await client.hgetall(f"apikey:{key}")
    if not data:
        return False
    account_id = _text(data.get(b"account_id", data.get("account_id", "")))
    if is_cluster(client):
        # two slots: the key record first, so a crash in between leaves at worst a dangling entry
        # in the account's key list, never a live revoked key
        await client.delete(f"apikey:{key}")
        await client.srem(f"acct:{account_id}:keys", key)
    else:
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(f"apikey:{key}")
            pipe.srem(f"acct:{account_id}:keys", key)
            await pipe.execute()
    await client.publish(KEY_REVOKED_CHANNEL, key)  # after the delete: a cache reloading now finds nothing
    return True


async def find_api_key(client: Any, key: str, box: SecretBox | None = None) -> ApiKey | None:
    """The key's record (secret opened), or None if it does not exist."""
    data = {_text(k): _text(v) for k, v in (await client.hgetall(f"apikey:{key}")).items()}
    stored = data.get("secret")
    if not stored or not data.get("account_id"):
        return None
    box = box or default_box()
    try:
        secret = box.open(stored, key)
    except SecretKeyError:
        log.error("API key %s...: its stored secret does not open with this server key (another "
                  "EXCHANGE_SECRET_KEY or data dir?); the key is refused", key[:8])
        return None
    if not box.is_sealed(stored):  # written before encryption: seal it now (unless it changed meanwhile)
        await _seal_if_unchanged(client, key, stored, box.seal(secret, key))
    return ApiKey(key, int(data["account_id"]), secret,
                  frozenset(p for p in data.get("permissions", "").split(",") if p))


_SEAL_SCRIPT: Final = """
if redis.call('HGET', KEYS[1], 'secret') == ARGV[1] then
  return redis.call('HSET', KEYS[1], 'secret', ARGV[2])
end
return -1
"""


async def _seal_if_unchanged(client: Any, key: str, plain: str, sealed: str) -> None:
    await client.eval(_SEAL_SCRIPT, 1, f"apikey:{key}", plain, sealed)


async def seal_plain_secrets(client: Any, box: SecretBox | None = None) -> int:
    """Encrypt every API secret still stored in plain text; how many were sealed."""
    box = box or default_box()
    sealed = 0
    async for raw_key in client.scan_iter(match="apikey:*", count=500):
        name = _text(raw_key)
        stored = await client.hget(name, "secret")
        if stored is None:
            continue
        text = _text(stored)
        if not box.is_sealed(text):
            api_key = name[len("apikey:"):]
            await _seal_if_unchanged(client, api_key, text, box.seal(text, api_key))
            sealed += 1
    return sealed
