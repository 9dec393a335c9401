"""Order entry over WebSocket, Binance WebSocket API style, at `/ws-api/v3`.

Request `{"id": ..., "method": ..., "params": {...}}`; answer `{"id", "status": 200,
"result"}` or `{"id", "status", "error": {"code", "msg"}}` with the REST API's codes.
Methods: `ping`, `time`, `order.place`, `order.test`, `order.cancel`, `order.status`.
Signed params carry `apiKey`, `timestamp` and `signature`: HMAC-SHA256 of every
parameter but `signature`, sorted by name, as `name=value` joined by `&`
(Binance's WebSocket API signing). Requests of one connection run concurrently
(their answers come in completion order, matched by id), so a client can pipeline.

Limits: connection attempts per IP (`api.ws.limits`, HTTP 429 at the handshake) and
the REST API's request weight per IP and minute, shared with it (order.place 1,
order.cancel 1, order.status 4); over the limit a request answers status 429,
code -1003, with `data.retryAfter` (ms since the epoch when it may retry); an IP
that keeps sending is banned (status 418, `api.limits`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from litestar import WebSocket, websocket

from api.accounts import ApiKey
from api.auth import authenticate
from api.context import ApiContext
from api.errors import OVERLOADED, ApiError
from api.limits import WeightLimiter
from api.orders import cancel_one, order_status, place_order
from api.params import Params
from api.ws.connection import Connection
from api.ws.limits import admit, client_ip
from pipeline.errors import BackpressureError

log = logging.getLogger(__name__)
Handler = Callable[[ApiContext, Params, ApiKey], Awaitable[dict[str, Any]]]


async def _test_order(ctx: ApiContext, params: Params, key: ApiKey) -> dict[str, Any]:
    return await place_order(ctx, params, key, test=True)


SIGNED: Final[dict[str, tuple[str, Handler]]] = {
    "order.place": ("trade", place_order),
    "order.test": ("trade", _test_order),
    "order.cancel": ("trade", cancel_one),
    "order.status": ("read", order_status),
}
WEIGHTS: Final = {"order.status": 4}


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ApiError(-1100, "Illegal characters found in a parameter: values must be strings, numbers or booleans.")


def signed_params(raw: dict[str, Any]) -> tuple[Params, dict[str, str]]:
    """(the parameters, headers carrying `apiKey` as X-MBX-APIKEY) of a WebSocket API request."""
    values = {str(k): _value(v) for k, v in raw.items()}
    payload = "&".join(f"{k}={values[k]}" for k in sorted(values) if k != "signature")
    query = f"{payload}&signature={values['signature']}" if values.get("signature") else payload
    params = Params.from_values({k: v for k, v in values.items() if k != "signature"}, query)
    return params, {"x-mbx-apikey": values.get("apiKey", "")}


async def call(ctx: ApiContext, method: Any, raw_params: Any) -> Any:
    if method == "ping":
        return {}
    if method == "time":
        return {"serverTime": ctx.now_ms()}
    if method not in SIGNED:
        raise ApiError(-1020, "Unsupported operation.")
    if not isinstance(raw_params, dict):
        raise ApiError(-1102, "Mandatory parameter 'params' was not sent, was empty/null, or malformed.")
    permission, handler = SIGNED[method]
    params, headers = signed_params(raw_params)
    key = await authenticate(ctx.client, headers, params, permission, keys=ctx.keys)
    return await handler(ctx, params, key)


def _spend(limiter: WeightLimiter | None, ip: str, method: Any) -> None:
    """Charge the request's weight to `ip`; an ApiError (429, -1003) past the limit."""
    if limiter is None or limiter.per_minute <= 0:
        return
    verdict = limiter.charge(ip, WEIGHTS.get(str(method), 1))
    if verdict.status == 418:  # kept sending after its 429s: banned, as Binance does
        raise ApiError(-1003, f"Way too many requests; IP({ip}) banned until {verdict.banned_until_ms}. Please use "
                              "WebSocket Streams for live updates to avoid bans.",
                       418, {"retryAfter": str(verdict.banned_until_ms)})
    if verdict.status == 429:
        raise ApiError(-1003, f"Too much request weight used; current limit is {limiter.per_minute} request weight "
                              "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
                       429, {"retryAfter": str(ApiContext.now_ms() + verdict.retry_s * 1000)})


async def answer(ctx: ApiContext, conn: Connection, text: str, limiter: WeightLimiter | None = None,
                 ip: str = "?") -> None:
    request_id: Any = None
    try:
        if len(text) > ctx.config.max_body_bytes:  # as the REST API's body limit; not even parsed
            raise ApiError(-1104, "Request too large.", 413)
        try:
            request = json.loads(text)
        except ValueError:
            raise ApiError(-1000, "Malformed request: not JSON.") from None
        if not isinstance(request, dict):
            raise ApiError(-1000, "Malformed request: expected a JSON object.")
        request_id = request.get("id")
        _spend(limiter, ip, request.get("method"))
        result = await call(ctx, request.get("method"), request.get("params", {}))
        conn.push_json({"id": request_id, "status": 200, "result": result})
    except BackpressureError:
        conn.push_json({"id": request_id, "status": OVERLOADED.status,
                        "error": {"code": OVERLOADED.code, "msg": OVERLOADED.msg}})
    except ApiError as exc:
        error: dict[str, Any] = {"code": exc.code, "msg": exc.msg}
        if exc.status in (418, 429) and "retryAfter" in exc.headers:
            error["data"] = {"serverTime": ApiContext.now_ms(), "retryAfter": int(exc.headers["retryAfter"])}
        conn.push_json({"id": request_id, "status": exc.status, "error": error})
    except Exception:
        log.exception("ws-api: unexpected error")
        conn.push_json({"id": request_id, "status": 500,
                        "error": {"code": -1000, "msg": "An unknown error occurred while processing the request."}})


@websocket("/ws-api/v3")
async def ws_api(socket: WebSocket[Any, Any, Any]) -> None:
    ctx: ApiContext = socket.app.state.api
    if not await admit(socket):
        return
    limiter: WeightLimiter | None = getattr(socket.app.state, "limiter", None)
    ip = client_ip(socket)
    await socket.accept()
    conn = Connection(socket, ctx.config.ws_queue, grace_s=ctx.config.ws_slow_grace_s)
    running: set[asyncio.Task[None]] = set()

    async def on_text(text: str) -> None:
        if len(running) >= ctx.config.ws_queue:  # more requests in flight than answers it may have queued
            conn.drop("too many requests in flight")
            return
        task = asyncio.create_task(answer(ctx, conn, text, limiter, ip))
        running.add(task)
        task.add_done_callback(running.discard)

    try:
        await conn.run(on_text)
    finally:
        for task in list(running):
            task.cancel()


