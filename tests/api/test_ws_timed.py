"""Timer-driven streams (depth@100ms, depth at 1000 ms, !ticker@arr every second), balanceUpdate,
listenKey expiry on an open socket, and Binance's WebSocket limits."""

from __future__ import annotations

import asyncio
import json
import time
from itertools import pairwise
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from api.context import ApiConfig
from pipeline.core.messages import Deposit, Withdraw
from tests.api.conftest import eventually
from tests.api.wsclient import Served, recv_json, recv_until, request, served, ws_signed


@pytest.fixture
async def ws_api(redis_url: str) -> Any:
    async with served(redis_url) as api:
        yield api


async def ack_order(api: Served, key: Any, symbol: str, side: str, price: str, qty: str = "0.01") -> None:
    r = await api.signed("POST", "/api/v3/order", key, symbol=symbol, side=side, type="LIMIT", timeInForce="GTC",
                         quantity=qty, price=price, newOrderRespType="ACK")
    assert r.status_code == 200, r.text


async def collect_depth(ws: Any, until_u: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while not events or events[-1]["u"] < until_u:
        events.append(await recv_until(ws, lambda m: m.get("e") == "depthUpdate"))
    return events


def assert_gap_free(events: list[dict[str, Any]]) -> None:
    for previous, event in pairwise(events):
        assert event["U"] == previous["u"] + 1, "gap in the diff stream"


async def test_depth_streams_are_timed_and_gap_free(ws_api: Served) -> None:
    maker = await ws_api.account("maker", funds={"BTC": "1", "USDT": "100000"})
    async with ws_api.ws("/ws/btcusdt@depth@100ms") as fast, ws_api.ws("/ws/btcusdt@depth") as slow:
        for round_ in range(3):  # three bursts, each spread over a few ticks
            await asyncio.gather(*(ack_order(ws_api, maker, "BTCUSDT", "SELL", f"{31000 + 10 * round_ + i}.00")
                                   for i in range(5)))
            await asyncio.gather(*(ack_order(ws_api, maker, "BTCUSDT", "BUY", f"{29000 - 10 * round_ - i}.00")
                                   for i in range(5)))
        async def all_in() -> Any:  # ACK answers before the book has them: wait for all 30 levels
            book = (await ws_api.get("/api/v3/depth", symbol="BTCUSDT")).json()
            return book if len(book["bids"]) + len(book["asks"]) == 30 else None

        final = await eventually(all_in)
        fast_events = await collect_depth(fast, final["lastUpdateId"])
        slow_events = await collect_depth(slow, final["lastUpdateId"])
    for events in (fast_events, slow_events):
        assert events[0]["U"] == 1 and events[-1]["u"] == final["lastUpdateId"]
        assert_gap_free(events)
        levels = {(p, q) for e in events for p, q in e["a"]} | {(p, q) for e in events for p, q in e["b"]}
        assert ("31020.00000000", "0.01000000") in levels and ("28980.00000000", "0.01000000") in levels
    # event times follow the ticks: 100 ms apart (a late tick can shorten one gap), 1000 ms for @depth
    fast_gaps = [b["E"] - a["E"] for a, b in pairwise(fast_events)]
    slow_gaps = [b["E"] - a["E"] for a, b in pairwise(slow_events)]
    assert all(gap >= 40 for gap in fast_gaps), fast_gaps
    assert all(gap >= 500 for gap in slow_gaps), slow_gaps
    assert len(slow_events) <= len(fast_events)


async def test_all_tickers_array_every_second_with_changed_tickers_only(ws_api: Served) -> None:
    maker = await ws_api.account("maker", funds={"BTC": "1", "ETH": "10"})
    taker = await ws_api.account("taker", funds={"USDT": "100000"})
    async with ws_api.ws("/ws/!ticker@arr") as ws:
        for symbol, price in (("BTCUSDT", "30000.00"), ("ETHUSDT", "2000.00")):
            await ack_order(ws_api, maker, symbol, "SELL", price)
            r = await ws_api.signed("POST", "/api/v3/order", taker, symbol=symbol, side="BUY", type="LIMIT",
                                    timeInForce="GTC", quantity="0.01", price=price, newOrderRespType="RESULT")
            assert r.status_code == 200 and r.json()["status"] == "FILLED", r.text
        arrays = [await recv_json(ws)]
        while {t["s"] for a in arrays for t in a} != {"BTCUSDT", "ETHUSDT"}:
            arrays.append(await recv_json(ws))
        for array in arrays:
            assert isinstance(array, list) and array
            assert [t["s"] for t in array] == sorted({t["s"] for t in array})  # each market once
            assert all(t["e"] == "24hrTicker" and t["n"] == 1 for t in array)
        times = [a[0]["E"] for a in arrays]
        assert all(b - a >= 500 for a, b in pairwise(times))
        # nothing changes afterwards: no array in the next second and a half
        with pytest.raises(TimeoutError):
            await recv_json(ws, timeout=1.5)


async def listen_key(api: Served, key: Any) -> str:
    r = await api.client.post("/api/v3/userDataStream", headers={"X-MBX-APIKEY": key.api_key})
    assert r.status_code == 200, r.text
    return str(r.json()["listenKey"])


async def test_balance_update_on_deposit_and_withdrawal(ws_api: Served) -> None:
    alice = await ws_api.account("alice", funds={"USDT": "100"})
    bob = await ws_api.account("bob", funds={"USDT": "100"})
    alice_key, bob_key = await listen_key(ws_api, alice), await listen_key(ws_api, bob)
    orders_in = ws_api.exchange.orders_in
    async with ws_api.ws(f"/ws/{alice_key}") as ws, ws_api.ws(f"/ws/{bob_key}") as bob_ws:
        await orders_in.send(Deposit(time.time_ns(), alice.account_id, "BTC", 150_000_000), key=alice.account_id)
        update = await recv_until(ws, lambda m: m.get("e") == "balanceUpdate")
        assert set(update) == {"e", "E", "a", "d", "T"}
        assert (update["a"], update["d"]) == ("BTC", "1.50000000") and update["T"] <= update["E"]
        position = await recv_until(ws, lambda m: m.get("e") == "outboundAccountPosition")
        assert position["B"] == [{"a": "BTC", "f": "1.50000000", "l": "0.00000000"}]
        await orders_in.send(Withdraw(time.time_ns(), alice.account_id, "USDT", 2_500_000_000), key=alice.account_id)
        update = await recv_until(ws, lambda m: m.get("e") == "balanceUpdate")
        assert (update["a"], update["d"]) == ("USDT", "-25.00000000")
        # a refused withdrawal (more than available) changes nothing and sends no balanceUpdate
        await orders_in.send(Withdraw(time.time_ns(), alice.account_id, "USDT", 10**12), key=alice.account_id)
        await orders_in.send(Deposit(time.time_ns(), alice.account_id, "ETH", 1), key=alice.account_id)
        update = await recv_until(ws, lambda m: m.get("e") == "balanceUpdate")
        assert (update["a"], update["d"]) == ("ETH", "0.00000001")
        raw = await ws_api.redis.hget(f"balances:{alice.account_id}", "USDT")
        assert json.loads(raw)["available"] == 7_500_000_000
        # bob saw none of it
        await bob_ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
        assert await recv_json(bob_ws) == {"result": [bob_key], "id": 1}


async def test_listen_key_expiry_closes_the_open_stream(ws_api: Served) -> None:
    alice = await ws_api.account("alice")
    key = await listen_key(ws_api, alice)
    async with ws_api.ws(f"/stream?streams={key}/btcusdt@trade") as ws:
        assert (await request(ws, "LIST_SUBSCRIPTIONS", [], 1))["result"] == sorted([key, "btcusdt@trade"])
        await ws_api.redis.pexpire(f"listenkey:{key}", 50)
        expired = await recv_json(ws)
        assert expired["stream"] == key and set(expired["data"]) == {"e", "E", "listenKey"}
        assert (expired["data"]["e"], expired["data"]["listenKey"]) == ("listenKeyExpired", key)
        with pytest.raises(ConnectionClosed) as closed:
            await recv_json(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


async def test_websocket_limits(redis_url: str) -> None:
    config = ApiConfig(result_timeout_s=5.0, weight_per_minute=8, ws_connections_per_5m=4)
    async with served(redis_url, config) as api:
        # 5 requests a second are answered; the 6th closes the connection (1008 Too many requests)
        async with api.ws("/ws") as ws:
            for i in range(5):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            for i in range(5):
                assert await recv_json(ws) == {"result": [], "id": i}
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 5}))
            with pytest.raises(ConnectionClosed) as closed:
                await recv_json(ws)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "Too many requests")
        # 1024 streams per connection at most: a SUBSCRIBE beyond is refused whole
        async with api.ws("/ws") as ws:
            answer = await request(ws, "SUBSCRIBE", ["btcusdt@trade", "ethusdt@trade"] * 512 + ["btcusdt@depth"], 1)
            assert answer["error"]["code"] == 2 and "1024" in answer["error"]["msg"]
            assert (await request(ws, "LIST_SUBSCRIPTIONS", [], 2))["result"] == []
        # the WebSocket API shares the REST request weight per IP (8 here): ping weighs 1
        key = await api.account("bot")
        async with api.ws("/ws-api/v3") as ws:
            for i in range(8):
                await ws.send(json.dumps({"id": i, "method": "ping"}))
                assert (await recv_json(ws))["status"] == 200
            await ws.send(json.dumps({"id": "x", "method": "order.status",
                                      "params": ws_signed(key, {"symbol": "BTCUSDT", "orderId": 1})}))
            limited = await recv_json(ws)
            assert (limited["id"], limited["status"], limited["error"]["code"]) == ("x", 429, -1003)
            assert limited["error"]["data"]["retryAfter"] > time.time_ns() // 1_000_000
        # connection attempts per IP: 4 per 5 minutes here (3 used above); the 5th handshake gets 429
        async with api.ws("/ws/btcusdt@trade"):
            pass
        with pytest.raises(InvalidStatus) as refused:
            async with api.ws("/ws/btcusdt@trade"):
                pass
        response = refused.value.response
        assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
        assert json.loads(response.body)["code"] == -1003
