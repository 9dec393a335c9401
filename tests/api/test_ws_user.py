"""User data streams: the listenKey flow, executionReport / outboundAccountPosition, one account only."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.api.conftest import error
from tests.api.wsclient import TIMEOUT, Served, recv_until, served


@pytest.fixture
async def ws_api(redis_url: str) -> Any:
    async with served(redis_url) as api:
        yield api


async def listen_key(api: Served, key: Any) -> str:
    r = await api.client.post("/api/v3/userDataStream", headers={"X-MBX-APIKEY": key.api_key})
    assert r.status_code == 200, r.text
    return str(r.json()["listenKey"])


async def test_user_stream_delivers_own_events_only(ws_api: Served) -> None:
    alice = await ws_api.account("alice", funds={"BTC": "1"})
    bob = await ws_api.account("bob", funds={"USDT": "10000"})
    alice_key = await listen_key(ws_api, alice)
    assert len(alice_key) == 60 and await listen_key(ws_api, alice) == alice_key  # same key while alive
    bob_key = await listen_key(ws_api, bob)
    assert bob_key != alice_key
    r = await ws_api.client.put("/api/v3/userDataStream", params={"listenKey": alice_key},
                                headers={"X-MBX-APIKEY": alice.api_key})
    assert r.status_code == 200 and r.json() == {}
    # someone else's key, no key, a bad key
    assert error(await ws_api.client.put("/api/v3/userDataStream", params={"listenKey": alice_key},
                                         headers={"X-MBX-APIKEY": bob.api_key})) == (400, -1125)
    assert error(await ws_api.client.post("/api/v3/userDataStream")) == (401, -2014)
    assert error(await ws_api.client.post("/api/v3/userDataStream",
                                          headers={"X-MBX-APIKEY": "A" * 64})) == (401, -2015)
    async with ws_api.ws(f"/ws/{alice_key}") as alice_ws, \
            ws_api.ws(f"/stream?streams={bob_key}/btcusdt@trade") as bob_ws:
        await ws_api.buy_sell(alice, bob, price="30000.00", qty="0.10000")
        new = await recv_until(alice_ws, lambda m: m.get("e") == "executionReport")
        assert (new["s"], new["S"], new["x"], new["X"], new["q"], new["p"]) == (
            "BTCUSDT", "SELL", "NEW", "NEW", "0.10000000", "30000.00000000")
        fill = await recv_until(alice_ws, lambda m: m.get("e") == "executionReport" and m["x"] == "TRADE")
        assert (fill["i"], fill["X"], fill["l"], fill["L"], fill["t"], fill["m"]) == (
            new["i"], "FILLED", "0.10000000", "30000.00000000", 1, True)
        position = await recv_until(alice_ws, lambda m: m.get("e") == "outboundAccountPosition"
                                    and any(b["a"] == "USDT" for b in m["B"]))
        usdt = next(b for b in position["B"] if b["a"] == "USDT")
        assert usdt["l"] == "0.00000000" and usdt["f"].endswith("0")
        # bob's combined stream: his own reports (wrapped under his listenKey), never alice's order
        seen: list[dict[str, Any]] = []

        def bob_filled(m: dict[str, Any]) -> bool:
            seen.append(m)
            return m["stream"] == bob_key and m["data"]["e"] == "executionReport" and m["data"]["X"] == "FILLED"

        await recv_until(bob_ws, bob_filled)
        reports = [m["data"] for m in seen if m["stream"] == bob_key and m["data"]["e"] == "executionReport"]
        assert reports and all(r["S"] == "BUY" and r["i"] != new["i"] for r in reports)
        # alice's socket: everything dispatched so far arrives before this answer; all of it alice's
        await alice_ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
        rest = [await recv_until(alice_ws, lambda m: True)]
        while rest[-1].get("id") != 1:
            rest.append(await recv_until(alice_ws, lambda m: True))
        assert rest[-1]["result"] == [alice_key]
        assert all(m["i"] == new["i"] for m in rest if m.get("e") == "executionReport")
        assert all({b["a"] for b in m["B"]} <= {"BTC", "USDT"} for m in rest if m.get("e") == "outboundAccountPosition")
    r = await ws_api.client.delete("/api/v3/userDataStream", params={"listenKey": alice_key},
                                   headers={"X-MBX-APIKEY": alice.api_key})
    assert r.status_code == 200 and r.json() == {}
    async with ws_api.ws(f"/ws/{alice_key}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
