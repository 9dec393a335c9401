"""The exchange with its markets over several match partitions equals the single-partition pure core."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bench.flows import funding, order_flow
from pipeline.config import PipelineConfig
from pipeline.core.markets import Market
from pipeline.exchange import Exchange, build_exchange, merged_engine_hash
from pipeline.transport.base import Transport
from pipeline.transport.cluster import ClusterTransport
from pipeline.transport.redis import RedisTransport
from tests.cluster.exchange_checks import by_market, difference, orders_events_by_market, settled, ten_markets
from tests.pipeline.oracle import StagedOracle
from tests.pipeline.test_exchange_e2e import pipeline_accounts, topic_values


@pytest.fixture(params=["redis", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    """A flushed single Valkey, then the flushed 3-master cluster."""
    if request.param == "redis":
        opened: Transport = RedisTransport(request.getfixturevalue("redis_flush"))
    else:
        opened = ClusterTransport(request.getfixturevalue("cluster_url"))
    yield opened
    await opened.close()


async def run(transport: Transport, markets: dict[str, Market], commands: list[Any], partitions: int) -> Exchange:
    exchange = build_exchange(transport, PipelineConfig(market_partitions=partitions), markets=markets,
                              clock=lambda: 0)
    await exchange.app.start()
    await exchange.app.wait_running()
    for start in range(0, len(commands), 500):
        await exchange.orders_in.send_many((getattr(c, "account_id", None), c) for c in commands[start:start + 500])
    await settled(exchange)
    return exchange


async def test_three_match_partitions_equal_one(store: Transport) -> None:
    markets = ten_markets()
    commands: list[Any] = [*funding(markets, range(1, 13)), *order_flow(markets, 2500, seed=11, accounts=range(1, 13))]
    exchange = await run(store, markets, commands, 3)
    try:
        assert {exchange.orders_accepted.partition_for(s) for s in markets} == {0, 1, 2}
        assert sorted(p for (a, p) in exchange.app.runners if a == "match") == [0, 1, 2]
        oracle = StagedOracle(markets).run(commands)
        assert sum(type(e).__name__ == "TradeExecuted" for e in oracle.orders_events) > 200
        events, expected = await orders_events_by_market(exchange), by_market(oracle.orders_events)
        assert events == expected, difference(events, expected)
        assert merged_engine_hash(exchange) == oracle.engine.state_hash()
        accounts = pipeline_accounts(exchange, markets)
        assert accounts.state_hash() == oracle.accounts.state_hash()
        assert len(await topic_values(exchange, "accounts.events")) == len(oracle.accounts_events)
    finally:
        await exchange.app.stop()
