"""The exchange's topics: names, what each carries, and how entries are keyed.

    api ──► orders.in ──► validate ──► orders.valid ──► risk ──► orders.accepted ──► match
    match ──► orders.events ──► settle ──► accounts.events
    validate, risk ──► orders.rejected  (refused before they reached the matcher)
    orders.events + orders.rejected + accounts.events ──► publish ──► market.* (key symbol),
                                                                      user.events (key account_id)

Partitions (docs/scaling.md): the matcher's input, ``orders.accepted``, has
``market_partitions`` partitions keyed by market, so several match tasks (in several
workers) each own some markets' books. Every other topic has one partition: the
accounts state (risk + settle, with the fee account and two-sided trades) has one
owner. The two re-keying hops, listed in `REKEYING`, are where an output leaves its
agent's partition; on a Valkey Cluster they travel through the producer's outbox
(`pipeline.transport.cluster`), on one server they are ordinary outputs.

Rejections decided before matching go to their own topic: settle acts on the
matcher's events only (a matcher rejection releases a hold; an earlier one never
took any). Risk and settle share the accounts state (one owner of balances) and run
in the same worker.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.agents.events import BookChanged
from pipeline.agents.publish.messages import BookTicker, Candle, DepthUpdate, Ticker, Trade, UserEvent
from pipeline.core.messages import (
    AccountEvent,
    CancelAll,
    CancelOrder,
    CancelRejected,
    CancelReplace,
    Command,
    OrderEvent,
    OrderRejected,
    PlaceOrder,
    SetMarketStatus,
)

MatchCommand = PlaceOrder | CancelOrder | CancelAll | CancelReplace | SetMarketStatus
"""What the matcher consumes: order commands with their holds taken."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic of the exchange and what its entries are keyed by."""

    name: str
    value_type: Any
    key: str
    description: str


ORDERS_IN = TopicSpec("orders.in", Command, "account_id", "commands from the API, durable before the ack")
ORDERS_VALID = TopicSpec("orders.valid", Command, "account_id", "commands that passed the market filters")
ORDERS_ACCEPTED = TopicSpec("orders.accepted", MatchCommand, "symbol", "order commands with funds held")
ORDERS_EVENTS = TopicSpec(
    "orders.events", OrderEvent | BookChanged, "symbol", "the matcher's events: accepted, trades, end, book levels"
)
ORDERS_REJECTED = TopicSpec(
    "orders.rejected", OrderRejected | CancelRejected, "account_id", "refused by validate or risk"
)
ACCOUNTS_EVENTS = TopicSpec("accounts.events", AccountEvent, "account_id", "holds, settlements, fees, balances")

MARKET_DEPTH = TopicSpec("market.depth", DepthUpdate, "symbol", "depth diffs, update ids contiguous per market")
MARKET_BBO = TopicSpec("market.bbo", BookTicker, "symbol", "best bid and offer, when a batch changed it")
MARKET_TRADES = TopicSpec("market.trades", Trade, "symbol", "public trades: the recent-trades history")
MARKET_TICKERS = TopicSpec("market.tickers", Ticker, "symbol", "rolling 24h statistics, per batch with trades")
MARKET_CANDLES = TopicSpec("market.candles", Candle, "symbol", "candles of 1s..1d, per batch with trades")
USER_EVENTS = TopicSpec("user.events", UserEvent, "account_id", "order execution reports and balance changes")

TOPICS = (ORDERS_IN, ORDERS_VALID, ORDERS_ACCEPTED, ORDERS_EVENTS, ORDERS_REJECTED, ACCOUNTS_EVENTS,
          MARKET_DEPTH, MARKET_BBO, MARKET_TRADES, MARKET_TICKERS, MARKET_CANDLES, USER_EVENTS)


MARKET_PARTITIONED = frozenset({ORDERS_ACCEPTED.name})
"""Topics with `market_partitions` partitions (keyed by market); the others have one."""


@dataclass(frozen=True, slots=True)
class Rekeying:
    """A hop whose output is keyed differently from its input: it crosses partitions."""

    agent: str
    source: str
    target: str
    how: str


REKEYING = (
    Rekeying("risk", ORDERS_VALID.name, ORDERS_ACCEPTED.name,
             "orders keyed by account (one partition) -> keyed by market (market_partitions)"),
    Rekeying("match", ORDERS_ACCEPTED.name, ORDERS_EVENTS.name,
             "each market partition's events -> the one accounts partition (fan-in, order kept per market)"),
)
"""The pipeline's cross-partition steps (see docs/scaling.md)."""


def market_partitioner(symbols: Iterable[str]) -> Callable[[Any, int], int]:
    """Key -> partition for market-keyed topics: the markets in sorted order dealt round-robin.

    Balanced (10 markets on 3 partitions: 4, 3, 3) and stable while the market list is;
    a symbol not in the list falls back to CRC-32.
    """
    index = {symbol: i for i, symbol in enumerate(sorted(symbols))}

    def partition(key: Any, partitions: int) -> int:
        if partitions == 1 or key is None:
            return 0
        position = index.get(key)
        if position is None:
            data = key.encode() if isinstance(key, str) else bytes(key)
            return zlib.crc32(data) % partitions
        return position % partitions

    return partition
