"""The exchange with its markets (and its accounts) over several partitions equals the single-partition pure core."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bench.flows import funding, order_flow
from pipeline.config import PipelineConfig
from pipeline.core.markets import Market
from pipeline.core.messages import FeeCharged, FeesTransferred, LegSettled, PlaceOrder, TradeExecuted
from pipeline.exchange import Exchange, build_exchange, merged_accounts, merged_engine_hash
from pipeline.transport.base import Transport
from pipeline.transport.cluster import ClusterTransport
from pipeline.transport.redis import RedisTransport
from tests.cluster.exchange_checks import (
    as_matched,
    by_market,
    difference,
    orders_events_by_market,
    settled,
    stream_values,
    ten_markets,
)
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


async def run(transport: Transport, markets: dict[str, Market], commands: list[Any], partitions: int,
              account_partitions: int = 1) -> Exchange:
    config = PipelineConfig(market_partitions=partitions, account_partitions=account_partitions)
    exchange = build_exchange(transport, config, markets=markets, clock=lambda: 0)
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


async def test_three_accounts_partitions_and_three_match_partitions_equal_one(store: Transport) -> None:
    markets = ten_markets()
    accounts = range(1, 25)
    commands: list[Any] = [*funding(markets, accounts), *order_flow(markets, 3000, seed=13, accounts=accounts)]
    exchange = await run(store, markets, commands, 3, account_partitions=3)
    try:
        for agent in ("validate", "risk", "settle"):
            assert sorted(p for (a, p) in exchange.app.runners if a == agent) == [0, 1, 2]
        assert exchange.orders_settle is not None
        oracle = StagedOracle(markets).run(await as_matched(exchange, commands))
        trades = [e for e in oracle.orders_events if type(e) is TradeExecuted]
        assert len(trades) > 200
        cross = [t for t in trades if (t.maker_account_id - t.taker_account_id) % 3]
        assert len(cross) > len(trades) // 4  # many trades are settled on two partitions

        events, expected = await orders_events_by_market(exchange), by_market(oracle.orders_events)
        assert events == expected, difference(events, expected)
        assert merged_engine_hash(exchange) == oracle.engine.state_hash()
        accounts_state = merged_accounts(exchange)
        accounts_state.validate_internal_state()
        assert accounts_state.state_hash() == oracle.accounts.state_hash()
        assert accounts_state.total_by_asset() == oracle.accounts.total_by_asset()

        # each trade reached settle once per accounts partition it touches; each leg was settled once
        settle_inputs = [v for s in exchange.orders_settle.streams
                         for v in await stream_values(exchange, "orders.settle", s)]
        settled_trades = [repr(v) for v in settle_inputs if type(v) is TradeExecuted]
        assert sorted(settled_trades) == sorted(repr(t) for t in trades + cross)
        account_events = await topic_values(exchange, "accounts.events")
        legs = sorted((e.symbol, e.trade_id, e.side) for e in account_events if type(e) is LegSettled)
        assert legs == sorted((t.symbol, t.trade_id, side) for t in trades for side in ("BUY", "SELL"))
        fees = sorted(map(repr, (e for e in account_events if type(e) is FeeCharged)))
        assert fees == sorted(map(repr, (e for e in oracle.accounts_events if type(e) is FeeCharged)))
        assert fees  # half the markets charge fees
        # the fee account got exactly the fees charged, from every partition
        transfers = [e for e in account_events if type(e) is FeesTransferred]
        assert {t.source_partition for t in transfers} == {0, 1, 2}
        assert sum(t.amount for t in transfers) == sum(e.amount for e in account_events if type(e) is FeeCharged)
        assert accounts_state.balance(0, "USD") == oracle.accounts.balance(0, "USD") != (0, 0)
    finally:
        await exchange.app.stop()


async def test_a_market_halt_reaches_every_accounts_partition_and_match_once(redis_flush: str) -> None:
    """`exchange admin market` sends the status to each accounts partition: every validate rejects orders
    for the halted market before holding funds, and match gets the change once."""
    from api.admin import market_command, set_market_status

    markets = ten_markets()
    transport = RedisTransport(redis_flush)
    exchange = build_exchange(transport, PipelineConfig(account_partitions=3), markets=markets, clock=lambda: 0)
    await exchange.app.start()
    try:
        await exchange.app.wait_running()

        async def send(key: Any, value: Any) -> None:
            await exchange.orders_in.send(value, key=key)

        await set_market_status(transport.client, send, market_command(markets, "X1USD", "halted"), 3)
        orders = [PlaceOrder(ts=10 + a, symbol="X1USD", order_id=a, client_order_id=f"h{a}", account_id=a,
                             side="BUY", price_ticks=10, qty_lots=1) for a in (1, 2, 3)]
        await exchange.orders_in.send_many((o.account_id, o) for o in orders)
        await settled(exchange)
        rejected = await topic_values(exchange, "orders.rejected")
        assert sorted((r.account_id, r.reason) for r in rejected) == [(a, "MARKET_HALTED") for a in (1, 2, 3)]
        assert not [e for e in await topic_values(exchange, "accounts.events") if type(e).__name__ == "HoldTaken"]
        changes = [e for e in await topic_values(exchange, "orders.events")
                   if type(e).__name__ == "MarketStatusChanged"]
        assert [(c.symbol, c.status) for c in changes] == [("X1USD", "HALT")]
        assert await transport.client.get("market:status:X1USD") == b"HALT"
    finally:
        await exchange.app.stop()
        await transport.close()
