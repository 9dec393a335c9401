"""Order entry over the WebSocket API (`/ws-api/v3`): place, status, cancel, bad input."""

from __future__ import annotations

import json
from typing import Any

from tests.api.wsclient import Served, recv_until, served, ws_signed


async def call(ws: Any, request_id: Any, method: str, params: Any = None) -> dict[str, Any]:
    await ws.send(json.dumps({"id": request_id, "method": method, "params": params or {}}))
    answer: dict[str, Any] = await recv_until(ws, lambda m: m.get("id") == request_id)
    return answer


async def test_order_entry_over_websocket(redis_url: str) -> None:
    async with served(redis_url) as api:
        await order_entry(api)


async def order_entry(api: Served) -> None:
    key = await api.account("wsbot", funds={"BTC": "1"})
    other = await api.account("other", funds={"BTC": "1"})
    async with api.ws("/ws-api/v3") as ws:
        assert await call(ws, 1, "ping") == {"id": 1, "status": 200, "result": {}}
        assert (await call(ws, "t", "time"))["result"]["serverTime"] > 0
        order = {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
                 "price": "35000.00", "newClientOrderId": "ws-1", "newOrderRespType": "RESULT"}
        placed = await call(ws, "p1", "order.place", ws_signed(key, order))
        assert placed["status"] == 200, placed
        result = placed["result"]
        assert (result["symbol"], result["clientOrderId"], result["status"], result["price"]) == (
            "BTCUSDT", "ws-1", "NEW", "35000.00000000")
        order_id = result["orderId"]
        status = await call(ws, "s1", "order.status", ws_signed(key, {"symbol": "BTCUSDT", "orderId": order_id}))
        assert status["status"] == 200 and status["result"]["status"] == "NEW"
        # another account cannot see or cancel it
        assert (await call(ws, "s2", "order.status", ws_signed(other, {"symbol": "BTCUSDT", "orderId": order_id})))[
            "error"]["code"] == -2013
        assert (await call(ws, "c0", "order.cancel", ws_signed(other, {"symbol": "BTCUSDT", "orderId": order_id})))[
            "error"]["code"] == -2011
        canceled = await call(ws, "c1", "order.cancel",
                              ws_signed(key, {"symbol": "BTCUSDT", "origClientOrderId": "ws-1"}))
        assert canceled["status"] == 200 and canceled["result"]["status"] == "CANCELED"
        assert canceled["result"]["orderId"] == order_id
        # bad signature, bad params, filters, unknown method, junk
        bad = await call(ws, "b1", "order.place", ws_signed(key, order, secret="0" * 64))
        assert (bad["status"], bad["error"]["code"]) == (400, -1022) and "result" not in bad
        tampered = {**ws_signed(key, order), "quantity": "0.02"}
        assert (await call(ws, "b2", "order.place", tampered))["error"]["code"] == -1022
        unsigned = {k: v for k, v in ws_signed(key, order).items() if k != "signature"}
        assert (await call(ws, "b3", "order.place", unsigned))["error"]["code"] == -1102
        assert (await call(ws, "b4", "order.place", ws_signed(key, {**order, "side": "UP"})))["error"]["code"] == -1117
        assert (await call(ws, "b5", "order.place", ws_signed(key, {**order, "price": "35000.001"})))[
            "error"]["code"] == -1013
        assert (await call(ws, "b6", "order.place", ws_signed(key, {**order, "symbol": "NOPE"})))[
            "error"]["code"] == -1121
        assert (await call(ws, "b7", "order.frob", {}))["error"]["code"] == -1020
        no_key = {k: v for k, v in ws_signed(key, order).items() if k != "apiKey"}
        assert (await call(ws, "b8", "order.place", no_key))["error"]["code"] == -2014
        await ws.send("not json")
        junk = await recv_until(ws, lambda m: m.get("id") is None)
        assert junk["status"] == 400 and junk["error"]["code"] == -1000
        # ACK answers once the order is durably queued; the engine then rests it
        ack = await call(ws, "a1", "order.place", ws_signed(key, {**order, "newClientOrderId": "ws-2",
                                                                  "newOrderRespType": "ACK"}))
        assert ack["status"] == 200 and set(ack["result"]) == {"symbol", "orderId", "orderListId", "clientOrderId",
                                                               "transactTime"}


async def test_refused_websocket_requests_change_nothing(redis_url: str) -> None:
    async with served(redis_url) as api:
        key = await api.account("wsbot", funds={"BTC": "1"})
        queued = await api.redis.xlen("orders.in:0")
        order = {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
                 "price": "35000.00", "newOrderRespType": "ACK"}
        async with api.ws("/ws-api/v3") as ws:
            stale = ws_signed(key, order)
            stale["timestamp"] -= 1000  # still in the window, but not what was signed
            answer = await call(ws, "e1", "order.place", stale)
            assert (answer["status"], answer["error"]["code"]) == (400, -1022)  # the signature covers timestamp
            expired = ws_signed(key, order, timestamp_offset_ms=-60_000)
            assert (await call(ws, "e2", "order.place", expired))["error"]["code"] == -1021
            ahead = ws_signed(key, order, timestamp_offset_ms=60_000)
            assert (await call(ws, "e3", "order.place", ahead))["error"]["code"] == -1021
            unknown = {**ws_signed(key, order), "apiKey": "A" * 64}
            assert (await call(ws, "e4", "order.place", unknown))["error"]["code"] == -2015
            assert (await call(ws, "e5", "order.place", "not an object"))["error"]["code"] == -1102
            nested = ws_signed(key, {**order, "quantity": ["0.01"]})
            assert (await call(ws, "e6", "order.place", nested))["error"]["code"] == -1100
            await ws.send(json.dumps({"id": "e7", "method": "order.place",
                                      "params": {**ws_signed(key, order), "pad": "x" * 70_000}}))
            big = await recv_until(ws, lambda m: m.get("id") is None)  # too large to read even its id
            assert (big["status"], big["error"]["code"]) == (413, -1104)
            for request_id, params in (("e8", {"symbol": "BTCUSDT"}), ("e9", {"symbol": "BTCUSDT", "orderId": 999})):
                answer = await call(ws, request_id, "order.cancel", ws_signed(key, params))
                assert answer["error"]["code"] in (-1102, -2011), answer
            assert (await call(ws, "ok", "ping"))["status"] == 200  # the connection is still usable
        assert await api.redis.xlen("orders.in:0") == queued
        assert await api.redis.get("orderid:BTCUSDT") is None
