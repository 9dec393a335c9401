"""The 24h ticker is a rolling window: publish's clock moves it when no trade happens."""

from __future__ import annotations

from typing import Any

from pipeline.agents.events import ClockTick
from pipeline.agents.publish.agent import CLOCK_TOPIC
from pipeline.agents.publish.candles import DAY, MINUTE
from pipeline.agents.publish.messages import Ticker
from pipeline.core.markets import Market
from pipeline.core.messages import Deposit, PlaceOrder
from pipeline.exchange import build_exchange
from pipeline.transport.base import Transport
from tests.core.core_helpers import sample_markets
from tests.pipeline.test_exchange_e2e import topic_values

T0 = 1_700_000_000 * 10**9 - 1_700_000_000 * 10**9 % MINUTE  # a minute boundary


def trade_pair(ts: int, first_id: int, price: int) -> list[Any]:
    """A resting sell of account 1 and a buy of account 2 that takes it (one trade)."""
    return [
        PlaceOrder(ts=ts, account_id=1, symbol="TSTUSD", order_id=first_id, client_order_id=f"s{first_id}",
                   side="SELL", price_ticks=price, qty_lots=2),
        PlaceOrder(ts=ts, account_id=2, symbol="TSTUSD", order_id=first_id + 1, client_order_id=f"b{first_id}",
                   side="BUY", price_ticks=price, qty_lots=2),
    ]


async def test_ticks_drop_minutes_that_left_the_window(transport: Transport) -> None:
    markets: dict[str, Market] = sample_markets()
    now = [0]
    exchange = build_exchange(transport, markets=markets, clock=lambda: now[0])
    app = exchange.app
    await app.start()
    try:
        await app.wait_running()
        funding = [Deposit(ts=1, account_id=a, asset=asset, amount=10**9) for a in (1, 2) for asset in ("USD", "TST")]
        commands = [*funding, *trade_pair(T0 + 5, 1, 100), *trade_pair(T0 + 10 * MINUTE, 3, 110)]
        await exchange.orders_in.send_many((getattr(c, "account_id", None), c) for c in commands)
        await app.wait_caught_up(timeout=60)
        tickers: list[Ticker] = await topic_values(exchange, "market.tickers")
        assert (tickers[-1].volume_lots, tickers[-1].trades) == (4, 2)

        clock = app.topics[CLOCK_TOPIC]
        # within the window of both trades: nothing changes, nothing is published
        await clock.send(ClockTick(T0 + DAY - MINUTE))
        await app.wait_caught_up(timeout=60)
        assert len(await topic_values(exchange, "market.tickers")) == len(tickers)

        # a day after the first trade's minute: it leaves the window, the second stays
        await clock.send(ClockTick(T0 + DAY + 30 * 10**9))
        await app.wait_caught_up(timeout=60)
        moved: Ticker = (await topic_values(exchange, "market.tickers"))[-1]
        assert (moved.volume_lots, moved.trades, moved.open_ticks, moved.high_ticks, moved.low_ticks,
                moved.first_trade_id, moved.close_ts) == (2, 1, 110, 110, 110, 2, T0 + DAY + 30 * 10**9)
        stored = await transport.hgetall("ticker:{TSTUSD}")
        assert (int(stored[b"volume_lots"]), int(stored[b"trades"])) == (2, 1)

        # the timer itself sends the app's clock: past both trades, the window is empty
        now[0] = T0 + 2 * DAY
        timer = next(fn for _, fn in app.timers if fn.__name__ == "publish_clock")
        await timer()
        await app.wait_caught_up(timeout=60)
        empty: Ticker = (await topic_values(exchange, "market.tickers"))[-1]
        assert (empty.volume_lots, empty.trades, empty.last_ticks, empty.close_ts) == (0, 0, 110, T0 + 2 * DAY)
        stored = await transport.hgetall("ticker:{TSTUSD}")
        assert (int(stored[b"volume_lots"]), int(stored[b"last_ticks"])) == (0, 110)
        assert not [key for key in exchange.publish_tables.minutes.partition(0)]
    finally:
        await app.stop()
