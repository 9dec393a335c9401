"""Candles: trades folded into epoch-aligned windows of each interval. Pure and synchronous.

A market keeps one *current* candle per interval (publish's ``publish_candles``
table). Folding a batch's trades into it extends it, or closes it and opens the
next window when a trade's time reaches past it. Every candle a batch touched comes
back, oldest first, so it can be emitted and written to the read model once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pipeline.agents.publish.messages import Candle

SECOND: Final = 1_000_000_000
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR

INTERVALS: Final[dict[str, int]] = {
    "1s": SECOND, "1m": MINUTE, "5m": 5 * MINUTE, "15m": 15 * MINUTE, "1h": HOUR, "4h": 4 * HOUR, "1d": DAY,
}
"""Interval name (Binance spelling) -> length in nanoseconds."""

TradePoint = tuple[int, int, int, int, int]
"""(event time ns, price ticks, qty lots, quote amount, trade id) of one trade."""


def window_start(ts: int, length: int) -> int:
    """The start of the window of `length` ns that holds `ts` (aligned to the Unix epoch)."""
    return ts - ts % length


def fold(current: Candle | None, symbol: str, interval: str, trades: Sequence[TradePoint]) -> list[Candle]:
    """The candles `trades` touch, oldest first; all but the last are closed.

    `trades` are in time order and no earlier than `current`'s window (callers make
    event time monotonic per market). If the first trade opens a new window, the
    closed version of `current` comes first.
    """
    if not trades:
        return []
    length = INTERVALS[interval]
    out: list[Candle] = []
    if current is not None:
        start = current.open_ts
        o, h, lo, c = current.open_ticks, current.high_ticks, current.low_ticks, current.close_ticks
        vol, quote, n, first, last = (current.volume_lots, current.quote_volume, current.trades,
                                      current.first_trade_id, current.last_trade_id)
        ts = current.ts
    else:
        ts, price = trades[0][0], trades[0][1]
        start = window_start(ts, length)
        o = h = lo = c = price
        vol = quote = n = 0
        first = last = trades[0][4]
    end = start + length
    for t, price, lots, amount, trade_id in trades:
        if t >= end:
            out.append(Candle(ts, symbol, interval, start, end - 1, o, h, lo, c, vol, quote, n, first, last, True))
            start = window_start(t, length)
            end = start + length
            o = h = lo = price
            vol = quote = n = 0
            first = trade_id
        if price > h:
            h = price
        elif price < lo:
            lo = price
        c = price
        vol += lots
        quote += amount
        n += 1
        last = trade_id
        ts = t
    out.append(Candle(ts, symbol, interval, start, end - 1, o, h, lo, c, vol, quote, n, first, last, False))
    return out
