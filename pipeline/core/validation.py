"""Pure filter checks of an order against its market, Binance-style.

`check_order` returns the first failing rule as a `RejectReason`, or None if the
order passes. The rules, in order:

1. the market is TRADING (MARKET_HALTED);
2. a non-empty client order id of at most 36 characters (INVALID_CLIENT_ORDER_ID);
3. the fields fit the order type (INVALID_ORDER): LIMIT and LIMIT_MAKER need a price
   and a quantity and no quote quantity, LIMIT_MAKER is GTC; MARKET has no price and
   exactly one of quantity or quote quantity (its time in force is ignored);
4. price within [min, max] ticks (PRICE_FILTER);
5. quantity within [min, max] lots (LOT_SIZE);
6. notional (price x qty, or the quote quantity) at least the minimum (MIN_NOTIONAL).
   A MARKET order by base quantity has no price to check the notional against.

Tick and lot alignment of Decimal inputs is checked where they are converted
(`Market.price_to_ticks` / `qty_to_lots` return None: PRICE_FILTER / LOT_SIZE).
"""

from __future__ import annotations

from typing import Final

from pipeline.core.markets import MAX_AMOUNT, Market
from pipeline.core.messages import PlaceOrder, RejectReason

MAX_CLIENT_ORDER_ID_LEN: Final = 36


def check_order(order: PlaceOrder, market: Market) -> RejectReason | None:
    """The reason `order` breaks a filter of `market`, or None if it passes them all."""
    if market.spec.status != "TRADING":
        return "MARKET_HALTED"
    coid = order.client_order_id
    if not coid or len(coid) > MAX_CLIENT_ORDER_ID_LEN:
        return "INVALID_CLIENT_ORDER_ID"
    if order.order_id <= 0 or order.symbol != market.spec.symbol:
        return "INVALID_ORDER"
    if order.order_type == "MARKET":
        return _check_market_order(order, market)
    if order.quote_qty != 0 or (order.order_type == "LIMIT_MAKER" and order.time_in_force != "GTC"):
        return "INVALID_ORDER"
    price, qty = order.price_ticks, order.qty_lots
    if not market.min_price_ticks <= price <= market.max_price_ticks:
        return "PRICE_FILTER"
    if not market.min_qty_lots <= qty <= market.max_qty_lots:
        return "LOT_SIZE"
    if price * qty * market.quote_per_tick_lot < market.min_notional_quote:
        return "MIN_NOTIONAL"
    return None


def _check_market_order(order: PlaceOrder, market: Market) -> RejectReason | None:
    if order.price_ticks != 0 or order.qty_lots < 0 or order.quote_qty < 0:
        return "INVALID_ORDER"
    if (order.qty_lots > 0) == (order.quote_qty > 0):
        return "INVALID_ORDER"
    if order.qty_lots > 0:
        if not market.min_qty_lots <= order.qty_lots <= market.max_qty_lots:
            return "LOT_SIZE"
        return None
    if order.quote_qty > MAX_AMOUNT:
        return "INVALID_ORDER"
    if order.quote_qty < market.min_notional_quote:
        return "MIN_NOTIONAL"
    return None
