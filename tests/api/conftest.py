"""The API against a real pipeline on the session's embedded Valkey.

`api` starts the five agents on a flushed Valkey and serves `create_app` through
httpx's ASGI transport, in the test's own event loop: Litestar's AsyncTestClient runs
the app in a portal thread with its own loop, which cannot share the pipeline's
Redis connections. `Api` has helpers to create accounts, sign requests, fund
accounts and wait for read models.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import msgspec
import pytest
from litestar import Litestar

from api.accounts import NewKey, create_account, create_api_key
from api.app import create_app
from api.auth import sign
from api.context import ApiConfig
from pipeline.core.messages import Deposit
from pipeline.exchange import Exchange, build_exchange
from pipeline.transport.redis import RedisTransport

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 10.0) -> T:
    """Poll until `probe` returns something truthy (never sleep a guessed time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class Api:
    def __init__(self, client: httpx.AsyncClient, exchange: Exchange, redis: Any, app: Litestar) -> None:
        self.client = client
        self.exchange = exchange
        self.redis = redis
        self.app = app

    async def account(self, name: str = "trader", *, admin: bool = False,
                      funds: dict[str, str] | None = None) -> NewKey:
        key = await create_account(self.redis, name, admin=admin)
        for asset, amount in (funds or {}).items():
            units = int(Decimal(amount) * 10**8)
            await self.exchange.orders_in.send(Deposit(time.time_ns(), key.account_id, asset, units),
                                               key=key.account_id)
        if funds:
            async def funded() -> bool:
                raw = await self.redis.hgetall(f"balances:{key.account_id}")
                return all(asset.encode() in raw for asset in funds)
            await eventually(funded)
        return key

    async def read_only_key(self, account_id: int) -> NewKey:
        return await create_api_key(self.redis, account_id, ("read",))

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params)

    async def signed(self, method: str, path: str, key: NewKey | None, *, secret: str | None = None,
                     timestamp: int | None = None, in_body: bool | None = None, **params: Any) -> httpx.Response:
        params = {k: v for k, v in params.items() if v is not None}
        params["timestamp"] = timestamp if timestamp is not None else time.time_ns() // 1_000_000
        payload = urlencode(params)
        signature = sign(secret if secret is not None else (key.secret if key else "x"), payload)
        headers = {"X-MBX-APIKEY": key.api_key} if key else {}
        if in_body is None:
            in_body = method == "POST"
        if in_body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return await self.client.request(method, path, content=f"{payload}&signature={signature}",
                                             headers=headers)
        return await self.client.request(method, f"{path}?{payload}&signature={signature}", headers=headers)

    async def order_view(self, symbol: str, order_id: int) -> dict[str, Any] | None:
        raw = await self.redis.get(f"order:{symbol}:{order_id}")
        return msgspec.json.decode(raw) if raw else None


def error(response: httpx.Response) -> tuple[int, int]:
    """(HTTP status, Binance code) of an error answer, checking its JSON shape."""
    body = response.json()
    assert set(body) == {"code", "msg"}, body
    assert isinstance(body["msg"], str) and body["msg"]
    return response.status_code, body["code"]


async def start_api(redis_url: str, *, start_agents: bool = True,
                    config: ApiConfig | None = None) -> tuple[Exchange, RedisTransport, Litestar]:
    transport = RedisTransport(redis_url)
    await transport.client.flushall()
    exchange = build_exchange(transport)
    if start_agents:
        await exchange.app.start()
        await exchange.app.wait_running()
    app = create_app(exchange, config=config or ApiConfig(result_timeout_s=5.0, lookup_wait_s=1.0,
                                                               weight_per_minute=0))
    return exchange, transport, app


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[Api]:
    exchange, transport, app = await start_api(redis_url)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            yield Api(client, exchange, transport.client, app)
    finally:
        await app.state.api.writer.close()
        await exchange.app.stop()
        await transport.close()
