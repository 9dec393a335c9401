"""Binance signed trading endpoints: order (new, test, query, cancel), openOrders, allOrders, myTrades, account.

Every query is scoped to the authenticated account: an order of another account is
"Order does not exist." (-2013) to a query and "Unknown order sent." (-2011) to a cancel.

Order ids are assigned per market with Redis INCRBY (``orderid:{SYMBOL}``) by the
command writer, for a whole group-committed batch at once, before it is written.
``newOrderRespType`` ACK answers once the command is durably in ``orders.in``;
RESULT and FULL (Binance's default for LIMIT and MARKET) then wait, at most
`ApiConfig.result_timeout_s`, for the order to show in the read model; on timeout
the answer is -1007 (503) naming the order id: it is queued, not lost.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, Final, NamedTuple, TypeVar

import msgspec
from litestar import Request, Router, delete, get, post

from api.accounts import ApiKey
from api.auth import authenticate
from api.context import (
    ApiContext,
    api_context,
    fmt,
    page_of,
    pages_newest_first,
    price_str,
    qty_str,
    quote_str,
    units_str,
)
from api.errors import ORDER_DOES_NOT_EXIST, UNKNOWN_ORDER, ApiError, illegal, mandatory, not_required, rejection
from api.params import Params, read_params
from api.store import mget
from api.writer import order_id_key
from pipeline.agents.publish.messages import OrderUpdate, OrderView
from pipeline.agents.publish.readmodel import BalanceView
from pipeline.core.markets import PPM, Market
from pipeline.core.messages import CancelAll, CancelOrder, PlaceOrder
from pipeline.core.validation import check_order

MS: Final = 1_000_000
CLIENT_ID_RE: Final = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
CLIENT_ID_LEGAL: Final = "^[\\.A-Z\\:/a-z0-9_-]{1,36}$"
OPEN: Final = frozenset({"NEW", "PARTIALLY_FILLED"})
USER_SCAN_ENTRIES: Final = 5000
"""Most `user.events` entries read backwards for fills (myTrades, FULL): recent history only."""

_view = msgspec.json.Decoder(OrderView)
_balance = msgspec.json.Decoder(BalanceView)
T = TypeVar("T")


async def signed_request(request: Request[Any, Any, Any], permission: str) -> tuple[ApiContext, Params, ApiKey]:
    """(the API context, the parameters, the API key) of a correctly signed request allowed `permission`."""
    ctx = api_context(request)
    params = await read_params(request)
    key = await authenticate(ctx.client, request.headers, params, permission, keys=ctx.keys)
    return ctx, params, key


async def wait_for(probe: Callable[[], Awaitable[T | None]], timeout: float) -> T | None:
    """Poll `probe` (1 ms, growing to 20 ms) until it returns a value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = await probe()
        if value is not None or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)


def timeout_error(market: Market, order_id: int, what: str) -> ApiError:
    return ApiError(-1007, "Timeout waiting for response from backend server. Send status unknown; execution "
                           f"status unknown. ({what} of orderId {order_id} on {market.symbol} was durably queued; "
                           "query it with GET /api/v3/order.)", 503)


# ------------------------------------------------------------------ read-model access


async def load_view(ctx: ApiContext, symbol: str, order_id: int) -> OrderView | None:
    raw = await ctx.client.get(f"order:{symbol}:{order_id}")
    return _view.decode(raw) if raw else None


async def find_order(ctx: ApiContext, account_id: int, market: Market, order_id: int | None,
                     client_id: str | None, wait: bool) -> OrderView | None:
    """The account's order by id or client id; waits briefly for an acknowledged id not yet published."""
    symbol = market.symbol
    if order_id is None:
        raw = await ctx.client.hget(f"clientid:{account_id}:{symbol}", client_id)
        if raw is None:
            return None
        order_id = int(raw)
    view = await load_view(ctx, symbol, order_id)
    if view is None and wait and order_id <= int(await ctx.client.get(order_id_key(symbol)) or 0):
        oid = order_id
        view = await wait_for(lambda: load_view(ctx, symbol, oid), ctx.config.lookup_wait_s)
    if view is None or view.account_id != account_id:
        return None
    if client_id is not None and view.client_order_id != client_id:
        return None
    return view


def _order_ref(params: Params) -> tuple[int | None, str | None]:
    order_id = params.integer("orderId", low=1)
    client_id = params.text("origClientOrderId")
    if order_id is None and client_id is None:
        raise ApiError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
    return order_id, client_id


# ------------------------------------------------------------------ JSON shapes


def order_json(market: Market, v: OrderView) -> dict[str, Any]:
    """GET /api/v3/order (and openOrders, allOrders) shape."""
    return {"symbol": v.symbol, "orderId": v.order_id, "orderListId": -1, "clientOrderId": v.client_order_id,
            "price": price_str(market, v.price_ticks), "origQty": qty_str(market, v.qty_lots),
            "executedQty": qty_str(market, v.filled_lots), "cummulativeQuoteQty": quote_str(market, v.filled_quote),
            "status": v.status, "timeInForce": v.time_in_force, "type": v.order_type, "side": v.side,
            "stopPrice": price_str(market, 0), "icebergQty": qty_str(market, 0), "time": v.created_ts // MS,
            "updateTime": v.updated_ts // MS, "isWorking": True, "workingTime": v.created_ts // MS,
            "origQuoteOrderQty": quote_str(market, v.quote_qty), "selfTradePreventionMode": "NONE"}


def result_json(market: Market, v: OrderView, transact_ms: int, stp: str) -> dict[str, Any]:
    """POST /api/v3/order RESULT shape."""
    return {"symbol": v.symbol, "orderId": v.order_id, "orderListId": -1, "clientOrderId": v.client_order_id,
            "transactTime": transact_ms, "price": price_str(market, v.price_ticks),
            "origQty": qty_str(market, v.qty_lots), "executedQty": qty_str(market, v.filled_lots),
            "origQuoteOrderQty": quote_str(market, v.quote_qty),
            "cummulativeQuoteQty": quote_str(market, v.filled_quote), "status": v.status,
            "timeInForce": v.time_in_force, "type": v.order_type, "side": v.side, "workingTime": transact_ms,
            "selfTradePreventionMode": stp}


def cancel_json(market: Market, v: OrderView, cancel_client_id: str, transact_ms: int) -> dict[str, Any]:
    return {"symbol": v.symbol, "origClientOrderId": v.client_order_id, "orderId": v.order_id, "orderListId": -1,
            "clientOrderId": cancel_client_id, "transactTime": transact_ms,
            "price": price_str(market, v.price_ticks), "origQty": qty_str(market, v.qty_lots),
            "executedQty": qty_str(market, v.filled_lots), "origQuoteOrderQty": quote_str(market, v.quote_qty),
            "cummulativeQuoteQty": quote_str(market, v.filled_quote), "status": v.status,
            "timeInForce": v.time_in_force, "type": v.order_type, "side": v.side,
            "selfTradePreventionMode": "NONE"}


# ------------------------------------------------------------------ new order


def client_order_id_param(params: Params, name: str) -> str:
    value = params.text(name)
    if value is None:
        return secrets.token_urlsafe(16)[:22]
    if not CLIENT_ID_RE.match(value):
        raise illegal(name, CLIENT_ID_LEGAL)
    return value


def parse_order(ctx: ApiContext, params: Params, account_id: int) -> tuple[PlaceOrder, Market, str, str]:
    """(the command with order_id 0, its market, newOrderRespType, STP mode), or the Binance error."""
    symbol = params.symbol()
    assert symbol is not None
    market = ctx.market(symbol)
    side = params.req("side")
    if side not in ("BUY", "SELL"):
        raise ApiError(-1117, "Invalid side.")
    order_type = params.req("type")
    if order_type not in ("LIMIT", "MARKET", "LIMIT_MAKER"):
        raise ApiError(-1116, "Invalid orderType.")
    for unsupported in ("stopPrice", "icebergQty", "trailingDelta", "strategyId", "strategyType"):
        if unsupported in params:
            raise not_required(unsupported)
    tif = params.text("timeInForce")
    if order_type == "LIMIT":
        if tif is None:
            raise mandatory("timeInForce")
        if tif not in ("GTC", "IOC", "FOK"):
            raise ApiError(-1115, "Invalid timeInForce.")
    elif tif is not None:
        raise not_required("timeInForce")
    price = params.decimal("price", required=order_type != "MARKET")
    qty = params.decimal("quantity")
    quote_qty = params.decimal("quoteOrderQty")
    if order_type == "MARKET":
        if price is not None:
            raise not_required("price")
        if qty is None and quote_qty is None:
            raise ApiError(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
        if qty is not None and quote_qty is not None:
            raise not_required("quoteOrderQty")
    else:
        if qty is None:
            raise mandatory("quantity")
        if quote_qty is not None:
            raise not_required("quoteOrderQty")
    resp_type = params.text("newOrderRespType") or "FULL"
    if resp_type not in ("ACK", "RESULT", "FULL"):
        raise illegal("newOrderRespType", "ACK, RESULT, FULL")
    stp = params.text("selfTradePreventionMode") or "NONE"
    if stp not in ("NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"):
        raise illegal("selfTradePreventionMode", "NONE, EXPIRE_TAKER, EXPIRE_MAKER, EXPIRE_BOTH")
    client_id = client_order_id_param(params, "newClientOrderId")
    price_ticks = qty_lots = quote_units = 0
    if price is not None:
        ticks = market.price_to_ticks(price)
        if ticks is None:
            raise rejection("PRICE_FILTER")
        price_ticks = ticks
    if qty is not None:
        lots = market.qty_to_lots(qty)
        if lots is None:
            raise rejection("LOT_SIZE")
        qty_lots = lots
    if quote_qty is not None:
        units = market.quote_asset.to_units(quote_qty)
        if units is None or units <= 0:
            raise ApiError(-1111, "Parameter 'quoteOrderQty' has too much precision.")
        quote_units = units
    order = PlaceOrder(ts=time.time_ns(), account_id=account_id, symbol=symbol, order_id=1,
                       client_order_id=client_id, side=side, order_type=order_type,  # type: ignore[arg-type]
                       time_in_force=tif or "GTC", price_ticks=price_ticks,  # type: ignore[arg-type]
                       qty_lots=qty_lots, quote_qty=quote_units, stp_mode=stp)  # type: ignore[arg-type]
    # The filters as the validate agent checks them; the trading status is the pipeline's to check.
    reason = check_order(order, market.with_status("TRADING"))
    if reason is not None:
        raise rejection(reason)
    return order, market, resp_type, stp


async def user_fills(ctx: ApiContext, account_id: int, symbol: str, order_id: int | None = None,
                     limit: int = 1000) -> list[OrderUpdate]:
    """The account's recent fills (TRADE reports) in `symbol`, oldest first, from `user.events`."""
    topic = ctx.exchange.published.user
    found: list[OrderUpdate] = []
    scanned = 0
    async for entries in pages_newest_first(ctx.client, topic.stream(topic.partition_for(account_id)),
                                            topic.batch_decoder.decode):
        for batch in entries:
            found.extend(reversed([u for u in batch if type(u) is OrderUpdate and u.execution_type == "TRADE"
                                   and u.trade_id and u.account_id == account_id and u.symbol == symbol
                                   and (order_id is None or u.order_id == order_id)]))
        scanned += len(entries)
        if len(found) >= limit or scanned >= USER_SCAN_ENTRIES or (order_id is not None and found):
            break  # (an order's fills are written together)
    found = found[:limit]
    found.reverse()
    return found


def fill_json(market: Market, f: OrderUpdate) -> dict[str, Any]:
    return {"price": price_str(market, f.last_price_ticks), "qty": qty_str(market, f.last_qty_lots),
            "commission": quote_str(market, f.commission), "commissionAsset": f.commission_asset,
            "tradeId": f.trade_id}


async def place_order(ctx: ApiContext, params: Params, key: ApiKey, *, test: bool = False) -> dict[str, Any]:
    """A new order (POST /api/v3/order, WebSocket `order.place`): its answer, or an ApiError."""
    order, market, resp_type, stp = parse_order(ctx, params, key.account_id)
    if test:
        return {}
    ts = time.time_ns()
    _, order = await ctx.writer.write_new(key.account_id, market.symbol,
                                          lambda oid: msgspec.structs.replace(order, order_id=oid, ts=ts))
    order_id = order.order_id
    transact = order.ts // MS
    if resp_type == "ACK":
        return {"symbol": market.symbol, "orderId": order_id, "orderListId": -1,
                "clientOrderId": order.client_order_id, "transactTime": transact}
    final_needed = order.order_type == "MARKET" or order.time_in_force != "GTC"

    async def outcome() -> OrderView | None:
        view = await load_view(ctx, market.symbol, order_id)
        if view is None or (final_needed and view.status in OPEN):
            return None
        return view

    view = await wait_for(outcome, ctx.config.result_timeout_s)
    if view is None:
        raise timeout_error(market, order_id, "the new order")
    if view.status == "REJECTED":
        raise rejection(view.reason)
    out = result_json(market, view, transact, stp)
    if resp_type == "FULL":
        fills = await user_fills(ctx, key.account_id, market.symbol, order_id) if view.filled_lots else []
        out["fills"] = [fill_json(market, f) for f in fills]
    return out


@post("/order", status_code=200)
async def new_order(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return await place_order(*await signed_request(request, "trade"))


@post("/order/test", status_code=200)
async def test_order(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return await place_order(*await signed_request(request, "trade"), test=True)


# ------------------------------------------------------------------ query and cancel


async def order_status(ctx: ApiContext, params: Params, key: ApiKey) -> dict[str, Any]:
    """One of the account's orders (GET /api/v3/order, WebSocket `order.status`)."""
    symbol = params.symbol()
    assert symbol is not None
    market = ctx.market(symbol)
    order_id, client_id = _order_ref(params)
    view = await find_order(ctx, key.account_id, market, order_id, client_id, wait=True)
    if view is None:
        raise ApiError(*ORDER_DOES_NOT_EXIST)
    return order_json(market, view)


@get("/order")
async def query_order(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return await order_status(*await signed_request(request, "read"))


async def _ended(ctx: ApiContext, symbol: str, order_ids: list[int]) -> list[OrderView] | None:
    raw = await mget(ctx.client, [f"order:{symbol}:{i}" for i in order_ids])
    views = [_view.decode(r) for r in raw if r]
    if len(views) < len(order_ids) or any(v.status in OPEN for v in views):
        return None
    return views


async def cancel_one(ctx: ApiContext, params: Params, key: ApiKey) -> dict[str, Any]:
    """Cancel one of the account's open orders (DELETE /api/v3/order, WebSocket `order.cancel`)."""
    symbol = params.symbol()
    assert symbol is not None
    market = ctx.market(symbol)
    order_id, client_id = _order_ref(params)
    cancel_id = client_order_id_param(params, "newClientOrderId")
    view = await find_order(ctx, key.account_id, market, order_id, client_id, wait=True)
    if view is None or view.status not in OPEN:
        raise ApiError(*UNKNOWN_ORDER)
    ts = time.time_ns()
    await ctx.writer.write(key.account_id, CancelOrder(ts, key.account_id, symbol, view.order_id))
    ended = await wait_for(lambda: _ended(ctx, symbol, [view.order_id]), ctx.config.result_timeout_s)
    if ended is None:
        raise timeout_error(market, view.order_id, "the cancel")
    if ended[0].status != "CANCELED":
        raise ApiError(*UNKNOWN_ORDER)
    return cancel_json(market, ended[0], cancel_id, ts // MS)


@delete("/order", status_code=200)
async def cancel_order(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return await cancel_one(*await signed_request(request, "trade"))


async def _open_views(ctx: ApiContext, account_id: int, symbol: str | None) -> list[OrderView]:
    raw = await ctx.client.hgetall(f"orders:open:{account_id}")
    views = [_view.decode(v) for v in raw.values()]
    return sorted((v for v in views if symbol is None or v.symbol == symbol), key=lambda v: (v.symbol, v.order_id))


@get("/openOrders")
async def open_orders(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    ctx, params, key = await signed_request(request, "read")
    symbol = params.symbol(required=False)
    if symbol is not None:
        ctx.market(symbol)
    return [order_json(ctx.markets[v.symbol], v) for v in await _open_views(ctx, key.account_id, symbol)]


@delete("/openOrders", status_code=200)
async def cancel_open_orders(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    ctx, params, key = await signed_request(request, "trade")
    symbol = params.symbol()
    assert symbol is not None
    market = ctx.market(symbol)
    views = await _open_views(ctx, key.account_id, symbol)
    if not views:
        raise ApiError(*UNKNOWN_ORDER)
    ts = time.time_ns()
    await ctx.writer.write(key.account_id, CancelAll(ts, key.account_id, symbol))
    ids = [v.order_id for v in views]
    ended = await wait_for(lambda: _ended(ctx, symbol, ids), ctx.config.result_timeout_s)
    if ended is None:
        raise timeout_error(market, ids[0], "the cancel of all open orders")
    return [cancel_json(market, v, v.client_order_id, ts // MS) for v in ended if v.status == "CANCELED"]


class History(NamedTuple):
    """A signed query of an account's history in one market (allOrders, myTrades)."""

    ctx: ApiContext
    params: Params
    key: ApiKey
    market: Market
    start: int | None
    end: int | None
    limit: int

    def within(self, ts_ns: int) -> bool:
        """Whether a time (ns) is in the query's [startTime, endTime] (ms)."""
        ms = ts_ns // MS
        return (self.start is None or ms >= self.start) and (self.end is None or ms <= self.end)


async def history_request(request: Request[Any, Any, Any]) -> History:
    ctx, params, key = await signed_request(request, "read")
    symbol = params.symbol()
    assert symbol is not None
    return History(ctx, params, key, ctx.market(symbol), params.integer("startTime", low=0),
                   params.integer("endTime", low=0), params.integer("limit", low=1, high=1000) or 500)


@get("/allOrders")
async def all_orders(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    """The account's orders in one market (from its client-id map; a reused client id shows its latest order)."""
    q = await history_request(request)
    symbol, account_id = q.market.symbol, q.key.account_id
    from_id = q.params.integer("orderId", low=0)
    ids = sorted({int(v) for v in (await q.ctx.client.hgetall(f"clientid:{account_id}:{symbol}")).values()})
    if from_id is not None:
        ids = [i for i in ids if i >= from_id]
    raw = await mget(q.ctx.client, [f"order:{symbol}:{i}" for i in ids])
    views = [v for v in (_view.decode(r) for r in raw if r) if v.account_id == account_id and q.within(v.created_ts)]
    return [order_json(q.market, v) for v in page_of(views, q.limit, from_start=from_id is not None or
                                                      q.start is not None)]


@get("/myTrades")
async def my_trades(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    """The account's recent trades in one market (recent `user.events` history; older ones need PostgreSQL)."""
    q = await history_request(request)
    market, symbol = q.market, q.market.symbol
    order_id = q.params.integer("orderId", low=1)
    from_id = q.params.integer("fromId", low=0)
    fills = await user_fills(q.ctx, q.key.account_id, symbol, order_id)
    fills = page_of([f for f in fills if (from_id is None or f.trade_id >= from_id) and q.within(f.ts)], q.limit,
                    from_start=from_id is not None or q.start is not None)
    return [{"symbol": symbol, "id": f.trade_id, "orderId": f.order_id, "orderListId": -1,
             "price": price_str(market, f.last_price_ticks), "qty": qty_str(market, f.last_qty_lots),
             "quoteQty": quote_str(market, f.last_quote), "commission": quote_str(market, f.commission),
             "commissionAsset": f.commission_asset, "time": f.ts // MS, "isBuyer": f.side == "BUY",
             "isMaker": f.is_maker, "isBestMatch": True} for f in fills]


@get("/account")
async def account(request: Request[Any, Any, Any]) -> dict[str, Any]:
    ctx, params, key = await signed_request(request, "read")
    omit_zero = (params.text("omitZeroBalances") or "false").lower() == "true"
    raw = await ctx.client.hgetall(f"balances:{key.account_id}")
    assets = ctx.assets()
    balances = []
    for asset_raw, value in sorted(raw.items()):
        name = asset_raw.decode() if isinstance(asset_raw, bytes) else asset_raw
        bal = _balance.decode(value)
        asset = assets.get(name)
        if asset is None or (omit_zero and not bal.available and not bal.locked):
            continue
        balances.append({"asset": name, "free": units_str(asset, bal.available),
                         "locked": units_str(asset, bal.locked)})
    fees = next(iter(ctx.markets.values()), None)
    maker_ppm = fees.maker_fee_ppm if fees else 0
    taker_ppm = fees.taker_fee_ppm if fees else 0
    return {"makerCommission": maker_ppm // 100, "takerCommission": taker_ppm // 100, "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": fmt(Decimal(maker_ppm) / PPM), "taker": fmt(Decimal(taker_ppm) / PPM),
                                "buyer": fmt(Decimal(0)), "seller": fmt(Decimal(0))},
            "canTrade": key.allows("trade"), "canWithdraw": False, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": ctx.now_ms(),
            "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"], "uid": key.account_id}


orders_router = Router(path="/api/v3", route_handlers=[new_order, test_order, query_order, cancel_order,
                                                       open_orders, cancel_open_orders, all_orders, my_trades,
                                                       account])
