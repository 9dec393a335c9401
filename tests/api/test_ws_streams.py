"""Market streams over real WebSockets: every stream kind, combined streams, live requests, heartbeats."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from api.context import ApiConfig
from tests.api.conftest import eventually
from tests.api.wsclient import TIMEOUT, Served, recv_json, recv_until, request, served


@pytest.fixture
async def ws_api(redis_url: str) -> Any:
    async with served(redis_url) as api:
        yield api


def event(kind: str) -> Any:
    return lambda m: isinstance(m, dict) and m.get("e") == kind


async def test_every_stream_kind(ws_api: Served) -> None:
    maker = await ws_api.account("maker", funds={"BTC": "1"})
    taker = await ws_api.account("taker", funds={"USDT": "10000"})
    names = ["btcusdt@depth", "btcusdt@depth@100ms", "btcusdt@depth5", "btcusdt@depth10", "btcusdt@depth20@100ms",
             "btcusdt@trade",
             "btcusdt@aggTrade", "btcusdt@kline_1m", "btcusdt@ticker", "btcusdt@miniTicker", "btcusdt@bookTicker",
             "!ticker@arr"]
    sockets = [await ws_api.ws(f"/ws/{name}") for name in names]
    try:
        await ws_api.buy_sell(maker, taker, price="30000.00", qty="0.10000")
        ws = dict(zip(names, sockets, strict=True))
        diff = await recv_until(ws["btcusdt@depth"], event("depthUpdate"))  # 1000 ms: may merge add and take
        assert diff["s"] == "BTCUSDT" and diff["U"] <= diff["u"] and diff["a"][0][0] == "30000.00000000"
        fast = await recv_until(ws["btcusdt@depth@100ms"], event("depthUpdate"))
        assert fast["U"] == diff["U"] and fast["a"][0][0] == "30000.00000000"
        for name in ("btcusdt@depth5", "btcusdt@depth10", "btcusdt@depth20@100ms"):
            book = await recv_until(ws[name], lambda m: m["lastUpdateId"] >= diff["u"])
            assert set(book) == {"lastUpdateId", "bids", "asks"}
        trade = await recv_until(ws["btcusdt@trade"], event("trade"))
        assert (trade["s"], trade["t"], trade["p"], trade["q"], trade["m"]) == (
            "BTCUSDT", 1, "30000.00000000", "0.10000000", False)
        agg = await recv_until(ws["btcusdt@aggTrade"], event("aggTrade"))
        assert (agg["a"], agg["f"], agg["l"], agg["p"], agg["q"]) == (1, 1, 1, "30000.00000000", "0.10000000")
        kline = await recv_until(ws["btcusdt@kline_1m"], event("kline"))
        k = kline["k"]
        assert (k["i"], k["o"], k["c"], k["v"], k["n"], k["x"]) == ("1m", "30000.00000000", "30000.00000000",
                                                                    "0.10000000", 1, False)
        assert k["T"] - k["t"] == 59_999
        ticker = await recv_until(ws["btcusdt@ticker"], event("24hrTicker"))
        assert (ticker["s"], ticker["c"], ticker["v"], ticker["n"]) == ("BTCUSDT", "30000.00000000",
                                                                        "0.10000000", 1)
        assert Decimal(ticker["q"]) == Decimal("3000")
        mini = await recv_until(ws["btcusdt@miniTicker"], event("24hrMiniTicker"))
        assert mini["c"] == "30000.00000000" and "b" not in mini
        book_ticker = await recv_json(ws["btcusdt@bookTicker"])
        assert set(book_ticker) == {"u", "s", "b", "B", "a", "A"} and book_ticker["s"] == "BTCUSDT"
        assert book_ticker["a"] == "30000.00000000"
        arr = await recv_until(ws["!ticker@arr"], lambda m: isinstance(m, list))
        assert [t["s"] for t in arr] == ["BTCUSDT"] and arr[0]["e"] == "24hrTicker"
    finally:
        for s in sockets:
            await s.close()


async def test_combined_stream_and_live_requests(ws_api: Served) -> None:
    maker = await ws_api.account("maker", funds={"BTC": "1"})
    taker = await ws_api.account("taker", funds={"USDT": "10000"})
    async with ws_api.ws("/stream?streams=btcusdt@trade/btcusdt@bookTicker") as ws:
        assert await request(ws, "LIST_SUBSCRIPTIONS", [], 1) == {
            "result": ["btcusdt@bookTicker", "btcusdt@trade"], "id": 1}
        assert await request(ws, "SUBSCRIBE", ["ethusdt@trade", "btcusdt@kline_1s"], 2) == {"result": None, "id": 2}
        assert await request(ws, "UNSUBSCRIBE", ["btcusdt@trade"], 3) == {"result": None, "id": 3}
        assert (await request(ws, "LIST_SUBSCRIPTIONS", [], 4))["result"] == [
            "btcusdt@bookTicker", "btcusdt@kline_1s", "ethusdt@trade"]
        bad = await request(ws, "SUBSCRIBE", ["nosuch@trade"], 5)
        assert bad["error"]["code"] == 2 and "result" not in bad
        assert (await request(ws, "SUBSCRIBE", ["BTCUSDT@trade"], 6))["error"]["code"] == 2  # lower case only
        assert (await request(ws, "FROB", [], 7))["error"]["code"] == 2
        assert (await request(ws, "SUBSCRIBE", "btcusdt@trade", 8))["error"]["code"] == 1
        assert await request(ws, "GET_PROPERTY", ["combined"], 9) == {"result": True, "id": 9}
        await ws.send("{not json")
        assert (await recv_json(ws))["error"]["code"] == 3
        await ws.send("[]")
        assert (await recv_json(ws))["error"]["code"] == 3
        await ws_api.buy_sell(maker, taker)
        found = await recv_until(ws, lambda m: m.get("stream") == "btcusdt@kline_1s")
        assert found["data"]["e"] == "kline" and found["data"]["s"] == "BTCUSDT"
        # a fence: everything dispatched with the trade arrives before this answer; no unsubscribed stream
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 10}))
        seen = [found]
        while seen[-1].get("id") != 10:
            seen.append(await recv_json(ws))
        streams = {m["stream"] for m in seen if "stream" in m}
        assert "btcusdt@trade" not in streams and streams <= {"btcusdt@bookTicker", "btcusdt@kline_1s"}
        assert all(set(m) == {"stream", "data"} for m in seen if "stream" in m)


async def test_subscribe_on_bare_socket_heartbeat_and_bad_names(ws_api: Served) -> None:
    maker = await ws_api.account("maker", funds={"BTC": "1"})
    async with ws_api.ws("/ws") as ws:
        await asyncio.wait_for(await ws.ping(), TIMEOUT)  # client pings are answered
        assert await request(ws, "SUBSCRIBE", ["btcusdt@depth"], 1) == {"result": None, "id": 1}
        r = await ws_api.signed("POST", "/api/v3/order", maker, symbol="BTCUSDT", side="SELL", type="LIMIT",
                                timeInForce="GTC", quantity="0.01", price="31000", newOrderRespType="ACK")
        assert r.status_code == 200
        diff = await recv_until(ws, event("depthUpdate"))
        assert diff["a"] == [["31000.00000000", "0.01000000"]] and "stream" not in diff
        assert await request(ws, "SET_PROPERTY", ["combined", "yes"], 2) == {
            "error": {"code": 1, "msg": "Invalid value type: expected a boolean for 'combined'"}, "id": 2}
    for path in ("/ws/btcusdt@nothing", "/ws/nosuchusdt@trade", "/stream?streams=btcusdt@trade/x",
                 "/ws/" + "a" * 60):
        async with ws_api.ws(path) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert closed.value.rcvd.reason.startswith("Invalid stream name")


async def test_slow_consumer_is_dropped_not_waited_for(redis_url: str) -> None:
    config = ApiConfig(result_timeout_s=5.0, weight_per_minute=0, ws_queue=2, ws_slow_grace_s=0)
    async with served(redis_url, config) as api:
        maker = await api.account("maker", funds={"BTC": "1"})
        taker = await api.account("taker", funds={"USDT": "10000"})
        many = "/".join(["btcusdt@trade", "btcusdt@aggTrade", "btcusdt@depth", "btcusdt@depth@100ms",
                         "btcusdt@ticker", "btcusdt@miniTicker", "btcusdt@kline_1s", "btcusdt@kline_1m",
                         "!ticker@arr", "!miniTicker@arr"])
        async with api.ws(f"/stream?streams={many}") as slow, api.ws("/ws/btcusdt@trade") as fine:
            await api.buy_sell(maker, taker)  # one read brings > 2 messages for `slow` at once
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await recv_json(slow)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "slow consumer")
            assert (await recv_until(fine, event("trade")))["t"] == 1
            await api.buy_sell(maker, taker)
            assert (await recv_until(fine, event("trade")))["t"] == 2

        async def unsubscribed() -> bool:  # every subscription of closed connections is gone
            return not api.app.state.hub.subs

        await eventually(unsubscribed)


async def test_a_burst_a_client_drains_within_the_grace_does_not_drop_it(redis_url: str) -> None:
    """Over its queue size for less than the grace period (and under ten times it): kept, gets everything."""
    config = ApiConfig(result_timeout_s=5.0, weight_per_minute=0, ws_queue=2, ws_slow_grace_s=5.0)
    async with served(redis_url, config) as api:
        maker = await api.account("maker", funds={"BTC": "1"})
        taker = await api.account("taker", funds={"USDT": "10000"})
        many = "/".join(["btcusdt@trade", "btcusdt@aggTrade", "btcusdt@depth", "btcusdt@depth@100ms",
                         "btcusdt@ticker", "btcusdt@miniTicker", "btcusdt@kline_1s", "btcusdt@kline_1m"])
        async with api.ws(f"/stream?streams={many}") as busy:
            await api.buy_sell(maker, taker)  # one read brings more than 2 messages at once
            first = await recv_until(busy, lambda m: m.get("stream") == "btcusdt@trade")
            await api.buy_sell(maker, taker)
            second = await recv_until(busy, lambda m: m.get("stream") == "btcusdt@trade")
            assert (first["data"]["t"], second["data"]["t"]) == (1, 2)
        assert api.app.state.hub.dropped_slow == 0
