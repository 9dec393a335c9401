"""Two API replicas behind no shared memory: everything a client does on one is seen on the other.

Replica A is the app served in this process with the agents; replica B is a separate
`exchange api` process (no agents, no lease) on the same Valkey. A client that a load
balancer sends to either one in turn places an order on B and reads it on A, cancels on B
what it placed on A, opens its user data stream on B with a listenKey made on A, and signs
up on A to use its session cookie on B. Nothing lives in a replica but caches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from api.accounts import NewKey
from tests.api.wsclient import Served, recv_until, served
from tests.serving import api_process

pytestmark = pytest.mark.redis
UI = {"X-Exchange-Session": "1"}


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[tuple[Served, Served]]:
    async with served(redis_url) as a:
        with api_process(redis_url, EXCHANGE_API_WEIGHT_PER_MINUTE="0") as (process, port):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                b = Served(client, a.exchange, a.redis, a.app)
                b.ws_base = f"ws://127.0.0.1:{port}"
                yield a, b
    assert process.returncode == 0, "replica B did not stop cleanly on SIGTERM"


async def eventually(probe: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """The first truthy answer of `probe`, polled until `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (answer := await probe()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return answer


async def order_status(api: Served, key: NewKey, order_id: int) -> str:
    r = await api.signed("GET", "/api/v3/order", key, symbol="BTCUSDT", orderId=order_id)
    return str(r.json()["status"]) if r.status_code == 200 else ""


async def test_a_client_can_use_either_replica_for_any_request(replicas: tuple[Served, Served]) -> None:
    a, b = replicas
    alice = await a.account("alice", funds={"BTC": "1"})
    bob = await a.account("bob", funds={"USDT": "10000"})

    # placed on B (which runs no agent), seen resting on A
    r = await b.signed("POST", "/api/v3/order", alice, symbol="BTCUSDT", side="SELL", type="LIMIT",
                       timeInForce="GTC", quantity="0.10000", price="30000.00", newOrderRespType="ACK")
    assert r.status_code == 200, r.text
    sell = r.json()["orderId"]
    assert await eventually(lambda: order_status(a, alice, sell)) == "NEW"

    # bob's listenKey made on A, his user data stream opened on B; his crossing buy sent to A
    r = await a.client.post("/api/v3/userDataStream", headers={"X-MBX-APIKEY": bob.api_key})
    assert r.status_code == 200, r.text
    listen_key = r.json()["listenKey"]
    async with b.ws(f"/ws/{listen_key}") as ws:
        r = await a.signed("POST", "/api/v3/order", bob, symbol="BTCUSDT", side="BUY", type="LIMIT",
                           timeInForce="GTC", quantity="0.10000", price="30000.00", newOrderRespType="RESULT")
        assert r.status_code == 200 and r.json()["status"] == "FILLED", r.text
        fill = await recv_until(ws, lambda m: m.get("e") == "executionReport" and m["X"] == "FILLED")
        assert (fill["S"], fill["l"], fill["L"]) == ("BUY", "0.10000000", "30000.00000000")
    r = await b.client.put("/api/v3/userDataStream", params={"listenKey": listen_key},
                           headers={"X-MBX-APIKEY": bob.api_key})
    assert r.status_code == 200, r.text  # kept alive on the replica that did not make it
    assert await order_status(b, alice, sell) == "FILLED"
    r = await b.signed("GET", "/api/v3/myTrades", alice, symbol="BTCUSDT")
    assert [(t["orderId"], t["qty"], t["isBuyer"]) for t in r.json()] == [(sell, "0.10000000", False)]

    # placed on A, cancelled on B, seen cancelled on A
    r = await a.signed("POST", "/api/v3/order", alice, symbol="BTCUSDT", side="SELL", type="LIMIT",
                       timeInForce="GTC", quantity="0.20000", price="31000.00", newOrderRespType="RESULT")
    assert r.status_code == 200, r.text
    resting = r.json()["orderId"]
    r = await b.signed("DELETE", "/api/v3/order", alice, symbol="BTCUSDT", orderId=resting)
    assert r.status_code == 200 and r.json()["status"] == "CANCELED", r.text
    assert await order_status(a, alice, resting) == "CANCELED"
    r = await a.signed("GET", "/api/v3/openOrders", alice, symbol="BTCUSDT")
    assert r.status_code == 200 and r.json() == []

    # a web session started on A works on B (its cookie alone); logged out on B, refused on A
    r = await a.client.post("/api/x/signup", headers=UI,
                            data={"username": "carol", "password": "carol's long password"})
    assert r.status_code == 200, r.text
    carol = {**UI, "Cookie": f"exchange_session={r.cookies['exchange_session']}"}
    a.client.cookies.clear()  # each request below carries the cookie itself, as a browser would
    r = await b.client.get("/api/x/me", headers=carol)
    assert r.status_code == 200 and r.json()["username"] == "carol", r.text
    r = await b.client.get("/api/v3/account", headers=carol)
    assert r.status_code == 200 and r.json()["accountType"] == "SPOT", r.text
    r = await b.client.post("/api/x/logout", headers=carol)
    assert r.status_code == 200, r.text
    r = await a.client.get("/api/x/me", headers=carol)
    assert r.status_code == 401, r.text
