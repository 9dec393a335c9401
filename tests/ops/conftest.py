"""A served exchange for the operations tests: the five agents and the API on uvicorn (real HTTP and
WebSockets, lifespan on), on the session's Valkey (flushed), rate limiting off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from api.app import create_app
from api.context import ApiConfig
from pipeline.exchange import Exchange, build_exchange
from pipeline.layout import check_layout
from pipeline.transport.redis import RedisTransport
from tests.serving import uvicorn_serving


@dataclass
class Served:
    exchange: Exchange
    transport: RedisTransport
    base_url: str
    redis_url: str


@pytest.fixture
async def served(redis_flush: str) -> AsyncIterator[Served]:
    transport = RedisTransport(redis_flush)
    exchange = build_exchange(transport)
    exchange.app.rebalance = True  # as `exchange worker` runs it: announced in the workers set
    await check_layout(exchange)  # as every exchange process does before it starts (records the layout)
    await exchange.app.start()
    try:
        async with uvicorn_serving(create_app(exchange, config=ApiConfig(weight_per_minute=0))) as port:
            await exchange.app.wait_running()
            yield Served(exchange, transport, f"http://127.0.0.1:{port}", redis_flush)
    finally:
        await exchange.app.stop()
        await transport.close()
