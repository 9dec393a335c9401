"""A served exchange for the operations tests: the five agents and the API on uvicorn (real HTTP and
WebSockets, lifespan on), on the session's Valkey (flushed), rate limiting off."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import uvicorn

from api.app import create_app
from api.context import ApiConfig
from pipeline.exchange import Exchange, build_exchange
from pipeline.transport.redis import RedisTransport


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    await exchange.app.start()
    port = free_port()
    app = create_app(exchange, config=ApiConfig(weight_per_minute=0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        await exchange.app.wait_running()
        while not server.started:
            assert not serving.done()
            await asyncio.sleep(0.01)
        yield Served(exchange, transport, f"http://127.0.0.1:{port}", redis_flush)
    finally:
        server.should_exit = True
        await serving
        await exchange.app.stop()
        await transport.close()
