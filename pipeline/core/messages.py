"""Commands into and events out of the core, as frozen tagged `Message` Structs.

Every message carries `ts`: integer nanoseconds from the caller's injected clock
(the core never reads a clock). Money fields are integers: prices in ticks,
quantities in lots, amounts in minimal units of their asset.

Messages hold only scalars (and nested messages), never cycles, so they are not
tracked by the cyclic garbage collector (`gc=False`): cheaper to create, no GC pauses.

Enumerations are `Literal` strings: msgspec validates them on decode, mypy checks
them, and the matching hot path compares interned strings.
"""

from __future__ import annotations

from typing import Final, Literal

from pipeline.messages import Message

Side = Literal["BUY", "SELL"]
OrderType = Literal["LIMIT", "MARKET", "LIMIT_MAKER"]
TimeInForce = Literal["GTC", "IOC", "FOK"]
StpMode = Literal["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]
OrderStatus = Literal[
    "NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH"
]
ExpireReason = Literal[
    "NOT_FILLED",  # IOC or MARKET remainder after matching
    "FOK_NOT_FILLABLE",  # FOK that could not fill completely (the book was not touched)
    "NO_BUDGET",  # MARKET buy stopped by the quote budget the risk stage held
    "SELF_TRADE",  # self-trade prevention (status EXPIRED_IN_MATCH)
]
RejectReason = Literal[
    "INVALID_ORDER",
    "INVALID_CLIENT_ORDER_ID",
    "UNKNOWN_SYMBOL",
    "MARKET_HALTED",
    "PRICE_FILTER",
    "LOT_SIZE",
    "MIN_NOTIONAL",
    "INSUFFICIENT_FUNDS",
    "DUPLICATE_CLIENT_ORDER_ID",
    "DUPLICATE_ORDER_ID",
    "WOULD_TAKE",
    "FOK_NOT_FILLABLE",
    "UNKNOWN_ORDER",
    "CANCEL_REPLACE_FAILED",
    "UNKNOWN_ASSET",
    "INVALID_AMOUNT",
    "DUPLICATE_REQUEST_ID",
]

BINANCE_ERRORS: Final[dict[str, tuple[int, str]]] = {
    "INVALID_ORDER": (-1102, "Mandatory parameter was not sent, was empty/null, or malformed."),
    "INVALID_CLIENT_ORDER_ID": (-1100, "Illegal characters found in parameter 'newClientOrderId'."),
    "UNKNOWN_SYMBOL": (-1121, "Invalid symbol."),
    "MARKET_HALTED": (-2010, "Market is closed."),
    "PRICE_FILTER": (-1013, "Filter failure: PRICE_FILTER"),
    "LOT_SIZE": (-1013, "Filter failure: LOT_SIZE"),
    "MIN_NOTIONAL": (-1013, "Filter failure: NOTIONAL"),
    "INSUFFICIENT_FUNDS": (-2010, "Account has insufficient balance for requested action."),
    "DUPLICATE_CLIENT_ORDER_ID": (-2010, "Duplicate order sent."),
    "DUPLICATE_ORDER_ID": (-2010, "Duplicate order sent."),
    "WOULD_TAKE": (-2010, "Order would immediately match and take."),
    "FOK_NOT_FILLABLE": (-2010, "Order would not be fully filled."),
    "UNKNOWN_ORDER": (-2011, "Unknown order sent."),
    "CANCEL_REPLACE_FAILED": (-2021, "Order cancel-replace partially failed."),
    "UNKNOWN_ASSET": (-1100, "Illegal characters found in parameter 'asset'."),
    "INVALID_AMOUNT": (-1013, "Invalid amount."),
    "DUPLICATE_REQUEST_ID": (-2010, "Duplicate request sent."),
}
"""Binance Spot error code and message for each rejection reason (used by the API)."""

NO_BUDGET: Final = -1
"""Budget value meaning "not capped" (engine used without a risk stage, e.g. benchmarks)."""


# --------------------------------------------------------------------------- commands


class PlaceOrder(Message, frozen=True, gc=False):
    """Place a new order. `order_id` is assigned upstream and unique per market.

    `qty_lots` > 0 orders a base quantity; a MARKET order may instead set `quote_qty`
    (quote minimal units, Binance's quoteOrderQty). `hold` is set by the risk stage
    (quote units for buys, base units for sells). `quote_budget` caps the notional a
    MARKET buy may spend and `base_budget_lots` the lots a MARKET sell by quote may
    sell; both are set by the risk stage from the hold, `NO_BUDGET` means uncapped.
    """

    ts: int
    account_id: int
    symbol: str
    order_id: int
    client_order_id: str
    side: Side
    order_type: OrderType = "LIMIT"
    time_in_force: TimeInForce = "GTC"
    price_ticks: int = 0
    qty_lots: int = 0
    quote_qty: int = 0
    stp_mode: StpMode = "NONE"
    hold: int = 0
    quote_budget: int = NO_BUDGET
    base_budget_lots: int = NO_BUDGET


class CancelOrder(Message, frozen=True, gc=False):
    """Cancel one open order by `order_id` (if non-zero) or else by `client_order_id`."""

    ts: int
    account_id: int
    symbol: str
    order_id: int = 0
    client_order_id: str = ""


class CancelAll(Message, frozen=True, gc=False):
    """Cancel every open order of an account in one market."""

    ts: int
    account_id: int
    symbol: str


class CancelReplace(Message, frozen=True, gc=False):
    """Cancel an open order and place `new_order` in one atomic step (STOP_ON_FAILURE).

    If the cancel fails the new order is rejected with CANCEL_REPLACE_FAILED and
    nothing changes. The new order's hold is taken by the risk stage like any order,
    except that the old order's hold counts toward it (the old one is released in the
    same step): risk sets `old_hold_used`, the part of the new hold that the old
    order's hold provides, and `old_filled_lots`, the old order's filled lots its hold
    reflected. The matcher refuses the replacement (INSUFFICIENT_FUNDS, nothing changes)
    if the old order traded after that, since its hold may then no longer cover it.
    """

    ts: int
    account_id: int
    symbol: str
    new_order: PlaceOrder
    cancel_order_id: int = 0
    cancel_client_order_id: str = ""
    old_hold_used: int = 0
    old_filled_lots: int = 0


class SetMarketStatus(Message, frozen=True, gc=False):
    """Halt or resume trading in a market (operator command). Cancels stay allowed."""

    ts: int
    symbol: str
    status: Literal["TRADING", "HALT"]


class Deposit(Message, frozen=True, gc=False):
    """Credit `amount` minimal units of `asset` (admin faucet / funding).

    A non-empty `request_id` makes it idempotent: once a deposit or withdrawal with that id
    was applied, a repeat is refused (TransferRejected DUPLICATE_REQUEST_ID) and changes nothing.
    """

    ts: int
    account_id: int
    asset: str
    amount: int
    request_id: str = ""


class Withdraw(Message, frozen=True, gc=False):
    """Debit `amount` minimal units of `asset` from the available (never held) balance.

    Idempotent by a non-empty `request_id`, like `Deposit`.
    """

    ts: int
    account_id: int
    asset: str
    amount: int
    request_id: str = ""


# ------------------------------------------------------------------- order events


class OrderAccepted(Message, frozen=True, gc=False):
    """The matcher accepted the order (status NEW); trades and a final state may follow."""

    ts: int
    symbol: str
    order_id: int
    client_order_id: str
    account_id: int
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price_ticks: int
    qty_lots: int
    quote_qty: int


class OrderRejected(Message, frozen=True, gc=False):
    """The order was refused (status REJECTED) by validation, risk or the matcher."""

    ts: int
    symbol: str
    order_id: int
    client_order_id: str
    account_id: int
    reason: RejectReason


class TradeExecuted(Message, frozen=True, gc=False):
    """A trade between a resting maker and an incoming taker, at the maker's price.

    `trade_id` is sequential per market (1, 2, 3, ...). `quote_amount` is the exact
    notional in quote minimal units (price_ticks * qty_lots * quote_per_tick_lot).
    """

    ts: int
    symbol: str
    trade_id: int
    price_ticks: int
    qty_lots: int
    quote_amount: int
    taker_side: Side
    maker_order_id: int
    maker_account_id: int
    taker_order_id: int
    taker_account_id: int


class OrderFilled(Message, frozen=True, gc=False):
    """The order is completely filled (status FILLED). Cumulative filled lots and quote."""

    ts: int
    symbol: str
    order_id: int
    client_order_id: str
    account_id: int
    side: Side
    filled_lots: int
    filled_quote: int


class OrderCanceled(Message, frozen=True, gc=False):
    """The order was canceled by its owner (status CANCELED)."""

    ts: int
    symbol: str
    order_id: int
    client_order_id: str
    account_id: int
    side: Side
    filled_lots: int
    filled_quote: int


class OrderExpired(Message, frozen=True, gc=False):
    """The order ended unfilled or partly filled: status EXPIRED, or EXPIRED_IN_MATCH (STP)."""

    ts: int
    symbol: str
    order_id: int
    client_order_id: str
    account_id: int
    side: Side
    filled_lots: int
    filled_quote: int
    status: Literal["EXPIRED", "EXPIRED_IN_MATCH"]
    reason: ExpireReason


class CancelRejected(Message, frozen=True, gc=False):
    """A cancel found no open order of this account (Binance -2011 Unknown order)."""

    ts: int
    symbol: str
    account_id: int
    order_id: int
    client_order_id: str
    reason: RejectReason


class MarketStatusChanged(Message, frozen=True, gc=False):
    """A market's trading status changed."""

    ts: int
    symbol: str
    status: Literal["TRADING", "HALT"]


# ----------------------------------------------------------------- account events


class HoldTaken(Message, frozen=True, gc=False):
    """Funds moved from available to locked for an order."""

    ts: int
    account_id: int
    symbol: str
    order_id: int
    asset: str
    amount: int


class HoldReleased(Message, frozen=True, gc=False):
    """What an ended order no longer needs moved from locked back to available."""

    ts: int
    account_id: int
    symbol: str
    order_id: int
    asset: str
    amount: int


class FundsSettled(Message, frozen=True, gc=False):
    """A trade's transfer: base from seller to buyer, quote from buyer to seller, fees out."""

    ts: int
    symbol: str
    trade_id: int
    buyer_account_id: int
    seller_account_id: int
    base_asset: str
    quote_asset: str
    base_amount: int
    quote_amount: int
    buyer_fee: int
    seller_fee: int


class LegSettled(Message, frozen=True, gc=False):
    """One side of a trade settled on its own account partition (accounts split over partitions).

    BUY: the account paid `quote_amount` + `fee` out of its order's hold and received
    `base_amount`. SELL: it gave `base_amount` out of its hold and received
    `quote_amount` - `fee`. The fee is collected for the fee account and credited there
    by `FeesTransferred`.
    """

    ts: int
    symbol: str
    trade_id: int
    account_id: int
    side: Side
    order_id: int
    base_asset: str
    quote_asset: str
    base_amount: int
    quote_amount: int
    fee: int


class FeesTransferred(Message, frozen=True, gc=False):
    """Fees one accounts partition collected in a batch, credited to the fee account on its own partition.

    Sent by settle to the fee account's partition of ``orders.settle``; settle there
    applies it and emits it again into ``accounts.events`` (the fee account's income).
    """

    ts: int
    account_id: int
    asset: str
    amount: int
    source_partition: int


class FeeCharged(Message, frozen=True, gc=False):
    """A fee (in the quote asset) charged to one side of a trade and paid to the fee account."""

    ts: int
    account_id: int
    symbol: str
    order_id: int
    trade_id: int
    asset: str
    amount: int
    is_maker: bool


class BalanceChanged(Message, frozen=True, gc=False):
    """The new balance of one account in one asset after an operation.

    `transfer` is the deposit (+) or withdrawal (-) that caused it, 0 for any other
    change (publish turns a non-zero one into Binance's `balanceUpdate`).
    """

    ts: int
    account_id: int
    asset: str
    available: int
    locked: int
    transfer: int = 0


class TransferRejected(Message, frozen=True, gc=False):
    """A deposit or withdrawal was refused."""

    ts: int
    account_id: int
    asset: str
    amount: int
    request_id: str
    reason: RejectReason


Command = PlaceOrder | CancelOrder | CancelAll | CancelReplace | SetMarketStatus | Deposit | Withdraw
OrderEvent = (
    OrderAccepted
    | OrderRejected
    | TradeExecuted
    | OrderFilled
    | OrderCanceled
    | OrderExpired
    | CancelRejected
    | MarketStatusChanged
)
AccountEvent = (
    HoldTaken | HoldReleased | FundsSettled | LegSettled | FeesTransferred | FeeCharged | BalanceChanged
    | TransferRejected
)
Event = OrderEvent | AccountEvent
