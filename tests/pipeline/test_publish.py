"""publish in the whole pipeline, on both transports: market data and read models equal the engine's."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

import msgspec
import pytest

from bench.flows import funding, order_flow
from pipeline.agents.publish.candles import DAY, INTERVALS, window_start
from pipeline.agents.publish.messages import (
    AccountUpdate,
    BookTicker,
    Candle,
    DepthUpdate,
    OrderUpdate,
    Ticker,
    Trade,
)
from pipeline.agents.publish.readmodel import CANDLES_KEPT, bbo_key, candles_key, depth_id_key, depth_key, ticker_key
from pipeline.core.markets import Market
from pipeline.core.messages import Command, FeeCharged, TradeExecuted
from pipeline.deadletter import DLQ_STREAM
from pipeline.exchange import Exchange
from pipeline.transport.base import Transport
from tests.core.core_helpers import sample_markets
from tests.pipeline.test_exchange_e2e import run_pipeline, topic_values

STEP = 250_000_000  # 250 ms between commands: the flow spans several minutes of candles
START_TS = 1_700_000_000 * 10**9 + 123


@pytest.fixture
def markets() -> dict[str, Market]:
    return sample_markets()


def timed(commands: list[Command]) -> list[Command]:
    """The commands with event times `STEP` apart (a CancelReplace's new order too)."""
    out: list[Command] = []
    for i, command in enumerate(commands):
        ts = START_TS + i * STEP
        if hasattr(command, "new_order"):
            command = msgspec.structs.replace(command, new_order=msgspec.structs.replace(command.new_order, ts=ts))
        out.append(msgspec.structs.replace(command, ts=ts))
    return out


def flow(markets: dict[str, Market], n: int, seed: int) -> list[Command]:
    return timed([*funding(markets, range(1, 9)), *order_flow(markets, n, seed=seed)])


async def check_depth(exchange: Exchange, transport: Transport) -> None:
    """Read model and diffs against the engine's books, level by level."""
    engine = exchange.app.runners[("match", 0)].state
    updates: list[DepthUpdate] = await topic_values(exchange, "market.depth")
    by_symbol: dict[str, list[DepthUpdate]] = defaultdict(list)
    for update in updates:
        by_symbol[update.symbol].append(update)
    for symbol in exchange.markets:
        book = engine.book(symbol)
        bids = {price: level.total for price, level in book.bids.items()}
        asks = {price: level.total for price, level in book.asks.items()}
        stored_bids = {int(p): int(q) for p, q in (await transport.hgetall(depth_key(symbol, True))).items()}
        stored_asks = {int(p): int(q) for p, q in (await transport.hgetall(depth_key(symbol, False))).items()}
        assert (stored_bids, stored_asks) == (bids, asks)
        replayed: dict[bool, dict[int, int]] = {True: {}, False: {}}
        last = 0
        for update in by_symbol[symbol]:
            assert update.first_update_id == last + 1
            assert update.last_update_id == last + len(update.bids) + len(update.asks)
            last = update.last_update_id
            for is_bid, levels in ((True, update.bids), (False, update.asks)):
                for price, lots in levels:
                    if lots:
                        replayed[is_bid][price] = lots
                    else:
                        replayed[is_bid].pop(price, None)
        assert (replayed[True], replayed[False]) == (bids, asks)
        assert int(await transport.get(depth_id_key(symbol)) or b"0") == last
        tops = [t for t in await topic_values(exchange, "market.bbo") if t.symbol == symbol]
        best = (book.best_bid() or 0, bids.get(book.best_bid() or 0, 0),
                book.best_ask() or 0, asks.get(book.best_ask() or 0, 0))
        if tops:
            top: BookTicker = tops[-1]
            assert (top.bid_price_ticks, top.bid_qty_lots, top.ask_price_ticks, top.ask_qty_lots) == best
            stored = await transport.hgetall(bbo_key(symbol))
            assert int(stored[b"bid_price_ticks"]) == best[0] and int(stored[b"ask_qty_lots"]) == best[3]


def expected_candles(trades: list[TradeExecuted], interval: str) -> dict[tuple[str, int], tuple[int, ...]]:
    """(symbol, open ts) -> (open, high, low, close, volume, quote volume, count, first id, last id)."""
    length = INTERVALS[interval]
    out: dict[tuple[str, int], tuple[int, ...]] = {}
    for t in trades:
        key = (t.symbol, window_start(t.ts, length))
        o, h, lo, _, v, q, n, first, _ = out.get(key, (t.price_ticks, t.price_ticks, t.price_ticks, 0, 0, 0, 0,
                                                         t.trade_id, 0))
        out[key] = (o, max(h, t.price_ticks), min(lo, t.price_ticks), t.price_ticks, v + t.qty_lots,
                    q + t.quote_amount, n + 1, first, t.trade_id)
    return out


def candle_tuple(c: Candle) -> tuple[int, ...]:
    return (c.open_ticks, c.high_ticks, c.low_ticks, c.close_ticks, c.volume_lots, c.quote_volume, c.trades,
            c.first_trade_id, c.last_trade_id)


async def check_market_data(exchange: Exchange, transport: Transport) -> None:
    executed = [e for e in await topic_values(exchange, "orders.events") if type(e) is TradeExecuted]
    assert len(executed) > 300
    trades: list[Trade] = await topic_values(exchange, "market.trades")
    assert [(t.symbol, t.trade_id, t.price_ticks, t.qty_lots, t.quote_amount, t.ts) for t in trades] == [
        (e.symbol, e.trade_id, e.price_ticks, e.qty_lots, e.quote_amount, e.ts) for e in executed]
    assert all(t.buyer_is_maker == (e.taker_side == "SELL") for t, e in zip(trades, executed, strict=True))
    assert all((t.buyer_order_id if e.taker_side == "BUY" else t.seller_order_id) == e.taker_order_id
               for t, e in zip(trades, executed, strict=True))

    candles: list[Candle] = await topic_values(exchange, "market.candles")
    final: dict[tuple[str, str, int], Candle] = {}
    for candle in candles:
        final[(candle.symbol, candle.interval, candle.open_ts)] = candle
    for interval in INTERVALS:
        expected = expected_candles(executed, interval)
        got = {(s, t): candle_tuple(c) for (s, i, t), c in final.items() if i == interval}
        assert got == expected, interval
        for symbol in exchange.markets:
            lots = sum(e.qty_lots for e in executed if e.symbol == symbol)
            assert sum(v[4] for (s, _), v in got.items() if s == symbol) == lots
            stored = [msgspec.json.decode(m, type=Candle)
                      for m, _ in await transport.zrange(candles_key(symbol, interval))]
            newest = max((t for (s, t) in expected if s == symbol), default=None)
            kept = {(symbol, t): v for (s, t), v in expected.items()
                    if s == symbol and newest is not None and t > newest - CANDLES_KEPT * INTERVALS[interval]}
            assert {(c.symbol, c.open_ts): candle_tuple(c) for c in stored} == kept
            assert all(c.closed for c in stored[:-1]) and not any(c.closed for c in stored[-1:])

    tickers: list[Ticker] = await topic_values(exchange, "market.tickers")
    for symbol in exchange.markets:
        mine = [e for e in executed if e.symbol == symbol]
        if not mine:
            continue
        last_minute = window_start(mine[-1].ts, INTERVALS["1m"])
        window = [e for e in mine if window_start(e.ts, INTERVALS["1m"]) > last_minute - DAY]
        ticker = [t for t in tickers if t.symbol == symbol][-1]
        assert (ticker.open_ticks, ticker.high_ticks, ticker.low_ticks, ticker.last_ticks, ticker.volume_lots,
                ticker.quote_volume, ticker.trades, ticker.first_trade_id, ticker.last_trade_id,
                ticker.last_qty_lots) == (
            window[0].price_ticks, max(e.price_ticks for e in window), min(e.price_ticks for e in window),
            window[-1].price_ticks, sum(e.qty_lots for e in window), sum(e.quote_amount for e in window),
            len(window), window[0].trade_id, window[-1].trade_id, window[-1].qty_lots)
        fields = await transport.hgetall(ticker_key(symbol))
        assert int(fields[b"volume_lots"]) == ticker.volume_lots and int(fields[b"trades"]) == ticker.trades


async def check_user_read_models(exchange: Exchange, transport: Transport) -> None:
    engine = exchange.app.runners[("match", 0)].state
    open_by_account: dict[int, dict[str, tuple[int, int, int]]] = defaultdict(dict)
    for symbol in exchange.markets:
        for order in engine.open_orders(symbol):
            open_by_account[order.account_id][f"{symbol}:{order.order_id}"] = (
                order.qty_lots - order.remaining_lots, order.filled_quote, order.price_ticks)
    for account in range(1, 9):
        stored = {field.decode(): json.loads(value)
                  for field, value in (await transport.hgetall(f"orders:open:{account}")).items()}
        assert {k: (v["filled_lots"], v["filled_quote"], v["price_ticks"]) for k, v in stored.items()} == \
            open_by_account[account]
        assert all(v["status"] in ("NEW", "PARTIALLY_FILLED") for v in stored.values())
        for key, view in stored.items():
            symbol, order_id = key.split(":")
            assert json.loads(await transport.get(f"order:{key}") or b"null") == view
            ids = await transport.hgetall(f"clientid:{account}:{symbol}")
            assert ids[view["client_order_id"].encode()] == order_id.encode()

    balances = exchange.accounts[0].balances.partition(0)
    accounts = {account for account, _ in balances}
    for account in accounts:
        stored = {a.decode(): json.loads(v) for a, v in (await transport.hgetall(f"balances:{account}")).items()}
        assert stored == {asset: {"available": b.available, "locked": b.locked}
                          for (acc, asset), b in balances.items() if acc == account}

    # each fill's commission is exactly what settle charged for it
    fees = {(f.symbol, f.order_id, f.trade_id): f.amount
            for f in await topic_values(exchange, "accounts.events") if type(f) is FeeCharged}
    user: list[Any] = await topic_values(exchange, "user.events")
    fills = {(u.symbol, u.order_id, u.trade_id): u.commission
             for u in user if type(u) is OrderUpdate and u.execution_type == "TRADE" and u.trade_id}
    assert {key: fee for key, fee in fills.items() if fee} == fees  # settle reports no zero fee
    # the last report of each order states its final status, as the order read model does
    last: dict[tuple[str, int], OrderUpdate] = {}
    for u in user:
        if type(u) is OrderUpdate:
            last[(u.symbol, u.order_id)] = u
    statuses = Counter(u.status for u in last.values())
    assert statuses["FILLED"] and statuses["CANCELED"] and statuses["EXPIRED"] and statuses["REJECTED"]
    assert all(u.trade_id for u in user if type(u) is OrderUpdate and u.execution_type == "TRADE")
    for (market, number), u in last.items():
        view = json.loads(await transport.get(f"order:{market}:{number}") or b"null")
        if u.reject_reason in ("DUPLICATE_ORDER_ID",):
            continue
        assert (view["status"], view["filled_lots"]) == (u.status, u.filled_lots)
    assert any(type(u) is AccountUpdate for u in user)


async def test_publish_output_and_read_models_equal_the_engine(
    transport: Transport, markets: dict[str, Market]
) -> None:
    commands = flow(markets, 3000, seed=11)
    exchange = await run_pipeline(transport, markets, commands)
    try:
        await check_depth(exchange, transport)
        await check_market_data(exchange, transport)
        await check_user_read_models(exchange, transport)
        assert await transport.read_range(f"{DLQ_STREAM}", "0-0", 10) == []
    finally:
        await exchange.app.stop()


async def test_restarted_publish_continues_update_ids_candles_and_read_models(
    transport: Transport, markets: dict[str, Market]
) -> None:
    commands = flow(markets, 1600, seed=5)
    first = await run_pipeline(transport, markets, commands[:900])
    await first.app.stop()
    second = await run_pipeline(transport, markets, commands[900:])
    try:
        await check_depth(second, transport)
        await check_market_data(second, transport)
        await check_user_read_models(second, transport)
        assert await transport.read_range(f"{DLQ_STREAM}", "0-0", 10) == []
    finally:
        await second.app.stop()
