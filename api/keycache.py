"""API keys opened once and kept for a short time, so a signed request costs no Redis round trip.

Each signed request needs its API key's record (account, permissions, the secret,
which is stored encrypted): one Redis ``HGETALL`` plus an AES-GCM open. Under load that
round trip was the largest single cost of an order (docs/bench-api.md), so each API
process keeps the keys it has opened for `ttl_s` seconds. Only keys that exist are
kept (an unknown key is looked up every time, so guessing keys cannot fill the cache),
at most `max_keys` of them (the oldest go first). Concurrent requests with a key not
yet cached share one lookup.

The price: a key revoked in Redis (``exchange admin revoke-key``) keeps working in an
API process for at most `ttl_s` seconds (``EXCHANGE_API_KEY_CACHE_MS``, default 1000;
0 turns the cache off); `forget` drops it at once in this process.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from api.accounts import ApiKey, find_api_key


class KeyCache:
    """API key text -> opened `ApiKey`, each kept for `ttl_s` seconds."""

    def __init__(self, client: Any, ttl_s: float, max_keys: int = 10_000) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._keys: dict[str, tuple[ApiKey, float]] = {}
        self._loading: dict[str, asyncio.Task[ApiKey | None]] = {}

    async def get(self, key_text: str) -> ApiKey | None:
        """The key's record (from the cache while fresh), or None if it does not exist."""
        hit = self._keys.get(key_text)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        task = self._loading.get(key_text)
        if task is None:
            task = self._loading[key_text] = asyncio.create_task(self._load(key_text))
            task.add_done_callback(lambda done: self._loaded(key_text, done))
        return await asyncio.shield(task)  # a request that gives up does not cancel the others' lookup

    def _loaded(self, key_text: str, task: asyncio.Task[ApiKey | None]) -> None:
        self._loading.pop(key_text, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have given up (it reached them otherwise)

    async def _load(self, key_text: str) -> ApiKey | None:
        api_key = await find_api_key(self.client, key_text)
        now = time.monotonic()
        if api_key is None or self.ttl_s <= 0:
            self._keys.pop(key_text, None)
            return api_key
        if len(self._keys) >= self.max_keys:
            self._keys.pop(next(iter(self._keys)))
        self._keys.pop(key_text, None)  # re-inserted last: the oldest entry stays first
        self._keys[key_text] = (api_key, now + self.ttl_s)
        return api_key

    def forget(self, key_text: str) -> None:
        """Drop a key (e.g. just revoked) so its next use looks it up again."""
        self._keys.pop(key_text, None)
