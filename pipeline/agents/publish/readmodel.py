"""The Redis keys publish writes and how their values are encoded (see the package docstring).

Each function returns the commands (`pipeline.transport.base.WRITE_COMMANDS`) that
bring one read model up to date; the agent adds them to its batch with
`stream.write`, so they commit atomically with the batch's outputs and offsets.
Integers are written as decimal strings (Redis's own integer form); structured
values are the JSON encoding of a msgspec Struct (field names as in the Struct),
passed as `str` so that the Redis transport ships every write in its one-argument
msgpack form without a per-value conversion.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import msgspec

from pipeline.agents.publish.candles import INTERVALS
from pipeline.agents.publish.depth import LevelKey
from pipeline.agents.publish.messages import BookTicker, Candle, OrderView, Ticker

Write = tuple[str | bytes, ...]

CANDLES_KEPT: Final = 1000
"""Candles kept per (market, interval): those whose window opened within the last 1000 intervals."""

MS: Final = 1_000_000

_json = msgspec.json.Encoder()
_encode = _json.encode


def _json_text(value: Any) -> str:
    return _encode(value).decode()


class BalanceView(msgspec.Struct, frozen=True, gc=False):
    """One asset's balance in ``balances:<account_id>``: minimal units."""

    available: int
    locked: int


# ------------------------------------------------------------------ key names
# A market's keys carry its symbol as a hash tag (``{BTCUSDT}``, literal braces), on one server too:
# on a cluster they share one slot, so publish's writes of one market apply in one script and the
# API reads them in one MULTI/EXEC (see the package docstring).


def market_tag(symbol: str) -> str:
    """The hash tag of every read-model key of `symbol` (braces included)."""
    return f"{{{symbol}}}"


def depth_key(symbol: str, is_bid: bool) -> str:
    """``depth:{SYMBOL}:bids`` / ``depth:{SYMBOL}:asks``."""
    return f"depth:{market_tag(symbol)}:{'bids' if is_bid else 'asks'}"


def depth_id_key(symbol: str) -> str:
    """``depth:{SYMBOL}:id``."""
    return f"depth:{market_tag(symbol)}:id"


def bbo_key(symbol: str) -> str:
    """``bbo:{SYMBOL}``."""
    return f"bbo:{market_tag(symbol)}"


def ticker_key(symbol: str) -> str:
    """``ticker:{SYMBOL}``."""
    return f"ticker:{market_tag(symbol)}"


def candles_key(symbol: str, interval: str) -> str:
    """``candles:{SYMBOL}:<interval>``."""
    return f"candles:{market_tag(symbol)}:{interval}"


def market_keys(symbol: str, intervals: Iterable[str] = INTERVALS) -> list[str]:
    """Every read-model key of one market (all in the slot of its tag)."""
    return [depth_key(symbol, True), depth_key(symbol, False), depth_id_key(symbol), bbo_key(symbol),
            ticker_key(symbol), *(candles_key(symbol, i) for i in intervals)]


def open_orders_key(account_id: int) -> str:
    return f"orders:open:{account_id}"


def open_order_field(symbol: str, order_id: int) -> str:
    return f"{symbol}:{order_id}"


def order_key(symbol: str, order_id: int) -> str:
    return f"order:{symbol}:{order_id}"


def client_ids_key(account_id: int, symbol: str) -> str:
    return f"clientid:{account_id}:{symbol}"


def balances_key(account_id: int) -> str:
    return f"balances:{account_id}"


# ------------------------------------------------------------------ writes


def depth_writes(symbol: str, changed: dict[LevelKey, int], update_id: int) -> list[Write]:
    """Changed levels of one market (HSET lots / HDEL gone levels) and its last update id."""
    out: list[Write] = []
    for is_bid in (True, False):
        put: list[str] = []
        gone: list[str] = []
        for (side, price), lots in changed.items():
            if side is is_bid:
                if lots:
                    put += (str(price), str(lots))
                else:
                    gone.append(str(price))
        if put:
            out.append(("HSET", depth_key(symbol, is_bid), *put))
        if gone:
            out.append(("HDEL", depth_key(symbol, is_bid), *gone))
    out.append(("SET", depth_id_key(symbol), str(update_id)))
    return out


def depth_snapshot_writes(symbol: str, bids: Iterable[tuple[int, int]], asks: Iterable[tuple[int, int]],
                          update_id: int) -> list[Write]:
    """The whole book of one market (both sides replaced) and its last update id: publish's start-up write."""
    out: list[Write] = [("DEL", depth_key(symbol, True)), ("DEL", depth_key(symbol, False))]
    for is_bid, levels in ((True, bids), (False, asks)):
        put = [part for price, lots in levels for part in (str(price), str(lots))]
        if put:
            out.append(("HSET", depth_key(symbol, is_bid), *put))
    out.append(("SET", depth_id_key(symbol), str(update_id)))
    return out


def bbo_top_writes(symbol: str, update_id: int, top: tuple[int, int, int, int]) -> list[Write]:
    """``bbo:{SYMBOL}``'s prices, quantities and update id (not ``ts``): publish's start-up write."""
    bid, bid_lots, ask, ask_lots = top
    return [("HSET", bbo_key(symbol), "update_id", str(update_id), "bid_price_ticks", str(bid),
             "bid_qty_lots", str(bid_lots), "ask_price_ticks", str(ask), "ask_qty_lots", str(ask_lots))]


def _fields(message: Any) -> list[str]:
    """name, str(value), ... of every field but the symbol (field names cached per Struct class)."""
    names = _FIELD_NAMES.get(type(message))
    if names is None:
        names = _FIELD_NAMES[type(message)] = type(message).__struct_fields__
    return [part for name, value in zip(names, msgspec.structs.astuple(message), strict=True)
            if name != "symbol" for part in (name, str(value))]


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def bbo_writes(ticker: BookTicker) -> list[Write]:
    """``bbo:{SYMBOL}``: the BookTicker's fields."""
    return [("HSET", bbo_key(ticker.symbol), *_fields(ticker))]


def ticker_writes(ticker: Ticker) -> list[Write]:
    """``ticker:{SYMBOL}``: the Ticker's fields."""
    return [("HSET", ticker_key(ticker.symbol), *_fields(ticker))]


def candle_writes(candles: Iterable[Candle]) -> list[Write]:
    """Replace each candle's member (score: open time in ms), then trim to the last `CANDLES_KEPT` intervals."""
    out: list[Write] = []
    newest: dict[str, Candle] = {}
    for candle in candles:
        key = candles_key(candle.symbol, candle.interval)
        score = str(candle.open_ts // MS)
        out.append(("ZREMRANGEBYSCORE", key, score, score))
        out.append(("ZADD", key, score, _encode(candle).decode()))
        newest[key] = candle
    for key, candle in newest.items():
        horizon = (candle.open_ts - CANDLES_KEPT * INTERVALS[candle.interval]) // MS
        out.append(("ZREMRANGEBYSCORE", key, "-inf", str(horizon)))
    return out


def order_writes(view: OrderView, was_open: bool, is_open: bool, new_client_id: bool) -> list[Write]:
    """``order:*`` always; ``orders:open:*`` while open (HDEL after); ``clientid:*`` when first seen."""
    data = _encode(view).decode()
    symbol, order_id = view.symbol, view.order_id
    out: list[Write] = [("SET", f"order:{symbol}:{order_id}", data)]
    if is_open:
        out.append(("HSET", f"orders:open:{view.account_id}", f"{symbol}:{order_id}", data))
    elif was_open:
        out.append(("HDEL", f"orders:open:{view.account_id}", f"{symbol}:{order_id}"))
    if new_client_id and view.client_order_id:
        out.append(("HSET", f"clientid:{view.account_id}:{symbol}", view.client_order_id, str(order_id)))
    return out


def balance_writes(account_id: int, balances: dict[str, tuple[int, int]]) -> list[Write]:
    """``balances:<account_id>``: asset -> JSON `BalanceView`."""
    fields: list[str | bytes] = []
    for asset, (available, locked) in balances.items():
        # the JSON of BalanceView(available, locked), spelled out: msgspec writes ints the same way
        fields += (asset, f'{{"available":{available},"locked":{locked}}}')
    return [("HSET", balances_key(account_id), *fields)] if fields else []
