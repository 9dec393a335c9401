"""The rolling 24h ticker of one market, from its one-minute buckets. Pure and synchronous.

The buckets are the market's 1m candles (publish keeps those of the last 24h in its
``publish_minutes`` table). Sums are kept up to date as buckets change or leave the
window; high and low are recomputed only when a bucket holding one of them leaves.
The window moves with trades and with publish's clock (`evict` with the time now), so
a market without trades sees its statistics shrink to zero volume after 24h.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from pipeline.agents.publish.candles import DAY, MINUTE
from pipeline.agents.publish.messages import Candle, Ticker


class RollingTicker:
    """24h statistics over one market's minute buckets (oldest first)."""

    __slots__ = ("_buckets", "_high", "_low", "_stale", "last_lots", "last_ticks", "quote_volume", "symbol",
                 "trades", "volume")

    def __init__(self, symbol: str, buckets: Iterable[Candle] = (), last_lots: int = 0, last_ticks: int = 0) -> None:
        self.symbol = symbol
        self._buckets: deque[Candle] = deque()
        self.volume = self.quote_volume = self.trades = 0
        self.last_lots = last_lots
        self.last_ticks = last_ticks  # the last trade's price, kept when its minute leaves the window
        self._high = self._low = 0
        self._stale = False
        for bucket in sorted(buckets, key=lambda b: b.open_ts):
            self.update(bucket)

    def update(self, bucket: Candle, last_lots: int = 0) -> None:
        """Add the newest minute bucket, or replace it with its grown version."""
        buckets = self._buckets
        if buckets and buckets[-1].open_ts == bucket.open_ts:
            old = buckets.pop()
            self.volume -= old.volume_lots
            self.quote_volume -= old.quote_volume
            self.trades -= old.trades
        elif buckets and buckets[-1].open_ts > bucket.open_ts:
            raise ValueError(f"{self.symbol}: minute bucket {bucket.open_ts} is older than the newest")
        empty = not buckets
        buckets.append(bucket)
        self.last_ticks = bucket.close_ticks
        self.volume += bucket.volume_lots
        self.quote_volume += bucket.quote_volume
        self.trades += bucket.trades
        if empty:
            self._high, self._low = bucket.high_ticks, bucket.low_ticks
        else:
            self._high = max(self._high, bucket.high_ticks)
            self._low = min(self._low, bucket.low_ticks)
        if last_lots:
            self.last_lots = last_lots

    def evict(self, now: int) -> list[int]:
        """Drop the buckets that left the 24h window ending at the minute of `now`; their open times."""
        buckets = self._buckets
        horizon = now - now % MINUTE - DAY  # buckets opening at or before this are out
        gone: list[int] = []
        while buckets and buckets[0].open_ts <= horizon:
            old = buckets.popleft()
            gone.append(old.open_ts)
            self.volume -= old.volume_lots
            self.quote_volume -= old.quote_volume
            self.trades -= old.trades
            if old.high_ticks >= self._high or old.low_ticks <= self._low:
                self._stale = True
        return gone

    def ticker(self, now: int | None = None) -> Ticker | None:
        """The statistics, or None if no trade is in the window.

        The window ends at the last trade, or at `now` if given (a clock tick): then an
        empty window gives a ticker of zero volume at the last price, if there ever was one.
        """
        buckets = self._buckets
        if not buckets:
            if now is None or not self.last_ticks:
                return None
            price = self.last_ticks
            return Ticker(now, self.symbol, now - DAY, now, price, price, price, price, self.last_lots, 0, 0, 0, 0, 0)
        if self._stale:
            self._high = max(b.high_ticks for b in buckets)
            self._low = min(b.low_ticks for b in buckets)
            self._stale = False
        first, last = buckets[0], buckets[-1]
        close = last.ts if now is None else max(now, last.ts)
        return Ticker(close, self.symbol, close - DAY, close, first.open_ticks, self._high, self._low,
                      last.close_ticks, self.last_lots, self.volume, self.quote_volume, self.trades,
                      first.first_trade_id, last.last_trade_id)
