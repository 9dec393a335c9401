"""Builders and a text rendering of books for the core's scenario tests."""

from __future__ import annotations

from typing import Any

from pipeline.core.engine import MatchingEngine
from pipeline.core.markets import Market, markets_from_dict
from pipeline.core.messages import PlaceOrder

SYMBOL = "TSTUSD"

TEST_MARKETS: dict[str, Any] = {
    # One tick = 1 USD, one lot = 1 TST, both with 0 decimals: notional = price x qty.
    "assets": {"TST": 0, "USD": 0, "OTH": 0},
    "markets": [
        {"symbol": "TSTUSD", "base": "TST", "quote": "USD", "tick_size": "1", "lot_size": "1",
         "min_qty": "1", "max_qty": "1000000", "min_notional": "1",
         "maker_fee_ppm": 1000, "taker_fee_ppm": 2000},
        {"symbol": "OTHUSD", "base": "OTH", "quote": "USD", "tick_size": "1", "lot_size": "1",
         "min_qty": "1", "max_qty": "1000000", "min_notional": "1",
         "maker_fee_ppm": 0, "taker_fee_ppm": 0},
    ],
}


def sample_markets() -> dict[str, Market]:
    return markets_from_dict(TEST_MARKETS)


def order(order_id: int, side: str, price: int = 0, qty: int = 0, *, account: int = 1, **kw: Any,
          ) -> PlaceOrder:
    """A PlaceOrder with readable defaults: LIMIT GTC, client id "c<order_id>", ts = order_id."""
    fields: dict[str, Any] = dict(ts=order_id, account_id=account, symbol=SYMBOL, order_id=order_id,
                                  client_order_id=f"c{order_id}", side=side, price_ticks=price, qty_lots=qty)
    fields.update(kw)
    return PlaceOrder(**fields)


def market_order(order_id: int, side: str, qty: int = 0, *, quote: int = 0, account: int = 1, **kw: Any,
                 ) -> PlaceOrder:
    return order(order_id, side, 0, qty, account=account, order_type="MARKET", quote_qty=quote, **kw)


def render(engine: MatchingEngine, symbol: str = SYMBOL) -> str:
    """The book as a table, asks on top (highest first), each order as #id:account:remaining."""
    book = engine.book(symbol)
    rows = []
    for price, level in reversed(book.asks.items()):
        rows.append(f"SELL {price:>5} | " + " ".join(f"#{o.order_id}:a{o.account_id}:{o.remaining}"
                                                       for o in level))
    for price, level in reversed(book.bids.items()):
        rows.append(f"BUY  {price:>5} | " + " ".join(f"#{o.order_id}:a{o.account_id}:{o.remaining}"
                                                       for o in level))
    return "\n".join(rows)


def table(text: str) -> str:
    """A book table written in a test, without its indentation and blank edge lines."""
    return "\n".join(line.strip() for line in text.strip().splitlines())


def kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]
