"""WebSocket tests: the app served by uvicorn in the test's loop (lifespan on: the stream hub
runs), a real HTTP client and the `websockets` client. `Served` extends `Api` with
`ws(path)` and condition-waiting receive helpers (no guessed sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from api.accounts import NewKey
from api.auth import sign
from api.context import ApiConfig
from tests.api.conftest import Api, start_api
from tests.serving import uvicorn_serving

TIMEOUT = 10.0


class Served(Api):
    ws_base: str

    def ws(self, path: str) -> Any:
        return connect(self.ws_base + path, open_timeout=TIMEOUT, max_size=2**22)

    async def buy_sell(self, maker: NewKey, taker: NewKey, price: str = "30000.00", qty: str = "0.10000") -> None:
        """A resting SELL by `maker` and a crossing BUY by `taker`, both answered FULL."""
        for key, side in ((maker, "SELL"), (taker, "BUY")):
            r = await self.signed("POST", "/api/v3/order", key, symbol="BTCUSDT", side=side, type="LIMIT",
                                  timeInForce="GTC", quantity=qty, price=price, newOrderRespType="RESULT")
            assert r.status_code == 200, r.text


async def recv_json(ws: ClientConnection, timeout: float = TIMEOUT) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: ClientConnection, match: Callable[[Any], bool], timeout: float = TIMEOUT) -> Any:
    """The first message `match` accepts (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if match(message):
            return message


async def request(ws: ClientConnection, method: str, params: Any, request_id: int) -> Any:
    """Send a live request; its answer (messages before it are skipped)."""
    await ws.send(json.dumps({"method": method, "params": params, "id": request_id}))
    return await recv_until(ws, lambda m: isinstance(m, dict) and m.get("id") == request_id and "e" not in m)


def ws_signed(key: NewKey, params: dict[str, Any], *, secret: str | None = None,
              timestamp_offset_ms: int = 0) -> dict[str, Any]:
    """Binance WebSocket API signing: every param but signature, sorted, as name=value&..."""
    params = {**params, "apiKey": key.api_key, "timestamp": time.time_ns() // 1_000_000 + timestamp_offset_ms}
    payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
    return {**params, "signature": sign(secret if secret is not None else key.secret, payload)}


@contextlib.asynccontextmanager
async def served(redis_url: str, config: ApiConfig | None = None) -> AsyncIterator[Served]:
    exchange, transport, app = await start_api(redis_url, config=config or ApiConfig(
        result_timeout_s=5.0, lookup_wait_s=1.0, weight_per_minute=0, ws_messages_per_second=0))
    try:
        async with uvicorn_serving(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            api = Served(client, exchange, transport.client, app)
            api.ws_base = f"ws://127.0.0.1:{port}"
            yield api
    finally:
        await exchange.app.stop()
        await transport.close()
