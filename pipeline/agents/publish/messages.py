"""What publish emits: market data per market and user events per account.

Frozen, tagged, versioned `Message` Structs like every other stream message. Money
is integers: prices in ticks, quantities in lots, amounts in minimal units of the
asset named (the API turns them into decimal strings). Times are integer
nanoseconds (`ts`, `*_ts`), event time: the `ts` of the command that caused them.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from pipeline.core.messages import (
    CancelRejected,
    ExpireReason,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
)
from pipeline.messages import Message

Level = tuple[int, int]
"""(price ticks, total lots); 0 lots = the level is gone."""

ExecutionType = Literal["NEW", "CANCELED", "REJECTED", "TRADE", "EXPIRED", "TRADE_PREVENTION"]
"""Binance executionReport `x`: what happened to the order in this update."""

# ------------------------------------------------------------------ market data (key: symbol)


class DepthUpdate(Message, frozen=True, gc=False):
    """Levels of one book that one matcher command changed (Binance diff depth, `depthUpdate`).

    Update ids count level changes per market: `first_update_id` (U) is the previous
    update's `last_update_id` (u) + 1 and u = U + number of levels - 1, so a client
    that sees U != previous u + 1 has missed an update.
    """

    ts: int
    symbol: str
    first_update_id: int
    last_update_id: int
    bids: list[Level]
    asks: list[Level]


class BookTicker(Message, frozen=True, gc=False):
    """Best bid and offer of one market after a batch that changed them (0, 0 = empty side)."""

    ts: int
    symbol: str
    update_id: int
    bid_price_ticks: int
    bid_qty_lots: int
    ask_price_ticks: int
    ask_qty_lots: int


class Trade(Message, frozen=True, gc=False):
    """One public trade (Binance `trade`): the taker's fill against one maker, at the maker's price."""

    ts: int
    symbol: str
    trade_id: int
    price_ticks: int
    qty_lots: int
    quote_amount: int
    buyer_order_id: int
    seller_order_id: int
    buyer_is_maker: bool


class Candle(Message, frozen=True, gc=False):
    """One candle (kline) of one market and interval, as it stands after a batch.

    The window is [`open_ts`, `close_ts`] with close_ts = open_ts + interval - 1 ns,
    aligned to the Unix epoch (UTC). `closed` is set once a trade of a later window
    arrived: the candle will not change again. Only windows with trades exist.
    """

    ts: int
    symbol: str
    interval: str
    open_ts: int
    close_ts: int
    open_ticks: int
    high_ticks: int
    low_ticks: int
    close_ticks: int
    volume_lots: int
    quote_volume: int
    trades: int
    first_trade_id: int
    last_trade_id: int
    closed: bool = False


class Ticker(Message, frozen=True, gc=False):
    """Rolling 24h statistics of one market (Binance `24hrTicker`), after a batch with trades.

    Built from one-minute buckets: the window is the minute of the last trade and the
    1439 minutes before it. `open_ts` = `close_ts` - 24h, `close_ts` = the last trade's time.
    """

    ts: int
    symbol: str
    open_ts: int
    close_ts: int
    open_ticks: int
    high_ticks: int
    low_ticks: int
    last_ticks: int
    last_qty_lots: int
    volume_lots: int
    quote_volume: int
    trades: int
    first_trade_id: int
    last_trade_id: int


# ------------------------------------------------------------------ user events (key: account_id)


class OrderUpdate(Message, frozen=True, gc=False):
    """One change of one order (Binance `executionReport`).

    `filled_*` are cumulative; `last_*` describe this fill (TRADE only). `commission`
    is what this fill cost, in `commission_asset` minimal units (the quote asset);
    `trade_id` is 0 when there was no trade. `price_ticks` is 0 for MARKET orders;
    `qty_lots` is 0 for a MARKET buy by quote amount (`quote_qty` is then set).
    For orders refused before the matcher (REJECTED by validate or risk) the order's
    own fields (side, type, price, ...) are not known and are left at their defaults.
    """

    ts: int
    account_id: int
    symbol: str
    order_id: int
    client_order_id: str
    execution_type: ExecutionType
    status: OrderStatus
    side: Side = "BUY"
    order_type: OrderType = "LIMIT"
    time_in_force: TimeInForce = "GTC"
    price_ticks: int = 0
    qty_lots: int = 0
    quote_qty: int = 0
    reject_reason: RejectReason | None = None
    expire_reason: ExpireReason | None = None
    last_qty_lots: int = 0
    last_price_ticks: int = 0
    last_quote: int = 0
    filled_lots: int = 0
    filled_quote: int = 0
    commission: int = 0
    commission_asset: str = ""
    trade_id: int = 0
    is_maker: bool = False
    created_ts: int = 0


class AccountUpdate(Message, frozen=True, gc=False):
    """The balances of one account that a batch changed (Binance `outboundAccountPosition`).

    `balances` holds (asset, available, locked) in minimal units, one per changed asset.
    """

    ts: int
    account_id: int
    balances: list[tuple[str, int, int]]


# ------------------------------------------------------------------ read-model values


class OrderView(msgspec.Struct, frozen=True, gc=False):
    """An order as the read models keep it (and publish's own table of live orders).

    Encoded as a JSON object with these field names in ``orders:open:*`` and ``order:*``.
    `fee_scaled` is the order's fees so far in millionths of a unit (internal: it lets
    publish compute each fill's commission exactly as settle charges it).
    """

    symbol: str
    order_id: int
    client_order_id: str
    account_id: int
    status: OrderStatus
    side: Side = "BUY"
    order_type: OrderType = "LIMIT"
    time_in_force: TimeInForce = "GTC"
    price_ticks: int = 0
    qty_lots: int = 0
    quote_qty: int = 0
    filled_lots: int = 0
    filled_quote: int = 0
    commission: int = 0
    fee_scaled: int = 0
    reason: str = ""
    created_ts: int = 0
    updated_ts: int = 0


class MarketCursor(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Publish's per-market position: last depth update id, last trade's time and lots, last BBO published."""

    update_id: int = 0
    last_ts: int = 0
    last_qty_lots: int = 0
    bbo: tuple[int, int, int, int] = (0, 0, 0, 0)


class BalanceDelta(Message, frozen=True, gc=False):
    """A deposit (+) or withdrawal (-) of `delta` minimal units of `asset` (Binance `balanceUpdate`)."""

    ts: int
    account_id: int
    asset: str
    delta: int


MarketData = DepthUpdate | BookTicker | Trade | Candle | Ticker
UserEvent = OrderUpdate | AccountUpdate | CancelRejected | BalanceDelta
"""On ``user.events``; `CancelRejected` (a cancel that found no open order) passes through as is."""
