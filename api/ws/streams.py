"""Market and user streams: `/ws/<stream>`, `/ws` (subscribe later), `/stream?streams=a/b/c` (combined).

A name is a market stream (`names.parse_stream`) or a live listenKey (the user data
stream of its account). Live requests, as Binance takes them:
`{"method": "SUBSCRIBE" | "UNSUBSCRIBE", "params": [names], "id": n}` -> `{"result": null, "id": n}`,
`LIST_SUBSCRIPTIONS` -> the names, `GET_PROPERTY` / `SET_PROPERTY` of `combined`.
Errors: `{"error": {"code", "msg"}, "id"}` with Binance's codes (0 unknown property,
1 invalid value type, 2 invalid request, 3 invalid JSON).

Limits (`api.ws.limits`): connection attempts per IP, incoming messages per second
per connection (beyond: closed with 1008 "Too many requests"), 1024 streams.
"""

from __future__ import annotations

import json
from typing import Any, Final

from litestar import WebSocket, websocket

from api.context import ApiContext
from api.ws.connection import POLICY_VIOLATION, Connection
from api.ws.hub import Hub
from api.ws.limits import TOO_MANY_REQUESTS, SlidingWindow, admit
from api.ws.names import parse_stream
from api.ws.userdata import listen_key_account

MAX_STREAMS: Final = 1024
METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "GET_PROPERTY", "SET_PROPERTY")


class RequestError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


async def resolve(ctx: ApiContext, name: str) -> int | bool | None:
    """None for a market stream, the account id for a listenKey, False if it is neither."""
    if parse_stream(name, set(ctx.markets)) is not None:
        return None
    account = await listen_key_account(ctx.client, name)
    return False if account is None else account


async def _subscribe(ctx: ApiContext, hub: Hub, conn: Connection, names: list[str]) -> str | None:
    """Subscribe to all of `names`, or to none: the first invalid name, if any."""
    resolved: list[tuple[str, int | bool | None]] = []
    for name in names:
        target = await resolve(ctx, name)
        if target is False:
            return name
        resolved.append((name, target))
    if len(conn.streams) + len(conn.listen_keys) + len(resolved) > MAX_STREAMS:
        return f"more than {MAX_STREAMS} streams"
    for name, account in resolved:
        hub.subscribe(conn, name, None if account is None else int(account))
    return None


async def handle_request(ctx: ApiContext, hub: Hub, conn: Connection, text: str) -> None:
    request_id: Any = None
    try:
        try:
            request = json.loads(text)
        except ValueError:
            raise RequestError(3, "Invalid JSON: expected a JSON object") from None
        if not isinstance(request, dict):
            raise RequestError(3, "Invalid JSON: expected a JSON object")
        request_id = request.get("id")
        if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, int | str)):
            raise RequestError(1, "Invalid value type: expected u64 or string for 'id'")
        method = request.get("method")
        if method not in METHODS:
            raise RequestError(2, f"Invalid request: unknown method {method!r}")
        params = request.get("params", [])
        if not isinstance(params, list) or not all(isinstance(p, str | bool) for p in params):
            raise RequestError(1, "Invalid value type: expected a list of strings for 'params'")
        result: Any = None
        if method == "SUBSCRIBE":
            bad = await _subscribe(ctx, hub, conn, [p for p in params if isinstance(p, str)])
            if bad is not None:
                raise RequestError(2, f"Invalid request: {bad}" if bad.startswith("more than") else
                                   f"Invalid request: invalid stream name {bad!r}")
        elif method == "UNSUBSCRIBE":
            for name in params:
                hub.unsubscribe(conn, str(name))
        elif method == "LIST_SUBSCRIPTIONS":
            result = sorted([*conn.streams, *conn.listen_keys])
        elif method == "GET_PROPERTY":
            if params != ["combined"]:
                raise RequestError(0, "Unknown property")
            result = conn.combined
        else:
            if len(params) != 2 or params[0] != "combined":
                raise RequestError(0, "Unknown property")
            if not isinstance(params[1], bool):
                raise RequestError(1, "Invalid value type: expected a boolean for 'combined'")
            conn.combined = params[1]
        conn.push_json({"result": result, "id": request_id})
    except RequestError as exc:
        conn.push_json({"error": {"code": exc.code, "msg": exc.msg}, "id": request_id})


async def serve_streams(socket: WebSocket[Any, Any, Any], names: list[str], combined: bool) -> None:
    state = socket.app.state
    ctx: ApiContext = state.api
    hub: Hub = state.hub
    if not await admit(socket):
        return
    conn = Connection(socket, ctx.config.ws_queue, combined, grace_s=ctx.config.ws_slow_grace_s)
    rate = SlidingWindow(ctx.config.ws_messages_per_second, 1.0)
    try:
        # Subscribed before the handshake completes: whatever is read after the client connected, it gets.
        bad = await _subscribe(ctx, hub, conn, names)
        await socket.accept()
        if bad is not None:
            reason = bad if bad.startswith("more than") else f"Invalid stream name: {bad}"
            await socket.close(code=POLICY_VIOLATION, reason=reason[:120])
            return

        async def on_text(text: str) -> None:
            if not rate.allow():
                conn.drop(TOO_MANY_REQUESTS)
                return
            await handle_request(ctx, hub, conn, text)

        await conn.run(on_text)
    finally:
        hub.remove(conn)


@websocket("/ws")
async def raw_streams(socket: WebSocket[Any, Any, Any]) -> None:
    """A raw stream connection without streams yet (SUBSCRIBE to add them)."""
    await serve_streams(socket, [], False)


@websocket("/ws/{names:str}")
async def raw_stream(socket: WebSocket[Any, Any, Any]) -> None:
    """`/ws/<stream>` (or several, `/`-separated): payloads as they are."""
    await serve_streams(socket, [n for n in str(socket.path_params["names"]).split("/") if n], False)


@websocket("/stream")
async def combined_streams(socket: WebSocket[Any, Any, Any]) -> None:
    """`/stream?streams=a/b/c`: payloads wrapped as `{"stream": name, "data": payload}`."""
    raw = socket.query_params.get("streams") or ""
    await serve_streams(socket, [n for n in str(raw).split("/") if n], True)


stream_handlers = [raw_streams, raw_stream, combined_streams]
