"""The API key cache (api.keycache): one lookup for concurrent requests, expiry, revocation, bounds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from api.accounts import create_account, revoke_api_key
from api.keycache import KeyCache
from tests.api.conftest import eventually


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushall()
    try:
        yield redis
    finally:
        await redis.aclose()


class CountingClient:
    """A real client that counts HGETALL calls (the key lookups)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.lookups = 0

    async def hgetall(self, name: str) -> Any:
        self.lookups += 1
        return await self.client.hgetall(name)


async def test_concurrent_requests_share_one_lookup_and_the_key_is_kept(client: Any) -> None:
    key = await create_account(client, "alice")
    counting = CountingClient(client)
    cache = KeyCache(counting, ttl_s=60)
    found = await asyncio.gather(*(cache.get(key.api_key) for _ in range(20)))
    assert {k.account_id if k else None for k in found} == {key.account_id}
    assert found[0] is not None and found[0].secret == key.secret
    assert counting.lookups == 1
    assert await cache.get(key.api_key) is found[0]
    assert counting.lookups == 1


async def test_unknown_keys_are_not_kept(client: Any) -> None:
    counting = CountingClient(client)
    cache = KeyCache(counting, ttl_s=60)
    assert await cache.get("a" * 64) is None
    assert await cache.get("a" * 64) is None
    assert counting.lookups == 2


async def test_a_revoked_key_is_refused_after_the_ttl_or_at_once_when_forgotten(client: Any) -> None:
    first, second = await create_account(client, "a"), await create_account(client, "b")
    cache = KeyCache(client, ttl_s=0.2)
    assert await cache.get(first.api_key) is not None
    assert await cache.get(second.api_key) is not None
    assert await revoke_api_key(client, first.api_key)
    assert await revoke_api_key(client, second.api_key)

    async def refused() -> bool:
        return await cache.get(first.api_key) is None
    await eventually(refused, timeout=5)
    cache.forget(second.api_key)
    assert await cache.get(second.api_key) is None


async def test_no_cache_with_ttl_zero_and_the_oldest_key_goes_first(client: Any) -> None:
    keys = [await create_account(client, f"u{i}") for i in range(3)]
    counting = CountingClient(client)
    off = KeyCache(counting, ttl_s=0)
    await off.get(keys[0].api_key)
    await off.get(keys[0].api_key)
    assert counting.lookups == 2
    counting.lookups = 0
    small = KeyCache(counting, ttl_s=60, max_keys=2)
    for key in keys:
        await small.get(key.api_key)
    await small.get(keys[2].api_key)
    await small.get(keys[1].api_key)
    assert counting.lookups == 3  # both newest still kept
    await small.get(keys[0].api_key)
    assert counting.lookups == 4  # the oldest had gone


class DownClient:
    """A Redis that cannot be reached."""

    async def hgetall(self, name: str) -> Any:
        raise ConnectionError("redis is down")


async def test_a_failed_lookup_reaches_every_waiter_and_is_retried() -> None:
    cache = KeyCache(DownClient(), ttl_s=60)
    results = await asyncio.gather(*(cache.get("a" * 64) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    with pytest.raises(ConnectionError):
        await cache.get("a" * 64)  # not remembered: the next request tries again


async def test_a_revocation_reaches_a_listening_cache_at_once(client: Any) -> None:
    """With `watch_revocations` running, a revoked key is refused long before the cache's TTL."""
    first, second = await create_account(client, "a"), await create_account(client, "b")
    cache = KeyCache(client, ttl_s=3600)
    await cache.start()
    try:
        await asyncio.wait_for(cache.subscribed.wait(), 10)
        assert await cache.get(first.api_key) is not None
        assert await cache.get(second.api_key) is not None
        assert await revoke_api_key(client, first.api_key)

        async def refused() -> bool:
            return await cache.get(first.api_key) is None
        await eventually(refused, timeout=2)  # not the hour the cache would keep it
        assert await cache.get(second.api_key) is not None
    finally:
        await cache.stop()
    assert not cache.subscribed.is_set()


async def test_a_cache_that_resubscribes_drops_what_it_kept(client: Any) -> None:
    """Revocations published while the cache was not listening are lost: it starts afresh."""
    key = await create_account(client, "a")
    cache = KeyCache(client, ttl_s=3600)
    assert await cache.get(key.api_key) is not None
    assert await revoke_api_key(client, key.api_key)  # nobody listening yet
    assert await cache.get(key.api_key) is not None  # still cached: the TTL case
    await cache.start()
    try:
        await asyncio.wait_for(cache.subscribed.wait(), 10)
        assert await cache.get(key.api_key) is None
    finally:
        await cache.stop()
