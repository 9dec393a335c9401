"""The whole pipeline (validate, risk, match, settle) against the pure core run stage by stage."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from bench.flows import funding, order_flow
from pipeline.core.accounts import Accounts, AccountsSnapshot
from pipeline.core.markets import Market
from pipeline.core.messages import BalanceChanged
from pipeline.exchange import Exchange, build_exchange
from pipeline.transport.base import START, Transport
from tests.core.core_helpers import sample_markets
from tests.pipeline.oracle import StagedOracle


@pytest.fixture
def markets() -> dict[str, Market]:
    return sample_markets()


async def topic_values(exchange: Exchange, name: str) -> list[Any]:
    """Every message of every partition of a topic, partition after partition."""
    return [v for stream in exchange.app.topics[name].streams for v in await stream_values(exchange, name, stream)]


async def stream_values(exchange: Exchange, topic_name: str, stream: str) -> list[Any]:
    """Every message of one partition's stream, in order."""
    topic = exchange.app.topics[topic_name]
    values: list[Any] = []
    after = START
    while entries := await exchange.app.transport.read_range(stream, after, 2000):
        for _, entry in entries:
            values.extend(topic.batch_decoder.decode(entry))
        after = entries[-1][0]
    return values


async def run_pipeline(transport: Transport, markets: dict[str, Market], commands: list[Any]) -> Exchange:
    exchange = build_exchange(transport, markets=markets, clock=lambda: 0)  # publish clock ticks: no-ops
    await exchange.app.start()
    await exchange.app.wait_running()
    for start in range(0, len(commands), 500):
        await exchange.orders_in.send_many((getattr(c, "account_id", None), c) for c in commands[start:start + 500])
    await exchange.app.wait_caught_up(timeout=120)
    return exchange


def without_balances(events: list[Any]) -> list[Any]:
    return [e for e in events if not isinstance(e, BalanceChanged)]


def last_balances(events: list[Any]) -> dict[tuple[int, str], tuple[int, int]]:
    return {(e.account_id, e.asset): (e.available, e.locked) for e in events if isinstance(e, BalanceChanged)}


def pipeline_accounts(exchange: Exchange, markets: dict[str, Market]) -> Accounts:
    shared = exchange.accounts[0]
    return Accounts.restore(markets, AccountsSnapshot(
        0, sorted(shared.balances.partition(0).values(), key=lambda b: (b.account_id, b.asset)),
        sorted(shared.holds.partition(0).values(), key=lambda h: (h.symbol, h.order_id)),
        sorted(shared.requests.partition(0)) if shared.requests is not None else []))


async def test_pipeline_output_equals_the_pure_core(transport: Transport, markets: dict[str, Market]) -> None:
    commands: list[Any] = [*funding(markets, range(1, 9)), *order_flow(markets, 3000, seed=7)]
    exchange = await run_pipeline(transport, markets, commands)
    try:
        oracle = StagedOracle(markets).run(commands)
        assert len(oracle.orders_events) > 3000  # the flow really trades
        assert sum(type(e).__name__ == "TradeExecuted" for e in oracle.orders_events) > 300
        assert await topic_values(exchange, "orders.events") == oracle.orders_events
        assert await topic_values(exchange, "orders.rejected") == oracle.orders_rejected
        # Balance snapshots in BalanceChanged depend on how risk and settle interleaved;
        # every other account event, and the final balances, must be exactly the core's.
        account_events = await topic_values(exchange, "accounts.events")
        assert Counter(map(repr, without_balances(account_events))) == Counter(
            map(repr, without_balances(oracle.accounts_events)))
        assert len(account_events) == len(oracle.accounts_events)
        assert last_balances(account_events) == last_balances(oracle.accounts_events)
        match_state = exchange.app.runners[("match", 0)].state
        assert match_state.state_hash() == oracle.engine.state_hash()
        accounts = pipeline_accounts(exchange, markets)
        assert accounts.state_hash() == oracle.accounts.state_hash()
        accounts.validate_internal_state()
        assert accounts.total_by_asset() == oracle.accounts.total_by_asset()
    finally:
        await exchange.app.stop()


async def test_restarted_pipeline_rebuilds_books_and_balances(transport: Transport, markets: dict[str, Market]) -> None:
    commands: list[Any] = [*funding(markets, range(1, 5)), *order_flow(markets, 800, seed=3, accounts=range(1, 5))]
    first = await run_pipeline(transport, markets, commands[:500])
    await first.app.stop()
    second = await run_pipeline(transport, markets, commands[500:])
    try:
        oracle = StagedOracle(markets).run(commands)
        assert second.app.runners[("match", 0)].state.state_hash() == oracle.engine.state_hash()
        assert pipeline_accounts(second, markets).state_hash() == oracle.accounts.state_hash()
        assert await topic_values(second, "orders.events") == oracle.orders_events
    finally:
        await second.app.stop()
