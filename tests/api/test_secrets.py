"""API secrets at rest: sealed with the server key, plain legacy entries migrated, wrong key refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from api.accounts import create_account, find_api_key, seal_plain_secrets
from api.secretbox import KEY_ENV, SecretBox, SecretKeyError, load_or_create_key, new_key_text
from tests.api.conftest import Api, error


async def test_secret_is_stored_sealed_and_still_signs(api: Api) -> None:
    key = await api.account("alice")
    stored = (await api.redis.hget(f"apikey:{key.api_key}", "secret")).decode()
    assert stored.startswith("v1:") and key.secret not in stored
    r = await api.signed("GET", "/api/v3/account", key)
    assert r.status_code == 200, r.text
    # the sealed value is bound to its API key: copied to another key's record it does not open
    other = await api.account("bob")
    await api.redis.hset(f"apikey:{other.api_key}", "secret", stored)
    assert error(await api.signed("GET", "/api/v3/account", other)) == (401, -2015)
    assert error(await api.signed("GET", "/api/v3/account", other, secret=key.secret)) == (401, -2015)


async def test_plain_secrets_are_migrated(api: Api) -> None:
    old = await api.account("old")
    older = await api.account("older")
    for key in (old, older):  # as written before encryption
        await api.redis.hset(f"apikey:{key.api_key}", "secret", key.secret)
    # read on use: still signs, then sealed in place
    assert (await api.signed("GET", "/api/v3/account", old)).status_code == 200
    assert (await api.redis.hget(f"apikey:{old.api_key}", "secret")).decode().startswith("v1:")
    # the start-up sweep seals the rest
    assert await seal_plain_secrets(api.redis) == 1
    assert await seal_plain_secrets(api.redis) == 0
    found = await find_api_key(api.redis, older.api_key)
    assert found is not None and found.secret == older.secret
    assert (await api.signed("GET", "/api/v3/account", older)).status_code == 200


async def test_another_server_key_opens_nothing(api: Api) -> None:
    key = await create_account(api.redis, "carol")
    stranger = SecretBox.from_env({KEY_ENV: new_key_text()})
    assert await find_api_key(api.redis, key.api_key, stranger) is None
    with pytest.raises(SecretKeyError):
        stranger.open((await api.redis.hget(f"apikey:{key.api_key}", "secret")).decode(), key.api_key)


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "api-secret.key"
    first = load_or_create_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(first) == 32
    assert load_or_create_key(path) == first
    box = SecretBox.from_env({"EXCHANGE_DATA_DIR": str(tmp_path / "var")})
    assert box.open(box.seal("s3cret", "k"), "k") == "s3cret" and "s3cret" not in repr(box)
    for bad in ("not base64!", "c2hvcnQ="):
        with pytest.raises(SecretKeyError):
            SecretBox.from_env({KEY_ENV: bad})
