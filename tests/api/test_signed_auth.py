"""Every signed endpoint refuses a request without a valid key, signature and timestamp, with
Binance's code, and changes nothing."""

from __future__ import annotations

import time
from typing import Any

from tests.api.conftest import Api, error

BTC = "BTCUSDT"
ORDER = {"symbol": BTC, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
         "price": "20000", "newOrderRespType": "ACK"}
SIGNED: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/v3/order", ORDER),
    ("POST", "/api/v3/order/test", ORDER),
    ("GET", "/api/v3/order", {"symbol": BTC, "orderId": 1}),
    ("DELETE", "/api/v3/order", {"symbol": BTC, "orderId": 1}),
    ("POST", "/api/v3/order/cancelReplace", {**ORDER, "cancelReplaceMode": "STOP_ON_FAILURE", "cancelOrderId": 1}),
    ("GET", "/api/v3/openOrders", {}),
    ("DELETE", "/api/v3/openOrders", {"symbol": BTC}),
    ("GET", "/api/v3/allOrders", {"symbol": BTC}),
    ("GET", "/api/v3/myTrades", {"symbol": BTC}),
    ("GET", "/api/v3/account", {}),
    ("POST", "/api/x/admin/deposit", {"account": 1, "asset": "USDT", "amount": "1"}),
    ("POST", "/api/x/admin/market", {"symbol": BTC, "status": "halted"}),
]


async def _state(api: Api) -> tuple[int, Any, int]:
    """What a refused request must not change: commands queued, order ids used, open orders."""
    queued = sum([await api.redis.xlen(f"orders.in:{p}") for p in range(api.exchange.orders_in.partitions)])
    return queued, await api.redis.get(f"orderid:{BTC}"), len(await api.redis.keys("orders:open:*"))


async def test_every_signed_endpoint_checks_key_signature_and_timestamp(api: Api) -> None:
    admin = await api.account("root", admin=True, funds={"USDT": "1000"})
    before = await _state(api)
    now = time.time_ns() // 1_000_000
    for method, path, params in SIGNED:
        where = (method, path)
        assert error(await api.signed(method, path, None, **params)) == (401, -2014), where  # no key
        r = await api.client.request(method, path, params={**params, "timestamp": now, "signature": "0" * 64},
                                     headers={"X-MBX-APIKEY": "A" * 64})
        assert error(r) == (401, -2015), where  # a well-formed key that does not exist
        r = await api.client.request(method, path, params={**params, "timestamp": now, "signature": "0" * 64},
                                     headers={"X-MBX-APIKEY": "not a key!"})
        assert error(r) == (401, -2014), where  # a malformed key
        assert error(await api.signed(method, path, admin, secret="f" * 64, **params)) == (400, -1022), where
        assert error(await api.signed(method, path, admin, timestamp=now - 60_000, **params)) == (400, -1021), where
        assert error(await api.signed(method, path, admin, timestamp=now + 60_000, **params)) == (400, -1021), where
        assert error(await api.signed(method, path, admin, recvWindow=60_001, **params)) == (400, -1131), where
        r = await api.client.request(method, path, params={**params, "timestamp": now},
                                     headers={"X-MBX-APIKEY": admin.api_key})
        assert error(r) == (400, -1102), where  # no signature
        r = await api.client.request(method, path, params={**params, "signature": "0" * 64},
                                     headers={"X-MBX-APIKEY": admin.api_key})
        assert error(r) == (400, -1102), where  # no timestamp
    assert await _state(api) == before
