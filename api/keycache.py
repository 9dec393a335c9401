"""API keys opened once and kept for a short time, so a signed request costs no Redis round trip.

Each signed request needs its API key's record (account, permissions, the secret,
which is stored encrypted): one Redis ``HGETALL`` plus an AES-GCM open. Under load that
round trip was the largest single cost of an order (docs/bench-api.md), so each API
process keeps the keys it has opened for `ttl_s` seconds. Only keys that exist are
kept (an unknown key is looked up every time, so guessing keys cannot fill the cache),
at most `max_keys` of them (the oldest go first). Concurrent requests with a key not
yet cached share one lookup.

Revocation: `revoke_api_key` (``exchange admin revoke-key``, the web UI) publishes the
key on `KEY_REVOKED_CHANNEL`, and every API process listening (`watch_revocations`, started
with the app) drops it from its cache as soon as the message arrives, typically well under
a millisecond after the delete. While a process is not subscribed (starting, or its pub/sub
connection lost), a revoked key keeps working there for at most `ttl_s` seconds
(``EXCHANGE_API_KEY_CACHE_MS``, default 1000; 0 turns the cache off), and on every
(re)subscription the whole cache is dropped, since messages may have been missed.
`forget` drops a key at once in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from api.accounts import KEY_REVOKED_CHANNEL, ApiKey, find_api_key

log = logging.getLogger(__name__)


class KeyCache:
    """API key text -> opened `ApiKey`, each kept for `ttl_s` seconds."""

    def __init__(self, client: Any, ttl_s: float, max_keys: int = 10_000) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._keys: dict[str, tuple[ApiKey, float]] = {}
        self._loading: dict[str, asyncio.Task[ApiKey | None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        """Set while revocations are received (`watch_revocations`)."""

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

    def clear(self) -> None:
        """Drop every cached key."""
        self._keys.clear()

    async def start(self) -> None:
        """Start `watch_revocations` in the background (the app's start-up hook)."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self.watch_revocations(), name="api-key-revocations")

    async def stop(self) -> None:
        """Stop listening for revocations (the app's shutdown hook)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def watch_revocations(self, retry_s: float = 0.2, max_retry_s: float = 5.0) -> None:
        """Forget each key published on `KEY_REVOKED_CHANNEL`, until cancelled; resubscribe after errors."""
        delay = retry_s
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(KEY_REVOKED_CHANNEL)
                self.clear()  # a key revoked before this subscription was not heard of
                self.subscribed.set()
                delay = retry_s
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30.0)
                    if message is not None and message.get("type") == "message":
                        data = message["data"]
                        self.forget(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("API key revocations: %s; keys expire after %.1f s until resubscribed "
                            "(retrying in %.1f s)", exc, self.ttl_s, delay)
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_retry_s)
