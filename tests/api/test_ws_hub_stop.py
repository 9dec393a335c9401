"""`Hub.stop` returns promptly, even when its reader's cancelled XREAD comes back as a connection error."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from api.app import create_app
from api.ws.hub import Hub
from pipeline.exchange import build_exchange
from pipeline.transport.base import Entry
from pipeline.transport.redis import RedisTransport

pytestmark = pytest.mark.redis


class CancelAsConnectionError(RedisTransport):
    """The real transport, except that a cancelled read raises ConnectionError (as redis-py can)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads = 0

    async def read(self, positions: dict[str, str], count: int, block_ms: int) -> list[tuple[str, list[Entry]]]:
        self.reads += 1
        try:
            return await super().read(positions, count, block_ms)
        except asyncio.CancelledError:
            raise ConnectionError("connection reset while the read was cancelled") from None


async def _hub(transport: RedisTransport) -> Hub:
    app = create_app(build_exchange(transport))
    hub: Hub = app.state.hub
    return hub


async def _reading(transport: Any) -> None:
    deadline = time.monotonic() + 5
    while transport.reads == 0:
        assert time.monotonic() < deadline, "the hub never started reading"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # inside the blocking XREAD (it blocks for a second)


async def _stops_within(hub: Hub, seconds: float) -> None:
    """Fail (instead of hanging with it) if `hub.stop()` has not returned after `seconds`.

    Not `wait_for`: cancelling a stop stuck awaiting a task that swallowed its cancellation
    would hang as well.
    """
    stopping = asyncio.create_task(hub.stop())
    done, _ = await asyncio.wait({stopping}, timeout=seconds)
    assert stopping in done, f"Hub.stop() still running after {seconds} s"
    stopping.result()


async def test_stop_ends_a_reader_whose_cancel_surfaces_as_a_connection_error(redis_flush: str) -> None:
    transport = CancelAsConnectionError(redis_flush)
    hub = await _hub(transport)
    hub.block_ms = 10_000  # the XREAD would block for 10 s
    await hub.start()
    tasks = [hub._task, hub._timer]
    try:
        await _reading(transport)
        started = time.monotonic()
        await _stops_within(hub, 4)
        assert time.monotonic() - started < 2
        assert all(t is not None and t.done() for t in tasks)
    finally:
        await transport.close()


async def test_stop_after_the_server_went_away_returns_at_once(redis_flush: str) -> None:
    """Start-up failed (here: the client closed under the hub): stop neither hangs nor raises."""
    transport = CancelAsConnectionError(redis_flush)
    hub = await _hub(transport)
    await hub.start()
    tasks = [hub._task, hub._timer]
    await _reading(transport)
    await transport.close()
    await _stops_within(hub, 4)
    assert all(t is not None and t.done() for t in tasks)
