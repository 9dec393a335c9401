"""Order lifecycles: matcher and rejection events -> the order's new view and its `OrderUpdate`.

Pure functions. A fill's commission is computed exactly as settle charges it: an
order's fees so far are ceil(sum of notional x fee rate) over its fills, in the
market's quote asset, at the maker rate for the resting order and the taker rate
for the incoming one.
"""

from __future__ import annotations

import msgspec

from pipeline.agents.publish.messages import OrderUpdate, OrderView
from pipeline.core.markets import Market, fee_for
from pipeline.core.messages import (
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    TradeExecuted,
)

Ended = OrderFilled | OrderCanceled | OrderExpired


def report(view: OrderView, ts: int, execution_type: str, **fill: object) -> OrderUpdate:
    """The execution report of `view` as it stands, plus the fill fields given."""
    return OrderUpdate(
        ts=ts, account_id=view.account_id, symbol=view.symbol, order_id=view.order_id,
        client_order_id=view.client_order_id, execution_type=execution_type,  # type: ignore[arg-type]
        status=view.status, side=view.side, order_type=view.order_type, time_in_force=view.time_in_force,
        price_ticks=view.price_ticks, qty_lots=view.qty_lots, quote_qty=view.quote_qty,
        filled_lots=view.filled_lots, filled_quote=view.filled_quote, created_ts=view.created_ts,
        **fill,  # type: ignore[arg-type]
    )


def _plain(view: OrderView, ts: int, execution_type: str, reject_reason: str | None = None,
           expire_reason: str | None = None) -> OrderUpdate:
    """`report` without fill fields, positional (the hot path: several per order)."""
    return OrderUpdate(ts, view.account_id, view.symbol, view.order_id, view.client_order_id,
                       execution_type, view.status, view.side, view.order_type,  # type: ignore[arg-type]
                       view.time_in_force, view.price_ticks, view.qty_lots, view.quote_qty,
                       reject_reason, expire_reason, 0, 0, 0,  # type: ignore[arg-type]
                       view.filled_lots, view.filled_quote, 0, "", 0, False, view.created_ts)


def accepted(event: OrderAccepted) -> tuple[OrderView, OrderUpdate]:
    """A new order the matcher accepted (status NEW)."""
    ts = event.ts
    view = OrderView(event.symbol, event.order_id, event.client_order_id, event.account_id, "NEW", event.side,
                     event.order_type, event.time_in_force, event.price_ticks, event.qty_lots, event.quote_qty,
                     0, 0, 0, 0, "", ts, ts)
    return view, _plain(view, ts, "NEW")


def rejected(event: OrderRejected) -> tuple[OrderView, OrderUpdate]:
    """A refused order (never accepted: the rejection is all that is known of it)."""
    view = OrderView(event.symbol, event.order_id, event.client_order_id, event.account_id, "REJECTED",
                     reason=event.reason, created_ts=event.ts, updated_ts=event.ts)
    return view, _plain(view, event.ts, "REJECTED", reject_reason=event.reason)


def traded(view: OrderView, trade: TradeExecuted, is_maker: bool, market: Market) -> tuple[OrderView, OrderUpdate]:
    """One side of a trade: cumulative fill, status, and this fill's commission."""
    filled = view.filled_lots + trade.qty_lots
    fee_scaled = view.fee_scaled + trade.quote_amount * (market.maker_fee_ppm if is_maker else market.taker_fee_ppm)
    charged = fee_for(fee_scaled)
    status = "FILLED" if view.qty_lots and filled >= view.qty_lots else "PARTIALLY_FILLED"
    ts = trade.ts
    new = msgspec.structs.replace(view, status=status, filled_lots=filled,
                                  filled_quote=view.filled_quote + trade.quote_amount, commission=charged,
                                  fee_scaled=fee_scaled, updated_ts=ts)
    return new, OrderUpdate(ts, new.account_id, new.symbol, new.order_id, new.client_order_id, "TRADE",
                            status, new.side, new.order_type, new.time_in_force,  # type: ignore[arg-type]
                            new.price_ticks, new.qty_lots, new.quote_qty, None, None, trade.qty_lots,
                            trade.price_ticks, trade.quote_amount, filled, new.filled_quote,
                            charged - view.commission, market.quote_asset.symbol, trade.trade_id, is_maker,
                            new.created_ts)


def unknown(event: TradeExecuted | Ended, account_id: int, order_id: int, side: str) -> OrderView:
    """A stand-in view for an order publish never saw accepted (its input started later)."""
    return OrderView(event.symbol, order_id, getattr(event, "client_order_id", ""), account_id, "NEW",
                     side, created_ts=event.ts, updated_ts=event.ts)  # type: ignore[arg-type]


def ended(view: OrderView, event: Ended) -> tuple[OrderView, OrderUpdate | None]:
    """The order's final state; no report for a FILLED that its last trade report already said."""
    if type(event) is OrderFilled:
        already = view.status == "FILLED"
        new = msgspec.structs.replace(view, status="FILLED", filled_lots=event.filled_lots,
                                      filled_quote=event.filled_quote, updated_ts=event.ts)
        return new, None if already else _plain(new, event.ts, "TRADE")
    if type(event) is OrderCanceled:
        new = msgspec.structs.replace(view, status="CANCELED", updated_ts=event.ts)
        return new, _plain(new, event.ts, "CANCELED")
    assert isinstance(event, OrderExpired)
    new = msgspec.structs.replace(view, status=event.status, reason=event.reason, updated_ts=event.ts)
    execution = "TRADE_PREVENTION" if event.status == "EXPIRED_IN_MATCH" else "EXPIRED"
    return new, _plain(new, event.ts, execution, expire_reason=event.reason)


def is_live(view: OrderView) -> bool:
    """Whether the order is still open (resting or in the middle of matching)."""
    return view.status == "NEW" or view.status == "PARTIALLY_FILLED"
