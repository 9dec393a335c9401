"""The app as `exchange up` serves it: uvicorn, real HTTP, lifespan start-up and shutdown."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import httpx

from api.accounts import create_account
from api.app import create_app
from api.auth import sign
from pipeline.exchange import build_exchange
from pipeline.transport.redis import RedisTransport
from tests.serving import uvicorn_serving


async def test_served_over_http(redis_url: str) -> None:
    transport = RedisTransport(redis_url)
    await transport.client.flushall()
    exchange = build_exchange(transport)
    await exchange.app.start()
    try:
        async with uvicorn_serving(create_app(exchange)) as port, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await exchange.app.wait_running()
            key = await create_account(transport.client, "http")
            assert (await client.get("/api/v3/ping")).json() == {}
            query = urlencode({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                               "quantity": "0.01", "price": "20000", "newOrderRespType": "ACK",
                               "timestamp": time.time_ns() // 1_000_000})
            r = await client.post("/api/v3/order", content=f"{query}&signature={sign(key.secret, query)}",
                                  headers={"X-MBX-APIKEY": key.api_key,
                                           "Content-Type": "application/x-www-form-urlencoded"})
            assert r.status_code == 200 and r.json()["orderId"] == 1
            r = await client.post("/api/v3/order", content="x" * 100_000)
            assert r.status_code == 413 and r.json()["code"] == -1104
    finally:
        await exchange.app.stop()
        await transport.close()
