"""Fixtures of the persister tests: a pipeline on Redis, orders, and a database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from bench.flows import funding, order_flow
from pipeline.core.markets import Market
from pipeline.exchange import Exchange, build_exchange
from pipeline.transport.redis import RedisTransport
from tests.core.core_helpers import sample_markets


@pytest.fixture
def markets() -> dict[str, Market]:
    return sample_markets()


def commands(markets: dict[str, Market], n: int, seed: int = 7) -> list[Any]:
    """Funding for accounts 1..8, then `n` order commands."""
    return [*funding(markets, range(1, 9)), *order_flow(markets, n, seed=seed)]


async def send(exchange: Exchange, batch: list[Any]) -> None:
    for start in range(0, len(batch), 500):
        await exchange.orders_in.send_many((getattr(c, "account_id", None), c) for c in batch[start:start + 500])


@pytest.fixture
async def exchange(redis_flush: str, markets: dict[str, Market]) -> AsyncIterator[Exchange]:
    """The exchange pipeline running on an empty Redis."""
    transport = RedisTransport(redis_flush)
    built = build_exchange(transport, markets=markets)
    await built.app.start()
    await built.app.wait_running()
    yield built
    await built.app.stop()
    await transport.close()


@pytest.fixture
async def db(database_flush: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_flush)
    yield conn
    await conn.close()
