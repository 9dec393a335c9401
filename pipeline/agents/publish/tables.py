"""Publish's tables (its durable state) and output topics, declared together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.agents.publish.messages import Candle, MarketCursor, OrderView
from pipeline.app import App
from pipeline.tables.table import Table
from pipeline.topics import Topic


@dataclass(frozen=True)
class PublishTables:
    """Publish's state, one changelog-backed table each.

    - ``publish_markets``: symbol -> `MarketCursor` (depth update id, last trade, last BBO);
    - ``publish_levels``: (symbol, is bid, price ticks) -> lots, the full depth;
    - ``publish_candles``: (symbol, interval) -> the current `Candle` of each interval;
    - ``publish_minutes``: (symbol, minute open ts) -> 1m `Candle`, the last 24h (the ticker's buckets);
    - ``publish_orders``: (symbol, order id) -> `OrderView` of every live (open) order.
    """

    markets: Table[str, MarketCursor]
    levels: Table[tuple[str, bool, int], int]
    candles: Table[tuple[str, str], Candle]
    minutes: Table[tuple[str, int], Candle]
    orders: Table[tuple[str, int], OrderView]

    @classmethod
    def declare(cls, app: App, partitions: int) -> PublishTables:
        return cls(
            app.Table("publish_markets", key_type=str, value_type=MarketCursor, partitions=partitions),
            app.Table("publish_levels", key_type=tuple[str, bool, int], value_type=int, partitions=partitions),
            app.Table("publish_candles", key_type=tuple[str, str], value_type=Candle, partitions=partitions),
            app.Table("publish_minutes", key_type=tuple[str, int], value_type=Candle, partitions=partitions),
            app.Table("publish_orders", key_type=tuple[str, int], value_type=OrderView, partitions=partitions),
        )

    def all(self) -> list[Table[Any, Any]]:
        return [self.markets, self.levels, self.candles, self.minutes, self.orders]


@dataclass(frozen=True)
class PublishTopics:
    """Where publish emits (see the package docstring)."""

    depth: Topic[Any]
    bbo: Topic[Any]
    trades: Topic[Any]
    tickers: Topic[Any]
    candles: Topic[Any]
    user: Topic[Any]
