"""Operator actions, shared by the admin API (`/api/x/admin/...`, keys with the `admin` permission)
and the `exchange admin` command line: deposits and market status.

A market's status is sent to the pipeline as `SetMarketStatus` and also recorded in
``market:status:{SYMBOL}`` (what `exchangeInfo` reports; the validate agent owns the
status that orders are checked against).
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from litestar import Request, Router, post
from litestar.datastructures import State

from api.accounts import account_exists
from api.auth import authenticate
from api.context import ApiContext
from api.errors import ApiError, illegal
from api.params import read_params
from pipeline.agents.topology import broadcast_keys
from pipeline.core.markets import Market
from pipeline.core.messages import Deposit, SetMarketStatus

STATUS_WORDS = {"trading": "TRADING", "halted": "HALT", "halt": "HALT"}


class AdminError(ValueError):
    """An admin request that cannot be done (bad asset, amount, status, account)."""


def deposit_command(markets: dict[str, Market], account_id: int, asset: str, amount: str) -> Deposit:
    """The Deposit of `amount` (a decimal string) of `asset`, checked against the assets' decimals."""
    assets = {a.symbol: a for m in markets.values() for a in (m.base_asset, m.quote_asset)}
    if asset not in assets:
        raise AdminError(f"unknown asset {asset}")
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise AdminError(f"bad amount {amount!r}") from None
    units = assets[asset].to_units(value) if value.is_finite() else None
    if units is None or units <= 0:
        raise AdminError(f"amount {amount} is not a positive whole number of {asset} units")
    return Deposit(time.time_ns(), account_id, asset, units, request_id=uuid.uuid4().hex)


def market_command(markets: dict[str, Market], symbol: str, status: str) -> SetMarketStatus:
    if symbol not in markets:
        raise AdminError(f"unknown market {symbol}")
    word = STATUS_WORDS.get(status.lower())
    if word is None:
        raise AdminError(f"status must be trading or halted, not {status!r}")
    return SetMarketStatus(time.time_ns(), symbol, word)  # type: ignore[arg-type]


async def set_market_status(client: Any, send: Any, command: SetMarketStatus, partitions: int = 1) -> None:
    """Send the status change to every accounts partition of ``orders.in``, then record it for the API."""
    for key in broadcast_keys(partitions):
        await send(key, command)
    await client.set(f"market:status:{command.symbol}", command.status)


async def _admin(request: Request[Any, Any, Any], state: State) -> tuple[ApiContext, Any]:
    ctx: ApiContext = state.api
    params = await read_params(request)
    await authenticate(ctx.client, request.headers, params, "admin")
    return ctx, params


@post("/deposit", status_code=200)
async def admin_deposit(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """Credit an account (`account`, `asset`, `amount`); answers once the Deposit is in orders.in."""
    ctx, params = await _admin(request, state)
    account_id = params.integer("account", required=True, low=1)
    if not await account_exists(ctx.client, account_id):
        raise illegal("account")
    try:
        command = deposit_command(ctx.markets, account_id, params.req("asset"), params.req("amount"))
    except AdminError as exc:
        raise ApiError(-1100, str(exc)) from None
    await ctx.writer.write(account_id, command)
    return {"account": account_id, "asset": command.asset, "requestId": command.request_id}


@post("/market", status_code=200)
async def admin_market(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """Halt or resume a market (`symbol`, `status` = trading | halted)."""
    ctx, params = await _admin(request, state)
    try:
        command = market_command(ctx.markets, params.req("symbol"), params.req("status"))
    except AdminError as exc:
        raise ApiError(-1100, str(exc)) from None
    await set_market_status(ctx.client, ctx.writer.write, command, ctx.exchange.orders_in.partitions)
    return {"symbol": command.symbol, "status": command.status}


admin_router = Router(path="/api/x/admin", route_handlers=[admin_deposit, admin_market])
