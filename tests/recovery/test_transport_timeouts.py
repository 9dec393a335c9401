"""The Redis transport's timeouts suit blocking reads: a slow reply is waited for, not turned into a failure.

redis-py's default socket timeout (5 s) made a reply that came later than that (an
overloaded server, or an XREAD blocking longer) fail the agent, which then rebuilt its
state. The transport sets the timeouts itself: see `pipeline.transport.redis.SOCKET_TIMEOUT_S`.
"""

from __future__ import annotations

import time

import pytest

from pipeline.transport.redis import SOCKET_TIMEOUT_S, RedisTransport

pytestmark = pytest.mark.redis


async def test_the_socket_timeout_outlasts_every_block_and_the_lease(redis_flush: str) -> None:
    from api.ws.hub import BLOCK_MS
    from pipeline.config import PipelineConfig
    from recovery.persister import PersisterConfig

    transport = RedisTransport(redis_flush)
    try:
        kwargs = transport.client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == SOCKET_TIMEOUT_S
        blocks_ms = [100, BLOCK_MS, PersisterConfig().block_ms]  # agents (App default), API hub, persister
        assert max(blocks_ms) < SOCKET_TIMEOUT_S * 1000
        assert PipelineConfig().lease_ttl_ms < SOCKET_TIMEOUT_S * 1000
    finally:
        await transport.close()


@pytest.mark.slow
async def test_a_reply_later_than_redis_pys_default_timeout_is_waited_for(redis_flush: str) -> None:
    transport = RedisTransport(redis_flush)
    try:
        started = time.monotonic()
        assert await transport.read({"nothing:0": "0-0"}, 10, 5_300) == []  # the server answers after 5.3 s
        assert time.monotonic() - started >= 5.2
    finally:
        await transport.close()


async def test_a_block_longer_than_the_socket_timeout_is_refused(redis_flush: str) -> None:
    transport = RedisTransport(redis_flush, socket_timeout=0.5)
    try:
        with pytest.raises(ValueError, match="socket timeout"):
            await transport.read({"nothing:0": "0-0"}, 10, 1_000)
        assert await transport.read({"nothing:0": "0-0"}, 10, 100) == []
    finally:
        await transport.close()
