"""What a replayed core looks like to an operator: rows for books, balances and one-line summaries."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from pipeline.core.markets import Asset, Market
from recovery.replay import ReplayCore

Row = tuple[Any, ...]


def _plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros (``"0.1"``, ``"25000"``)."""
    text = format(value.normalize(), "f")
    return text


def book_rows(core: ReplayCore, symbol: str, levels: int) -> list[Row]:
    """(level, bid qty, bid price, ask price, ask qty) for the top `levels` of one market."""
    market = core.markets[symbol]
    bids, asks = core.engine.book(symbol).depth(levels)
    rows: list[Row] = []
    for i in range(max(len(bids), len(asks))):
        bid = bids[i] if i < len(bids) else None
        ask = asks[i] if i < len(asks) else None
        rows.append((
            i + 1,
            _plain(market.lots_to_qty(bid[1])) if bid else "",
            _plain(market.ticks_to_price(bid[0])) if bid else "",
            _plain(market.ticks_to_price(ask[0])) if ask else "",
            _plain(market.lots_to_qty(ask[1])) if ask else "",
        ))
    return rows


BOOK_HEADERS = ("level", "bid qty", "bid price", "ask price", "ask qty")
BALANCE_HEADERS = ("account", "asset", "available", "locked")


def book_title(core: ReplayCore, symbol: str) -> str:
    market = core.engine.market(symbol)
    orders = len(core.engine.book(symbol))
    return (f"{symbol}  ({market.spec.status.lower()}, {orders} open order{'s' if orders != 1 else ''},"
            f" next trade id {core.engine.next_trade_id(symbol)})")


def assets_of(markets: Iterable[Market]) -> dict[str, Asset]:
    out: dict[str, Asset] = {}
    for market in markets:
        out[market.base_asset.symbol] = market.base_asset
        out[market.quote_asset.symbol] = market.quote_asset
    return out


def balance_rows(core: ReplayCore, accounts: set[int] | None = None) -> list[Row]:
    """(account, asset, available, locked) as decimal strings, optionally for some accounts only."""
    assets = assets_of(core.markets.values())
    rows: list[Row] = []
    for balance in core.accounts.snapshot().balances:
        if accounts is not None and balance.account_id not in accounts:
            continue
        asset = assets.get(balance.asset)
        fmt = (lambda units, a=asset: _plain(a.from_units(units))) if asset else str
        rows.append((balance.account_id, balance.asset, fmt(balance.available), fmt(balance.locked)))
    return rows


def describe(message: Any) -> str:
    """One line for a command or an event: its type and the fields an operator looks for."""
    name = type(message).__name__
    fields = ("account_id", "symbol", "order_id", "client_order_id", "side", "order_type", "time_in_force",
              "price_ticks", "qty_lots", "quote_qty", "asset", "amount", "status", "reason", "trade_id",
              "cancel_order_id", "maker_order_id", "taker_order_id")
    parts = []
    for name_ in fields:
        value = getattr(message, name_, None)
        if value in (None, "", 0) and name_ not in ("side",):
            continue
        parts.append(f"{name_}={value}")
    new_order = getattr(message, "new_order", None)
    if new_order is not None:
        parts.append(f"new=({describe(new_order)})")
    return f"{name} " + " ".join(parts)


def summarize(events: list[Any]) -> str:
    """What a command did, counted by event type (``OrderAccepted, TradeExecuted x2, ...``)."""
    counts: dict[str, int] = {}
    for event in events:
        counts[type(event).__name__] = counts.get(type(event).__name__, 0) + 1
    if not counts:
        return "nothing"
    return ", ".join(name if n == 1 else f"{name} x{n}" for name, n in counts.items())
