"""Binance public market-data endpoints, served from publish's read models in Redis.

exchangeInfo, depth, trades, klines, ticker/24hr, ticker/price, ticker/bookTicker,
avgPrice. Decimal strings as Binance prints them; times in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

import msgspec
from litestar import Request, Router, get

from api.context import ApiContext, api_context, page_of, pages_newest_first, price_str, qty_str, quote_str
from api.errors import ApiError
from api.klines import (
    BINANCE_INTERVALS,
    MAX_BASE_CANDLES,
    base_interval,
    build,
    time_zone_offset_ns,
    window_end,
    window_start,
)
from api.params import Params, read_params
from api.store import mget
from pipeline.agents.publish.candles import INTERVALS
from pipeline.agents.publish.messages import Candle, Trade
from pipeline.agents.publish.readmodel import bbo_key, candles_key, depth_id_key, depth_key, ticker_key
from pipeline.core.markets import Market

MS: Final = 1_000_000
DAY_MS: Final = 86_400_000
DEPTH_DEFAULT, DEPTH_MAX = 100, 5000
TRADES_DEFAULT, TRADES_MAX = 500, 1000
KLINES_DEFAULT, KLINES_MAX = 500, 1000
TRADES_SCAN_ENTRIES: Final = 5000
"""Most `market.trades` entries one `trades` request reads backwards (bounds its cost)."""
ORDER_TYPES: Final = ["LIMIT", "LIMIT_MAKER", "MARKET"]
STP_MODES: Final = ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]

_candle = msgspec.json.Decoder(Candle)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _hash(raw: dict[Any, Any]) -> dict[str, int]:
    return {_text(k): int(v) for k, v in raw.items()}


async def market_status(ctx: ApiContext, symbols: list[str]) -> dict[str, str]:
    """Each market's trading status: the operator's last `admin market` setting, else its spec."""
    values = await mget(ctx.client, [f"market:status:{s}" for s in symbols])
    return {s: _text(v) if v else ctx.markets[s].status for s, v in zip(symbols, values, strict=True)}


def _selected(ctx: ApiContext, params: Params) -> tuple[list[str], bool]:
    """(symbols, whether one was asked for): `symbol`, `symbols` or all markets."""
    symbol = params.symbol(required=False)
    symbols = params.symbols()
    if symbol and symbols:
        raise ApiError(-1101, "Parameter 'symbol' and 'symbols' cannot be sent together.")
    if symbol:
        ctx.market(symbol)
        return [symbol], True
    if symbols:
        for s in symbols:
            ctx.market(s)
        return symbols, False
    return sorted(ctx.markets), False


def symbol_info(market: Market, status: str) -> dict[str, Any]:
    spec = market.spec
    base, quote = market.base_asset, market.quote_asset
    max_notional = market.quote_amount(market.max_price_ticks, market.max_qty_lots)
    return {
        "symbol": spec.symbol, "status": status,
        "baseAsset": base.symbol, "baseAssetPrecision": base.decimals,
        "quoteAsset": quote.symbol, "quotePrecision": quote.decimals, "quoteAssetPrecision": quote.decimals,
        "baseCommissionPrecision": base.decimals, "quoteCommissionPrecision": quote.decimals,
        "orderTypes": ORDER_TYPES, "icebergAllowed": False, "ocoAllowed": False, "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": False, "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": price_str(market, market.min_price_ticks),
             "maxPrice": price_str(market, market.max_price_ticks), "tickSize": price_str(market, 1)},
            {"filterType": "LOT_SIZE", "minQty": qty_str(market, market.min_qty_lots),
             "maxQty": qty_str(market, market.max_qty_lots), "stepSize": qty_str(market, 1)},
            {"filterType": "NOTIONAL", "minNotional": quote_str(market, market.min_notional_quote),
             "applyMinToMarket": True, "maxNotional": quote_str(market, max_notional),
             "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE", "allowedSelfTradePreventionModes": STP_MODES,
        "makerCommission": str(Decimal(spec.maker_fee_ppm) / Decimal(1_000_000)),
        "takerCommission": str(Decimal(spec.taker_fee_ppm) / Decimal(1_000_000)),
    }


@get("/exchangeInfo")
async def exchange_info(request: Request[Any, Any, Any]) -> dict[str, Any]:
    ctx = api_context(request)
    params = await read_params(request)
    symbols, _ = _selected(ctx, params)
    status = await market_status(ctx, symbols)
    limits = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
               "limit": ctx.config.weight_per_minute}] if ctx.config.weight_per_minute else []
    return {"timezone": "UTC", "serverTime": ctx.now_ms(), "rateLimits": limits, "exchangeFilters": [],
            "symbols": [symbol_info(ctx.markets[s], status[s]) for s in symbols]}


async def market_request(request: Request[Any, Any, Any]) -> tuple[ApiContext, Params, Market]:
    """What every one-market endpoint reads first: the context, the parameters and the `symbol`'s market."""
    ctx = api_context(request)
    params = await read_params(request)
    symbol = params.symbol()
    assert symbol is not None
    return ctx, params, ctx.market(symbol)


@get("/depth")
async def depth(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The book from the read model: both sides and lastUpdateId read in one MULTI/EXEC (`read_book`)."""
    ctx, params, market = await market_request(request)
    symbol = market.symbol
    limit = params.integer("limit", low=1, high=DEPTH_MAX) or DEPTH_DEFAULT
    last_id, bids, asks = await read_book(ctx.client, symbol)
    return {"lastUpdateId": last_id,
            "bids": [[price_str(market, p), qty_str(market, q)] for p, q in bids[:limit]],
            "asks": [[price_str(market, p), qty_str(market, q)] for p, q in asks[:limit]]}


async def read_book(client: Any, symbol: str) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
    """(lastUpdateId, bids best first, asks best first) of the depth read model, in one MULTI/EXEC.

    The three keys carry the market's hash tag (``depth:{BTCUSDT}:bids|asks|id``), so on a
    cluster too they are in one slot and the transaction runs on the node serving it; publish
    writes them in one commit (on a cluster: one outbox entry for the slot, applied by one
    script), so the sides always match lastUpdateId.
    """
    async with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(depth_key(symbol, True))
        pipe.hgetall(depth_key(symbol, False))
        pipe.get(depth_id_key(symbol))
        raw_bids, raw_asks, raw_id = await pipe.execute()
    bids = sorted(((int(p), int(q)) for p, q in raw_bids.items() if int(q)), reverse=True)
    asks = sorted((int(p), int(q)) for p, q in raw_asks.items() if int(q))
    return int(raw_id or 0), bids, asks


def trade_json(market: Market, trade: Trade) -> dict[str, Any]:
    return {"id": trade.trade_id, "price": price_str(market, trade.price_ticks),
            "qty": qty_str(market, trade.qty_lots), "quoteQty": quote_str(market, trade.quote_amount),
            "time": trade.ts // MS, "isBuyerMaker": trade.buyer_is_maker, "isBestMatch": True}


async def scan_trades(ctx: ApiContext, symbol: str, enough: Callable[[list[Trade]], bool]) -> list[Trade]:
    """Trades of `symbol` read newest first from `market.trades` until `enough(found)` (or the scan bound).

    `found` is newest first; the result is oldest first. The stream is the recent
    history (older trades are in PostgreSQL).
    """
    topic = ctx.exchange.published.trades
    found: list[Trade] = []
    scanned = 0
    for stream in topic.streams:
        if enough(found) or scanned >= TRADES_SCAN_ENTRIES:
            break
        async for entries in pages_newest_first(ctx.client, stream, topic.batch_decoder.decode):
            for batch in entries:
                found.extend(reversed([t for t in batch if t.symbol == symbol]))
            scanned += len(entries)
            if enough(found) or scanned >= TRADES_SCAN_ENTRIES:
                break
    found.reverse()
    return found


async def recent_trades(ctx: ApiContext, symbol: str, limit: int) -> list[Trade]:
    """The newest `limit` trades of `symbol`, oldest first."""
    return (await scan_trades(ctx, symbol, lambda found: len(found) >= limit))[-limit:]


async def trades_from(ctx: ApiContext, symbol: str, from_id: int, limit: int) -> list[Trade]:
    """Up to `limit` trades of `symbol` with id >= `from_id`, oldest first."""
    found = await scan_trades(ctx, symbol, lambda found: bool(found) and found[-1].trade_id <= from_id)
    return [t for t in found if t.trade_id >= from_id][:limit]


async def _trades_query(request: Request[Any, Any, Any]) -> tuple[ApiContext, Params, str, Market, int]:
    """What every trades endpoint reads first: context, parameters, symbol, market and limit."""
    ctx, params, market = await market_request(request)
    symbol = market.symbol
    limit = params.integer("limit", low=1, high=TRADES_MAX) or TRADES_DEFAULT
    return ctx, params, symbol, market, limit


@get("/trades")
async def trades(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    ctx, _, symbol, market, limit = await _trades_query(request)
    return [trade_json(market, t) for t in await recent_trades(ctx, symbol, limit)]


@get("/historicalTrades")
async def historical_trades(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    """Trades from `fromId` (default: the most recent ones), as far back as the recent history goes."""
    ctx, params, symbol, market, limit = await _trades_query(request)
    from_id = params.integer("fromId", low=0)
    found = await (recent_trades(ctx, symbol, limit) if from_id is None else trades_from(ctx, symbol, from_id, limit))
    return [trade_json(market, t) for t in found]


def aggregate(found: list[Trade]) -> list[list[Trade]]:
    """Consecutive fills of one taker order at one price and time (Binance aggTrades)."""
    groups: list[list[Trade]] = []
    for t in found:
        if groups:
            last = groups[-1][-1]
            taker = (t.seller_order_id if t.buyer_is_maker else t.buyer_order_id)
            last_taker = (last.seller_order_id if last.buyer_is_maker else last.buyer_order_id)
            if (t.price_ticks, t.buyer_is_maker, t.ts, taker) == (last.price_ticks, last.buyer_is_maker, last.ts,
                                                                  last_taker):
                groups[-1].append(t)
                continue
        groups.append([t])
    return groups


@get("/aggTrades")
async def agg_trades(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    """Aggregate trades; an aggregate's id `a` is the id of its first trade."""
    ctx, params, symbol, market, limit = await _trades_query(request)
    from_id = params.integer("fromId", low=0)
    start = params.integer("startTime", low=0)
    end = params.integer("endTime", low=0)
    if start is not None and end is not None and not 0 <= end - start <= 3_600_000:
        raise ApiError(-1128, "Combination of optional parameters invalid.")
    if from_id is not None:
        found = await scan_trades(ctx, symbol, lambda f: bool(f) and f[-1].trade_id < from_id)
        found = [t for t in found if t.trade_id >= from_id]
    elif start is not None:
        found = await scan_trades(ctx, symbol, lambda f: bool(f) and f[-1].ts // MS < start)
        found = [t for t in found if t.ts // MS >= start and (end is None or t.ts // MS <= end)]
    else:
        found = await scan_trades(ctx, symbol, lambda f: len(f) >= limit * 4 or (end is not None and bool(f)
                                                                                 and f[-1].ts // MS < end - 3_600_000))
        found = [t for t in found if end is None or t.ts // MS <= end]
    groups = aggregate(found)
    groups = page_of(groups, limit, from_start=from_id is not None or start is not None)
    return [{"a": g[0].trade_id, "p": price_str(market, g[0].price_ticks),
             "q": qty_str(market, sum(t.qty_lots for t in g)), "f": g[0].trade_id, "l": g[-1].trade_id,
             "T": g[0].ts // MS, "m": g[0].buyer_is_maker, "M": True} for g in groups]


def kline_row(market: Market, c: Candle) -> list[Any]:
    return [c.open_ts // MS, price_str(market, c.open_ticks), price_str(market, c.high_ticks),
            price_str(market, c.low_ticks), price_str(market, c.close_ticks), qty_str(market, c.volume_lots),
            c.close_ts // MS, quote_str(market, c.quote_volume), c.trades, qty_str(market, 0),
            quote_str(market, 0), "0"]


def fill_gaps(candles: list[Candle], length: int) -> list[Candle]:
    """Windows without trades between two candles, as flat candles at the previous close."""
    out: list[Candle] = []
    for candle in candles:
        if out:
            prev = out[-1]
            start = prev.open_ts + length
            while start < candle.open_ts:
                p = prev.close_ticks
                out.append(Candle(prev.ts, prev.symbol, prev.interval, start, start + length - 1, p, p, p, p,
                                  0, 0, 0, 0, 0, True))
                start += length
        out.append(candle)
    return out


@get("/klines")
async def klines(request: Request[Any, Any, Any]) -> list[list[Any]]:
    """Binance klines: every Binance interval and `timeZone` (`api.klines`); `limit` above 1000 reads as 1000."""
    ctx, params, market = await market_request(request)
    symbol = market.symbol
    interval = params.req("interval")
    offset = time_zone_offset_ns(params.text("timeZone"))
    base = base_interval(interval, offset)
    start = params.integer("startTime", low=0)
    end = params.integer("endTime", low=0)
    limit = min(params.integer("limit", low=1) or KLINES_DEFAULT, KLINES_MAX)  # Binance caps it, not refuses
    if start is not None and end is not None and start > end:
        raise ApiError(-1102, "startTime must be less than endTime.")
    direct = base == interval and offset == 0
    per_window = 1 if direct else -(-BINANCE_INTERVALS[interval] // INTERVALS[base])
    count = min(limit * per_window + per_window, MAX_BASE_CANDLES)
    window_of = window_start(interval, offset)
    low_ms = None if start is None else window_of(start * MS) // MS
    candles = await _read_candles(ctx, symbol, base, low_ms, end, count)
    if not direct:
        cut = len(candles) >= count
        first = window_of(candles[0].open_ts) if candles else 0
        complete_from = first if not cut or start is not None or candles[0].open_ts == first else (
            window_end(interval, offset, first) + 1)
        candles = fill_gaps(candles, INTERVALS[base])
        built = build(candles, interval, offset, complete_from)
        if cut and start is not None and built and built[-1].close_ts > candles[-1].close_ts:
            built.pop()  # the read stopped inside the last window
        candles = built
    else:
        candles = fill_gaps(candles, INTERVALS[interval])
    if end is not None:
        candles = [c for c in candles if c.open_ts // MS <= end]
    if start is not None:
        candles = [c for c in candles if c.close_ts // MS >= start]
    candles = page_of(candles, limit, from_start=start is not None)
    return [kline_row(market, c) for c in candles]


async def _read_candles(ctx: ApiContext, symbol: str, interval: str, low_ms: int | None, end_ms: int | None,
                        count: int) -> list[Candle]:
    """Up to `count` kept `interval` candles: the first from `low_ms` on, else the newest up to `end_ms`."""
    key = candles_key(symbol, interval)
    low = "-inf" if low_ms is None else str(low_ms - INTERVALS[interval] // MS + 1)
    high = "+inf" if end_ms is None else str(end_ms)
    if low_ms is not None:
        raw = await ctx.client.zrangebyscore(key, low, high, start=0, num=count)
    else:
        raw = list(reversed(await ctx.client.zrevrangebyscore(key, high, low, start=0, num=count)))
    return [_candle.decode(m) for m in raw]


async def _tickers(ctx: ApiContext, symbols: list[str]) -> list[tuple[dict[str, int], dict[str, int]]]:
    async with ctx.client.pipeline(transaction=False) as pipe:
        for s in symbols:
            pipe.hgetall(ticker_key(s))
            pipe.hgetall(bbo_key(s))
        raw = await pipe.execute()
    return [(_hash(raw[2 * i]), _hash(raw[2 * i + 1])) for i in range(len(symbols))]


def ticker_24hr(market: Market, t: dict[str, int], b: dict[str, int], now_ms: int, mini: bool) -> dict[str, Any]:
    live = bool(t) and t.get("close_ts", 0) // MS > now_ms - DAY_MS
    window = t if live else {}

    def g(name: str) -> int:
        return window.get(name, 0)

    last = t.get("last_ticks", 0)
    open_ticks = g("open_ticks")
    volume, quote_volume = g("volume_lots"), g("quote_volume")
    out: dict[str, Any] = {"symbol": market.symbol}
    if not mini:
        change = (last - open_ticks) if live else 0
        pct = (Decimal(change) * 100 / Decimal(open_ticks)) if open_ticks else Decimal(0)
        avg = (market.quote_asset.from_units(quote_volume) / market.lots_to_qty(volume)) if volume else Decimal(0)
        out.update({"priceChange": price_str(market, change) if change >= 0 else "-" + price_str(market, -change),
                    "priceChangePercent": f"{pct:.3f}", "weightedAvgPrice": f"{avg:.8f}",
                    "prevClosePrice": price_str(market, open_ticks)})
    out["lastPrice"] = price_str(market, last)
    if not mini:
        out.update({"lastQty": qty_str(market, t.get("last_qty_lots", 0)), **book_json(market, b)})
    out.update({"openPrice": price_str(market, open_ticks), "highPrice": price_str(market, g("high_ticks")),
                "lowPrice": price_str(market, g("low_ticks")), "volume": qty_str(market, volume),
                "quoteVolume": quote_str(market, quote_volume),
                "openTime": g("open_ts") // MS if live else now_ms - DAY_MS,
                "closeTime": g("close_ts") // MS if live else now_ms,
                "firstId": g("first_trade_id") if live else -1, "lastId": g("last_trade_id") if live else -1,
                "count": g("trades")})
    return out


TickerRow = Callable[[Market, dict[str, int], dict[str, int]], dict[str, Any]]


async def _ticker_rows(request: Request[Any, Any, Any], params: Params, row: TickerRow) -> Any:
    """`row(market, ticker, book ticker)` of the asked market (`symbol`), of several (`symbols`) or of all."""
    ctx = api_context(request)
    symbols, single = _selected(ctx, params)
    rows = [row(ctx.markets[s], t, b) for s, (t, b) in zip(symbols, await _tickers(ctx, symbols), strict=True)]
    return rows[0] if single else rows


def book_json(market: Market, b: dict[str, int]) -> dict[str, Any]:
    """Best bid and offer (bookTicker; also part of ticker/24hr)."""
    return {"bidPrice": price_str(market, b.get("bid_price_ticks", 0)),
            "bidQty": qty_str(market, b.get("bid_qty_lots", 0)),
            "askPrice": price_str(market, b.get("ask_price_ticks", 0)),
            "askQty": qty_str(market, b.get("ask_qty_lots", 0))}


@get("/ticker/24hr")
async def ticker_24h(request: Request[Any, Any, Any]) -> Any:
    params = await read_params(request)
    kind = params.text("type") or "FULL"
    if kind not in ("FULL", "MINI"):
        raise ApiError(-1100, "Illegal characters found in parameter 'type'; legal range is 'FULL, MINI'.")
    now = api_context(request).now_ms()
    return await _ticker_rows(request, params, lambda m, t, b: ticker_24hr(m, t, b, now, kind == "MINI"))


@get("/ticker/price")
async def ticker_price(request: Request[Any, Any, Any]) -> Any:
    return await _ticker_rows(request, await read_params(request),
                              lambda m, t, _: {"symbol": m.symbol, "price": price_str(m, t.get("last_ticks", 0))})


@get("/ticker/bookTicker")
async def book_ticker(request: Request[Any, Any, Any]) -> Any:
    return await _ticker_rows(request, await read_params(request),
                              lambda m, _, b: {"symbol": m.symbol, **book_json(m, b)})


@get("/avgPrice")
async def avg_price(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Volume-weighted price of the last 5 minutes (from the 1m candles), else the last price."""
    ctx, _, market = await market_request(request)
    symbol = market.symbol
    now = ctx.now_ms()
    raw = await ctx.client.zrangebyscore(candles_key(symbol, "1m"), str(now - 5 * 60_000 - 59_999), "+inf")
    candles = [_candle.decode(m) for m in raw]
    volume = sum(c.volume_lots for c in candles)
    if volume:
        price = market.quote_asset.from_units(sum(c.quote_volume for c in candles)) / market.lots_to_qty(volume)
        text = f"{price:.{market.quote_asset.decimals}f}"
        close = max(c.close_ts for c in candles) // MS
    else:
        last = int((await ctx.client.hget(ticker_key(symbol), "last_ticks")) or 0)
        text, close = price_str(market, last), now
    return {"mins": 5, "price": text, "closeTime": close}


public_router = Router(path="/api/v3", route_handlers=[
    exchange_info, depth, trades, historical_trades, agg_trades, klines, ticker_24h, ticker_price, book_ticker,
    avg_price])
