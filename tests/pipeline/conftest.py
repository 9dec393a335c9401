"""Fixtures for the runtime tests: the same tests run on the memory and the Redis transport."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from pipeline.transport.base import Transport
from pipeline.transport.memory import MemoryTransport
from pipeline.transport.redis import RedisTransport


@pytest.fixture(params=["memory", "redis"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    """A fresh, empty transport of each kind."""
    if request.param == "memory":
        yield MemoryTransport()
        return
    url = os.environ.get("TEST_REDIS_URL") or request.getfixturevalue("redis_url")
    redis_transport = RedisTransport(url)
    await redis_transport.client.flushall()
    yield redis_transport
    await redis_transport.close()
