"""User data streams: Binance's listenKey endpoints and the events a user stream carries.

POST /api/v3/userDataStream (X-MBX-APIKEY, no signature) gives the account's listenKey
(the same one while it is alive), PUT keeps it alive for another 60 minutes, DELETE
closes it. Redis keys: ``listenkey:{key}`` -> account id and
``listenkey:account:{id}`` -> key, both expiring after `LISTEN_KEY_TTL_S`.

Events: `executionReport` (from `OrderUpdate`), `outboundAccountPosition` (from
`AccountUpdate`), `balanceUpdate` (from `BalanceDelta`: a deposit or withdrawal) and,
when the listenKey expires while the socket is open, `listenKeyExpired` (then the
connection is closed; see `api.ws.hub`).
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Final

from litestar import Request, Router, delete, post, put
from litestar.datastructures import State

from api.auth import api_key_only
from api.context import ApiContext, price_str, qty_str, quote_str, units_str
from api.errors import ApiError
from api.params import read_params
from api.public import MS
from api.store import multi
from pipeline.agents.publish.messages import AccountUpdate, BalanceDelta, OrderUpdate
from pipeline.core.markets import Asset, Market

LISTEN_KEY_TTL_S: Final = 3600
LISTEN_KEY_RE: Final = re.compile(r"^[A-Za-z0-9]{60}$")
OPEN: Final = frozenset({"NEW", "PARTIALLY_FILLED"})


def _ctx(state: State) -> ApiContext:
    ctx: ApiContext = state.api
    return ctx


async def listen_key_account(client: Any, key: str) -> int | None:
    """The account a live listenKey belongs to."""
    if not LISTEN_KEY_RE.match(key):
        return None
    raw = await client.get(f"listenkey:{key}")
    return int(raw) if raw is not None else None


async def _key_param(request: Request[Any, Any, Any], ctx: ApiContext) -> tuple[str, int]:
    key = await api_key_only(ctx.client, request.headers)
    listen_key = (await read_params(request)).req("listenKey")
    if await listen_key_account(ctx.client, listen_key) != key.account_id:
        raise ApiError(-1125, "This listenKey does not exist.")
    return listen_key, key.account_id


@post("/userDataStream", status_code=200)
async def open_stream(request: Request[Any, Any, Any], state: State) -> dict[str, str]:
    ctx = _ctx(state)
    key = await api_key_only(ctx.client, request.headers)
    account = key.account_id
    raw = await ctx.client.get(f"listenkey:account:{account}")
    listen_key = raw.decode() if isinstance(raw, bytes) else raw
    if not listen_key or await listen_key_account(ctx.client, listen_key) != account:
        listen_key = secrets.token_hex(30)
    # On a cluster the two keys are in different slots: a plain pipeline. Both SETs carry their own
    # expiry; a half-written pair is harmless: a key is only honoured if `listenkey:<key>` names the
    # account, and a reverse entry whose key is gone makes the next open issue a new key.
    async with multi(ctx.client) as pipe:
        pipe.set(f"listenkey:{listen_key}", str(account), ex=LISTEN_KEY_TTL_S)
        pipe.set(f"listenkey:account:{account}", listen_key, ex=LISTEN_KEY_TTL_S)
        await pipe.execute()
    return {"listenKey": listen_key}


@put("/userDataStream", status_code=200)
async def keep_alive(request: Request[Any, Any, Any], state: State) -> dict[str, str]:
    ctx = _ctx(state)
    listen_key, account = await _key_param(request, ctx)
    async with multi(ctx.client) as pipe:  # cluster: plain pipeline, each EXPIRE stands alone
        pipe.expire(f"listenkey:{listen_key}", LISTEN_KEY_TTL_S)
        pipe.expire(f"listenkey:account:{account}", LISTEN_KEY_TTL_S)
        await pipe.execute()
    return {}


@delete("/userDataStream", status_code=200)
async def close_stream(request: Request[Any, Any, Any], state: State) -> dict[str, str]:
    ctx = _ctx(state)
    listen_key, account = await _key_param(request, ctx)
    await ctx.client.delete(f"listenkey:{listen_key}", f"listenkey:account:{account}")
    return {}


user_stream_router = Router(path="/api/v3", route_handlers=[open_stream, keep_alive, close_stream])


def execution_report(market: Market, u: OrderUpdate, assets: dict[str, Asset], now_ms: int) -> dict[str, Any]:
    fee_asset = assets.get(u.commission_asset)
    return {"e": "executionReport", "E": now_ms, "s": u.symbol, "c": u.client_order_id, "S": u.side,
            "o": u.order_type, "f": u.time_in_force, "q": qty_str(market, u.qty_lots),
            "p": price_str(market, u.price_ticks), "P": price_str(market, 0), "F": qty_str(market, 0), "g": -1,
            "C": "", "x": u.execution_type, "X": u.status, "r": u.reject_reason or "NONE", "i": u.order_id,
            "l": qty_str(market, u.last_qty_lots), "z": qty_str(market, u.filled_lots),
            "L": price_str(market, u.last_price_ticks),
            "n": units_str(fee_asset, u.commission) if fee_asset else "0",
            "N": u.commission_asset or None, "T": u.ts // MS, "t": u.trade_id or -1, "I": 0,
            "w": u.status in OPEN, "m": u.is_maker, "M": False, "O": (u.created_ts or u.ts) // MS,
            "Z": quote_str(market, u.filled_quote), "Y": quote_str(market, u.last_quote),
            "Q": quote_str(market, u.quote_qty), "W": (u.created_ts or u.ts) // MS, "V": "NONE"}


def account_position(u: AccountUpdate, assets: dict[str, Asset], now_ms: int) -> dict[str, Any]:
    return {"e": "outboundAccountPosition", "E": now_ms, "u": u.ts // MS,
            "B": [{"a": name, "f": units_str(assets[name], free), "l": units_str(assets[name], locked)}
                  for name, free, locked in u.balances if name in assets]}


def balance_update(u: BalanceDelta, asset: Asset, now_ms: int) -> dict[str, Any]:
    """Binance `balanceUpdate`: `d` the signed delta, `T` the clear time."""
    delta = units_str(asset, abs(u.delta))
    return {"e": "balanceUpdate", "E": now_ms, "a": u.asset, "d": delta if u.delta >= 0 else "-" + delta,
            "T": u.ts // MS}
