"""Published market messages rendered as Binance stream events (decimal strings, times in ms)."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from api.context import price_str, qty_str, quote_str
from api.public import MS, aggregate, ticker_24hr
from pipeline.agents.publish.messages import BookTicker, Candle, DepthUpdate, Ticker, Trade
from pipeline.core.markets import Market

_TICKER_KEYS: Final = {"priceChange": "p", "priceChangePercent": "P", "weightedAvgPrice": "w",
                       "prevClosePrice": "x", "lastPrice": "c", "lastQty": "Q", "bidPrice": "b", "bidQty": "B",
                       "askPrice": "a", "askQty": "A", "openPrice": "o", "highPrice": "h", "lowPrice": "l",
                       "volume": "v", "quoteVolume": "q", "openTime": "O", "closeTime": "C", "firstId": "F",
                       "lastId": "L", "count": "n"}


def levels(market: Market, side: list[tuple[int, int]]) -> list[list[str]]:
    return [[price_str(market, p), qty_str(market, q)] for p, q in side]


def merge_depth(updates: list[DepthUpdate]) -> tuple[int, int, list[tuple[int, int]], list[tuple[int, int]]]:
    """Consecutive updates of one market as one diff: (U of the first, u of the last, bids, asks)."""
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    for update in updates:
        bids.update(update.bids)
        asks.update(update.asks)
    return (updates[0].first_update_id, updates[-1].last_update_id, sorted(bids.items(), reverse=True),
            sorted(asks.items()))


def depth_event(market: Market, updates: list[DepthUpdate], now_ms: int) -> dict[str, Any]:
    first, last, bids, asks = merge_depth(updates)
    return {"e": "depthUpdate", "E": now_ms, "s": market.symbol, "U": first, "u": last,
            "b": levels(market, bids), "a": levels(market, asks)}


def partial_book(market: Market, update_id: int, bids: list[tuple[int, int]], asks: list[tuple[int, int]],
                 n: int) -> dict[str, Any]:
    return {"lastUpdateId": update_id, "bids": levels(market, bids[:n]), "asks": levels(market, asks[:n])}


def trade_event(market: Market, t: Trade, now_ms: int) -> dict[str, Any]:
    return {"e": "trade", "E": now_ms, "s": market.symbol, "t": t.trade_id, "p": price_str(market, t.price_ticks),
            "q": qty_str(market, t.qty_lots), "T": t.ts // MS, "m": t.buyer_is_maker, "M": True}


def agg_trade_events(market: Market, trades: list[Trade], now_ms: int) -> list[dict[str, Any]]:
    """Binance aggTrade events, grouped as GET /api/v3/aggTrades groups them."""
    return [{"e": "aggTrade", "E": now_ms, "s": market.symbol, "a": g[0].trade_id,
             "p": price_str(market, g[0].price_ticks), "q": qty_str(market, sum(t.qty_lots for t in g)),
             "f": g[0].trade_id, "l": g[-1].trade_id, "T": g[0].ts // MS, "m": g[0].buyer_is_maker, "M": True}
            for g in aggregate(trades)]


def kline_event(market: Market, c: Candle, now_ms: int) -> dict[str, Any]:
    return {"e": "kline", "E": now_ms, "s": market.symbol, "k": {
        "t": c.open_ts // MS, "T": c.close_ts // MS, "s": market.symbol, "i": c.interval,
        "f": c.first_trade_id, "L": c.last_trade_id, "o": price_str(market, c.open_ticks),
        "c": price_str(market, c.close_ticks), "h": price_str(market, c.high_ticks),
        "l": price_str(market, c.low_ticks), "v": qty_str(market, c.volume_lots), "n": c.trades, "x": c.closed,
        "q": quote_str(market, c.quote_volume), "V": qty_str(market, 0), "Q": quote_str(market, 0), "B": "0"}}


def bbo_fields(b: BookTicker | None) -> dict[str, int]:
    return msgspec.structs.asdict(b) if b is not None else {}


def ticker_event(market: Market, t: Ticker, bbo: BookTicker | None, now_ms: int, mini: bool) -> dict[str, Any]:
    """`24hrTicker` (or `24hrMiniTicker`): the REST ticker's values under Binance's one-letter keys."""
    rest = ticker_24hr(market, msgspec.structs.asdict(t), bbo_fields(bbo), now_ms, mini)
    out: dict[str, Any] = {"e": "24hrMiniTicker" if mini else "24hrTicker", "E": now_ms, "s": market.symbol}
    out.update((_TICKER_KEYS[k], v) for k, v in rest.items() if k in _TICKER_KEYS)
    return out


def book_ticker_event(market: Market, b: BookTicker) -> dict[str, Any]:
    return {"u": b.update_id, "s": market.symbol, "b": price_str(market, b.bid_price_ticks),
            "B": qty_str(market, b.bid_qty_lots), "a": price_str(market, b.ask_price_ticks),
            "A": qty_str(market, b.ask_qty_lots)}
