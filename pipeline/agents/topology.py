"""The exchange's topics: names, what each carries, and how entries are keyed.

    api ──► orders.in ──► validate ──► orders.valid ──► risk ──► orders.accepted ──► match
    match ──► orders.events ──► settle ──► accounts.events            (one accounts partition)
    match ──► orders.settle ──► settle ──► accounts.events            (several accounts partitions)
    validate, risk ──► orders.rejected  (refused before they reached the matcher)
    orders.events + orders.rejected + accounts.events ──► publish ──► market.* (key symbol),
                                                                      user.events (key account_id)

Partitions (docs/scaling.md): the matcher's input, ``orders.accepted``, has
``market_partitions`` partitions keyed by market, so several match tasks (in several
workers) each own some markets' books. ``orders.in`` and ``orders.valid`` have
``account_partitions`` partitions keyed by account (``account_id % account_partitions``),
so validate and risk run per accounts partition; with more than one, match also sends
each trade to the partition of its buyer and of its seller, and each order's end to its
account's partition, on ``orders.settle``, where settle applies the legs its partition
owns and sends the fees it charged to the fee account's partition (`FeesTransferred`).
The other topics have one partition: publish reads one merged stream of each input.
The re-keying hops, listed in `REKEYING`, are where an output leaves its agent's
partition; on a Valkey Cluster they travel through the producer's outbox
(`pipeline.transport.cluster`), on one server they are ordinary outputs.

Rejections decided before matching go to their own topic: settle acts on the
matcher's events only (a matcher rejection releases a hold; an earlier one never
took any). Risk and settle share the accounts state of their partition (one owner of
those balances) and run in the same worker.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
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
    FeesTransferred,
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    SetMarketStatus,
    TradeExecuted,
)

MatchCommand = PlaceOrder | CancelOrder | CancelAll | CancelReplace | SetMarketStatus
"""What the matcher consumes: order commands with their holds taken."""

SettleInput = TradeExecuted | OrderFilled | OrderCanceled | OrderExpired | OrderRejected | FeesTransferred
"""What settle consumes from ``orders.settle``: trades, order ends and fee transfers."""


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
ORDERS_SETTLE = TopicSpec(
    "orders.settle", SettleInput, "account_id",
    "trades and order ends re-keyed by account for settle (a trade goes to its buyer's and its seller's "
    "partitions), and fee transfers to the fee account's partition; only with several accounts partitions",
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
"""Topics with `market_partitions` partitions (keyed by market)."""

ACCOUNT_PARTITIONED = frozenset({ORDERS_IN.name, ORDERS_VALID.name, ORDERS_SETTLE.name})
"""Topics with `account_partitions` partitions (keyed by account id); the others have one."""


@dataclass(frozen=True, slots=True)
class Rekeying:
    """A hop whose output is keyed differently from its input: it crosses partitions."""

    agent: str
    source: str
    target: str
    how: str


REKEYING = (
    Rekeying("risk", ORDERS_VALID.name, ORDERS_ACCEPTED.name,
             "orders keyed by account (account_partitions) -> keyed by market (market_partitions)"),
    Rekeying("match", ORDERS_ACCEPTED.name, ORDERS_EVENTS.name,
             "each market partition's events -> the one orders.events partition (fan-in, order kept per market)"),
    Rekeying("match", ORDERS_ACCEPTED.name, ORDERS_SETTLE.name,
             "trades and order ends keyed by market -> by account: a trade to its buyer's and its seller's "
             "partitions (once if they share one)"),
    Rekeying("settle", ORDERS_SETTLE.name, ORDERS_SETTLE.name,
             "the fees a batch charged -> the fee account's partition (one FeesTransferred per asset)"),
    Rekeying("validate, risk, settle", "orders.in / orders.valid / orders.settle",
             "orders.rejected, accounts.events",
             "each accounts partition's rejections and account events -> one partition for publish (fan-in)"),
)
"""The pipeline's cross-partition steps (see docs/scaling.md)."""


def account_partition(account_id: int, partitions: int) -> int:
    """The accounts partition of an account (the default partitioner of integer keys)."""
    return account_id % partitions


def broadcast_keys(partitions: int) -> range:
    """Keys that reach every partition of an account-keyed topic once (key k lands in partition k).

    For commands every accounts partition must see, such as `SetMarketStatus` (each
    validate keeps the markets' status; partition 0's passes it on to match).
    """
    return range(partitions)


class MarketPartitioner:
    """Key -> partition for market-keyed topics: the markets in sorted order dealt round-robin,
    except markets pinned to the partition the exchange's data recorded for them (`pin`).

    Balanced (10 markets on 3 partitions: 4, 3, 3) and stable while the market list is; a
    market added later would shift the deal, so every process that routes by market pins the
    recorded assignment before it starts (`pipeline.layout.check_layout`). A symbol not in the
    list falls back to CRC-32.
    """

    def __init__(self, symbols: Iterable[str]) -> None:
        self.index = {symbol: i for i, symbol in enumerate(sorted(symbols))}
        self.pinned: dict[str, int] = {}

    def pin(self, assignment: dict[str, int]) -> None:
        """Route each market of `assignment` to its partition from now on."""
        self.pinned = dict(assignment)

    def __call__(self, key: Any, partitions: int) -> int:
        if partitions == 1 or key is None:
            return 0
        pinned = self.pinned.get(key)
        if pinned is not None:
            return pinned
        position = self.index.get(key)
        if position is None:
            data = key.encode() if isinstance(key, str) else bytes(key)
            return zlib.crc32(data) % partitions
        return position % partitions
