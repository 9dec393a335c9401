"""One client WebSocket: a bounded send queue drained by its own task, and a receive loop.

Producers (the hub, request handlers) only `push`, never await the socket: a client
whose queue stays over its size for the grace period (a burst it cannot drain), or
grows to ten times it, is dropped with close code 1008 "slow consumer", so one slow
reader never slows the reader that feeds everyone else. `finish` closes after what
is queued has been sent (e.g. after `listenKeyExpired`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

NORMAL_CLOSURE: Final = 1000
POLICY_VIOLATION: Final = 1008
SLOW_CONSUMER: Final = "slow consumer"
HARD_LIMIT_FACTOR: Final = 10
"""A connection over `queue_size` x this is dropped at once, grace or not (bounds the memory)."""
_json = msgspec.json.Encoder()


class Connection:
    """A connected client and what it is subscribed to."""

    def __init__(self, socket: WebSocket[Any, Any, Any], queue_size: int, combined: bool = False, *,
                 grace_s: float = 0.0) -> None:
        self.socket = socket
        self.combined = combined
        self.streams: set[str] = set()
        """Market stream names subscribed to."""
        self.listen_keys: dict[str, int] = {}
        """User streams subscribed to: listenKey -> account id."""
        self.close_reason: str | None = None
        self.close_code = POLICY_VIOLATION
        self._hard_limit = queue_size if grace_s <= 0 else queue_size * HARD_LIMIT_FACTOR
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(self._hard_limit + 1)
        self._queue_size = queue_size
        self._grace_s = grace_s
        self._over_since: float | None = None
        """When the queue was last seen going over `queue_size` (None: not over)."""
        self._sender: asyncio.Task[None] | None = None

    def push(self, text: bytes) -> None:
        """Queue one text frame; drops the client if it has fallen too far behind."""
        if self.close_reason is not None:
            return
        size = self._queue.qsize()
        if size < self._queue_size:
            self._over_since = None
        else:
            now = time.monotonic()
            if self._over_since is None:
                self._over_since = now
            if size >= self._hard_limit or now - self._over_since >= self._grace_s:
                self.drop(SLOW_CONSUMER)
                return
        self._queue.put_nowait(text)

    def push_json(self, value: Any) -> None:
        self.push(_json.encode(value))

    def drop(self, reason: str) -> None:
        """Close the connection with 1008 and `reason` now, dropping what is queued (from any task)."""
        if self.close_reason is None:
            self.close_reason = reason
            if self._sender is not None:
                self._sender.cancel()

    def finish(self, reason: str, code: int = NORMAL_CLOSURE) -> None:
        """Close the connection with `code` and `reason` once everything queued so far is sent."""
        if self.close_reason is None:
            self.close_reason = reason
            self.close_code = code
            self._queue.put_nowait(None)  # the queue keeps one place free for this

    async def _send_loop(self) -> None:
        while True:
            text = await self._queue.get()
            if text is None:
                return
            await self.socket.send_text(text)

    async def _receive_loop(self, on_text: Callable[[str], Awaitable[None]]) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await on_text(await self.socket.receive_text())

    async def run(self, on_text: Callable[[str], Awaitable[None]]) -> None:
        """Serve until the client leaves, a send fails or the client is dropped; then close."""
        self._sender = asyncio.create_task(self._send_loop())
        if self.close_reason is not None and self.close_code == POLICY_VIOLATION:
            self._sender.cancel()
        receiver = asyncio.create_task(self._receive_loop(on_text))
        tasks = {self._sender, receiver}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.close_reason is not None:
            with contextlib.suppress(Exception):
                await self.socket.close(code=self.close_code, reason=self.close_reason)
