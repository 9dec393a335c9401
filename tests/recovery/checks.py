"""What a complete archive of a pipeline run must satisfy."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import asyncpg

from pipeline.exchange import Exchange
from pipeline.transport.base import START
from recovery.persister import app_streams
from recovery.rows import split_entry


async def stream_messages(exchange: Exchange) -> dict[tuple[str, str, int], Any]:
    """(stream, entry id, index) -> decoded message, for every message of every exchange stream."""
    out: dict[tuple[str, str, int], Any] = {}
    transport = exchange.app.transport
    for stream in app_streams(exchange.app):
        topic = exchange.app.topics[stream.rpartition(":")[0]]
        after = START
        while entries := await transport.read_range(stream, after, 2000):
            for entry_id, data in entries:
                for idx, raw in enumerate(split_entry(data)):
                    out[(stream, entry_id, idx)] = topic.codec.decode(raw)
            after = entries[-1][0]
    return out


async def assert_archive_complete(conn: asyncpg.Connection, exchange: Exchange) -> dict[str, int]:
    """Every message exactly once, trades, ledger sums, orders and candles as the pipeline has them."""
    messages = await stream_messages(exchange)
    rows = await conn.fetch("SELECT stream, entry_id, idx, type FROM event_archive")
    archived = Counter((r["stream"], r["entry_id"], r["idx"]) for r in rows)
    assert len(archived) == len(rows)  # nothing twice (also the primary key)
    assert set(archived) == set(messages)
    assert all(r["type"] == type(messages[(r["stream"], r["entry_id"], r["idx"])]).__name__ for r in rows)

    values = list(messages.values())
    trades = [m for (stream, _, _), m in messages.items()  # orders.settle has copies for settle
              if stream.startswith("orders.events:") and type(m).__name__ == "TradeExecuted"]
    assert trades, "the flow should trade"
    db_trades = await conn.fetch("SELECT symbol, trade_id, price_ticks, qty_lots, quote_amount, taker_side,"
                                 " maker_order_id, taker_order_id FROM trades")
    assert sorted(tuple(r) for r in db_trades) == sorted(
        (t.symbol, t.trade_id, t.price_ticks, t.qty_lots, t.quote_amount, t.taker_side, t.maker_order_id,
         t.taker_order_id) for t in trades)

    final: dict[tuple[int, str], tuple[int, int]] = {}
    for m in values:
        if type(m).__name__ == "BalanceChanged":
            final[(m.account_id, m.asset)] = (m.available, m.locked)
    sums = await conn.fetch("SELECT account_id, asset, sum(available_delta) AS a, sum(locked_delta) AS l"
                            " FROM ledger GROUP BY account_id, asset")
    assert {(r["account_id"], r["asset"]): (int(r["a"]), int(r["l"])) for r in sums} == final
    causes = Counter({r["cause"]: r["n"] for r in await conn.fetch(
        "SELECT cause, count(*) AS n FROM ledger GROUP BY cause")})
    assert causes["adjustment"] == 0  # every movement is explained by its own event
    deposits = sum(m.amount for (stream, _, _), m in messages.items()
                   if stream.startswith("orders.in:") and type(m).__name__ == "Deposit")
    assert await conn.fetchval("SELECT sum(available_delta) FROM ledger WHERE cause = 'deposit'") == deposits
    balances = await conn.fetch("SELECT account_id, asset, available, locked FROM balances")
    assert {(r["account_id"], r["asset"]): (int(r["available"]), int(r["locked"])) for r in balances} == final

    client = exchange.app.transport.client  # type: ignore[attr-defined]
    views = {}
    async for key in client.scan_iter(match="order:*", count=1000):
        view = json.loads(await client.get(key))
        views[(view["symbol"], view["order_id"])] = (view["status"], view["filled_lots"], view["filled_quote"])
    db_orders = await conn.fetch("SELECT symbol, order_id, status, filled_lots, filled_quote FROM orders")
    assert {(r["symbol"], r["order_id"]): (r["status"], r["filled_lots"], int(r["filled_quote"]))
            for r in db_orders} == views

    candles = {(m.symbol, m.interval, m.open_ts): (m.close_ticks, m.volume_lots, m.trades, m.closed)
               for m in values if type(m).__name__ == "Candle"}
    db_candles = await conn.fetch("SELECT symbol, interval, open_ts, close_ticks, volume_lots, trades, closed"
                                  " FROM candles")
    assert {(r[0], r[1], r[2]): (r[3], r[4], r[5], r[6]) for r in db_candles} == candles
    return dict(causes)
