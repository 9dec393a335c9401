"""Signatures, keys, timestamps, malformed input, oversize payloads, backpressure, timeouts, admin."""

from __future__ import annotations

import time

import httpx
import pytest

from api.accounts import revoke_api_key
from api.context import ApiConfig
from pipeline.errors import BackpressureError
from tests.api.conftest import Api, error, eventually, start_api

BTC = "BTCUSDT"
LIMIT = {"symbol": BTC, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
         "price": "20000", "newOrderRespType": "ACK"}


async def test_signature_key_and_timestamp_checks(api: Api) -> None:
    alice = await api.account("alice", funds={"USDT": "1000"})
    now = time.time_ns() // 1_000_000
    assert error(await api.signed("GET", "/api/v3/account", None)) == (401, -2014)
    assert error(await api.client.get("/api/v3/account", headers={"X-MBX-APIKEY": "bad key!"})) == (401, -2014)
    unknown = type(alice)(alice.account_id, "0" * 64, alice.secret, alice.permissions)
    assert error(await api.signed("GET", "/api/v3/account", unknown)) == (401, -2015)
    assert error(await api.signed("GET", "/api/v3/account", alice, secret="wrong")) == (400, -1022)
    r = await api.client.get(f"/api/v3/account?timestamp={now}", headers={"X-MBX-APIKEY": alice.api_key})
    assert error(r) == (400, -1102) and "signature" in r.json()["msg"]
    r = await api.client.get(f"/api/v3/account?timestamp={now}&signature=zz",
                             headers={"X-MBX-APIKEY": alice.api_key})
    assert error(r) == (400, -1022)
    assert error(await api.signed("GET", "/api/v3/account", alice, timestamp=now - 10_000)) == (400, -1021)
    assert error(await api.signed("GET", "/api/v3/account", alice, timestamp=now + 5_000)) == (400, -1021)
    assert (await api.signed("GET", "/api/v3/account", alice, timestamp=now - 10_000,
                             recvWindow=20_000)).status_code == 200
    assert error(await api.signed("GET", "/api/v3/account", alice, recvWindow=70_000)) == (400, -1131)
    assert error(await api.signed("GET", "/api/v3/account", alice, timestamp="abc")) == (400, -1100)
    # the signature covers every parameter: changing one after signing fails
    r = await api.signed("POST", "/api/v3/order", alice, in_body=False, **LIMIT)
    assert r.status_code == 200, r.text
    tampered = str(r.request.url).replace("quantity=0.01", "quantity=0.02")
    r = await api.client.post(tampered, headers={"X-MBX-APIKEY": alice.api_key})
    assert error(r) == (400, -1022)
    # body and query both count (Binance totalParams)
    assert (await api.signed("POST", "/api/v3/order", alice, in_body=True, **LIMIT)).status_code == 200
    # permissions: a read-only key reads but cannot trade; a revoked key is unknown
    reader = await api.read_only_key(alice.account_id)
    assert (await api.signed("GET", "/api/v3/openOrders", reader)).status_code == 200
    assert error(await api.signed("POST", "/api/v3/order", reader, **LIMIT)) == (401, -2015)
    assert await revoke_api_key(api.redis, reader.api_key)

    async def refused() -> bool:  # once this API process's copy of the key expires (ApiConfig.key_cache_s)
        r = await api.signed("GET", "/api/v3/openOrders", reader)
        return r.status_code == 401 and r.json()["code"] == -2015
    await eventually(refused, timeout=api.app.state.api.config.key_cache_s + 5)
    # the secret is stored for HMAC, but never echoed by the API
    account = (await api.signed("GET", "/api/v3/account", alice)).text
    assert alice.secret not in account


@pytest.mark.parametrize(("change", "expected"), [
    ({"symbol": None}, -1102),
    ({"symbol": "NOPEUSDT"}, -1121),
    ({"side": "UP"}, -1117),
    ({"type": "STOP_LOSS"}, -1116),
    ({"timeInForce": None}, -1102),
    ({"timeInForce": "DAY"}, -1115),
    ({"price": "1e5"}, -1100),
    ({"price": "-1"}, -1100),
    ({"price": None}, -1102),
    ({"quantity": None}, -1102),
    ({"quantity": "abc"}, -1100),
    ({"price": "20000.001"}, -1013),
    ({"quantity": "0.000001"}, -1013),
    ({"quantity": "100000"}, -1013),
    ({"quantity": "0.0001"}, -1013),
    ({"price": "0"}, -1013),
    ({"newClientOrderId": "bad id with spaces"}, -1100),
    ({"newClientOrderId": "x" * 37}, -1100),
    ({"newOrderRespType": "ALL"}, -1100),
    ({"quoteOrderQty": "100"}, -1106),
    ({"stopPrice": "100"}, -1106),
    ({"type": "MARKET", "timeInForce": None, "price": None, "quantity": None}, -1102),
    ({"type": "MARKET", "timeInForce": None}, -1106),
    ({"type": "MARKET", "timeInForce": None, "price": None, "quoteOrderQty": "1"}, -1106),
    ({"type": "MARKET", "timeInForce": None, "price": None, "quantity": None, "quoteOrderQty": "1.000000001"},
     -1111),
])
async def test_bad_order_input(api: Api, change: dict[str, str | None], expected: int) -> None:
    alice = await api.account("alice")
    params = {**LIMIT, **change}
    r = await api.signed("POST", "/api/v3/order", alice, **params)
    assert error(r) == (400, expected), r.text
    assert await api.redis.get(f"orderid:{BTC}") is None  # nothing was placed, no id used


async def test_malformed_requests(api: Api) -> None:
    alice = await api.account("alice")
    headers = {"X-MBX-APIKEY": alice.api_key, "Content-Type": "application/x-www-form-urlencoded"}
    assert error(await api.client.post("/api/v3/order", content="symbol=BTCUSDT&symbol=ETHUSDT",
                                       headers=headers)) == (400, -1101)
    assert error(await api.client.post("/api/v3/order", content="a=1&" * 100, headers=headers)) == (400, -1101)
    assert error(await api.client.post("/api/v3/order", content="x" * 200_000, headers=headers)) == (413, -1104)
    assert error(await api.client.post("/api/v3/order", content=b"\xff\xfe=1", headers=headers)) == (400, -1100)
    r = await api.client.post("/api/v3/order", content='{"symbol": "BTCUSDT"}',
                              headers={**headers, "Content-Type": "application/json"})
    assert error(r) == (415, -1000)
    assert error(await api.signed("GET", "/api/v3/order", alice, symbol=BTC)) == (400, -1102)
    assert error(await api.signed("GET", "/api/v3/order", alice, symbol=BTC, orderId="x")) == (400, -1100)
    assert error(await api.signed("GET", "/api/v3/allOrders", alice)) == (400, -1102)
    assert error(await api.signed("GET", "/api/v3/openOrders", alice, symbol="NOPE")) == (400, -1121)
    assert error(await api.signed("DELETE", "/api/v3/openOrders", alice)) == (400, -1102)


async def test_backpressure_is_a_clear_503(api: Api) -> None:
    alice = await api.account("alice", funds={"USDT": "1000"})

    async def full(items: object) -> list[str]:
        raise BackpressureError("orders.in:0", 100_001, 100_000)

    writer = api.app.state.api.writer
    writer.topic = type("Full", (), {"send_many": staticmethod(full)})()
    r = await api.signed("POST", "/api/v3/order", alice, **LIMIT)
    assert error(r) == (503, -1008) and r.headers["Retry-After"] == "1"


async def test_result_timeout_says_the_order_is_queued(redis_url: str) -> None:
    exchange, transport, app = await start_api(redis_url, start_agents=False,
                                               config=ApiConfig(result_timeout_s=0.2, lookup_wait_s=0.1))
    api = None
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            api = Api(client, exchange, transport.client, app)
            alice = await api.account("alice")
            r = await api.signed("POST", "/api/v3/order", alice, **{**LIMIT, "newOrderRespType": "RESULT"})
            assert error(r) == (503, -1007) and "orderId 1" in r.json()["msg"]
            r = await api.signed("POST", "/api/v3/order", alice, **LIMIT)
            assert r.status_code == 200 and r.json()["orderId"] == 2
            assert await transport.client.xlen("orders.in:0") == 2  # both durably queued
            # not yet processed: queries answer "does not exist" after a bounded wait, no hang
            assert error(await api.signed("GET", "/api/v3/order", alice, symbol=BTC, orderId=2)) == (400, -2013)
    finally:
        await app.state.api.writer.close()
        await transport.close()


async def test_admin_api_needs_admin_key(api: Api) -> None:
    user = await api.account("user")
    admin = await api.account("root", admin=True)
    assert error(await api.signed("POST", "/api/x/admin/deposit", user, account=user.account_id, asset="USDT",
                                  amount="100")) == (401, -2015)
    r = await api.signed("POST", "/api/x/admin/deposit", admin, account=user.account_id, asset="USDT",
                         amount="100.5")
    assert r.status_code == 200, r.text

    async def credited() -> bool:
        balances = (await api.signed("GET", "/api/v3/account", user)).json()["balances"]
        return balances == [{"asset": "USDT", "free": "100.50000000", "locked": "0.00000000"}]

    await eventually(credited)
    assert error(await api.signed("POST", "/api/x/admin/deposit", admin, account=user.account_id, asset="FOO",
                                  amount="1")) == (400, -1100)
    assert error(await api.signed("POST", "/api/x/admin/deposit", admin, account=9999, asset="USDT",
                                  amount="1")) == (400, -1100)
    assert error(await api.signed("POST", "/api/x/admin/market", user, symbol=BTC, status="halted")) == (401, -2015)
    r = await api.signed("POST", "/api/x/admin/market", admin, symbol=BTC, status="halted")
    assert r.json() == {"symbol": BTC, "status": "HALT"}
    info = (await api.get("/api/v3/exchangeInfo", symbol=BTC)).json()
    assert info["symbols"][0]["status"] == "HALT"
    r = await api.signed("POST", "/api/v3/order", user, **{**LIMIT, "quantity": "0.001", "price": "10000",
                                                            "newOrderRespType": "RESULT"})
    assert error(r) == (400, -2010) and r.json()["msg"] == "Market is closed."


WEIRD = ["", "-1", "0", "1e309", "NaN", "99999999999999999999.99999999999999999999", "%00", "[]", '["BTCUSDT"',
         "x" * 300, "BTCUSDT"]
ENDPOINTS = [("GET", "/api/v3/exchangeInfo"), ("GET", "/api/v3/depth"), ("GET", "/api/v3/trades"),
             ("GET", "/api/v3/klines"), ("GET", "/api/v3/ticker/24hr"), ("GET", "/api/v3/ticker/price"),
             ("GET", "/api/v3/ticker/bookTicker"), ("GET", "/api/v3/avgPrice"), ("POST", "/api/v3/order"),
             ("GET", "/api/v3/historicalTrades"), ("GET", "/api/v3/aggTrades"),
             ("POST", "/api/v3/order/test"), ("GET", "/api/v3/order"), ("DELETE", "/api/v3/order"),
             ("GET", "/api/v3/openOrders"), ("DELETE", "/api/v3/openOrders"), ("GET", "/api/v3/allOrders"),
             ("GET", "/api/v3/myTrades"), ("GET", "/api/v3/account"), ("POST", "/api/v3/order/cancelReplace")]
NAMES = ["symbol", "symbols", "limit", "interval", "startTime", "endTime", "type", "side", "price", "quantity",
         "quoteOrderQty", "orderId", "origClientOrderId", "timeInForce", "fromId", "recvWindow"]


async def test_no_input_gives_a_5xx(api: Api) -> None:
    """A small deterministic fuzz: every endpoint x parameter x odd value, signed and valid otherwise."""
    alice = await api.account("alice")
    for method, path in ENDPOINTS:
        for i, name in enumerate(NAMES):
            value = WEIRD[(i + len(path)) % len(WEIRD)]
            base = {"symbol": BTC, "interval": "1m", **({**LIMIT, "newOrderRespType": "ACK"}
                                                        if method == "POST" else {})}
            r = await api.signed(method, path, alice, **{**base, name: value})
            assert r.status_code < 500, (method, path, name, value, r.text)
            if r.status_code >= 400:
                error(r)
    schema = await api.client.get("/schema/openapi.json")
    assert schema.status_code == 200 and "/api/v3/depth" in schema.json()["paths"]


async def test_rate_limit_by_request_weight(redis_url: str) -> None:
    _, transport, app = await start_api(redis_url, start_agents=False, config=ApiConfig(weight_per_minute=30))
    app.state.limiter.clock = lambda: 6_000_000.0  # one minute throughout the test
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            info = (await client.get("/api/v3/exchangeInfo")).json()
            assert info["rateLimits"][0]["limit"] == 30
            answers = [await client.get("/api/v3/exchangeInfo") for _ in range(3)]
            limited = [r for r in answers if r.status_code == 429]
            assert limited and error(limited[0]) == (429, -1003)
            assert 1 <= int(limited[0].headers["Retry-After"]) <= 60
    finally:
        await app.state.api.writer.close()
        await transport.close()


def test_weight_windows() -> None:
    from api.limits import WeightLimiter, weight_of

    limiter = WeightLimiter(10)
    assert weight_of("GET", "/api/v3/order") == 4 and weight_of("POST", "/api/v3/order") == 1
    assert limiter.spend("a", 6, now=120.0) == (6, 60)
    assert limiter.spend("a", 6, now=150.0) == (12, 30)
    assert limiter.spend("b", 6, now=150.0) == (6, 30)
    assert limiter.spend("a", 6, now=180.0) == (6, 60)
