"""`GET /metrics`: the named series, in Prometheus text format, with sane values after orders flowed."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.accounts import NewKey, create_account
from api.auth import sign
from pipeline.core.messages import Deposit
from recovery.persister import Persister, app_streams
from tests.ops.conftest import Served

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    found = [v for got, v in samples.get(name, []) if all(got.get(k) == want for k, want in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


async def order(client: httpx.AsyncClient, key: NewKey, side: str, price: str) -> Any:
    query = urlencode({"symbol": "BTCUSDT", "side": side, "type": "LIMIT", "timeInForce": "GTC",
                       "quantity": "0.01", "price": price, "newOrderRespType": "ACK",
                       "timestamp": time.time_ns() // 1_000_000})
    response = await client.post("/api/v3/order", content=f"{query}&signature={sign(key.secret, query)}",
                                 headers={"X-MBX-APIKEY": key.api_key,
                                          "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    return response.json()


async def test_metrics_after_orders(served: Served, database_flush: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_flush)
    exchange, client = served.exchange, served.transport.client
    persister = Persister(served.transport, database_flush, app_streams(exchange.app))
    await persister.start()
    try:
        buyer = await create_account(client, "buyer")
        seller = await create_account(client, "seller")
        await exchange.orders_in.send(Deposit(time.time_ns(), buyer.account_id, "USDT", 10**14), key=buyer.account_id)
        await exchange.orders_in.send(Deposit(time.time_ns(), seller.account_id, "BTC", 10**10),
                                      key=seller.account_id)
        async with httpx.AsyncClient(base_url=served.base_url) as http:
            pairs = 5
            for _ in range(pairs):
                await order(http, seller, "SELL", "20000")
                await order(http, buyer, "BUY", "20000")
            await exchange.app.wait_caught_up(timeout=30)
            await persister.wait_caught_up(timeout=30)
            response = await http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = parse(response.text)
    finally:
        await persister.stop()

    orders = 2 * pairs + 2  # the orders and the two deposits
    # per-agent consumption from Redis (rate() of it is events/s), lag per consumer and stream
    assert value(samples, "exchange_agent_events_consumed_total", agent="validate", stream="orders.in:0") == orders
    assert value(samples, "exchange_stream_messages_added_total", stream="orders.in:0") == orders
    for agent, stream in (("validate", "orders.in:0"), ("match", "orders.accepted:0"), ("publish", "orders.events:0")):
        assert value(samples, "exchange_consumer_lag_messages", consumer=agent, stream=stream) == 0
    assert value(samples, "exchange_stream_messages_added_total", stream="market.trades:0") == pairs
    for agent in ("validate", "risk", "match", "settle", "publish"):
        assert value(samples, "exchange_agent_lease_held", agent=agent, partition="0") == 1
        # in-process histograms of the agents this process runs
        batches = value(samples, "exchange_agent_batches_total", agent=agent)
        assert batches >= 1
        assert value(samples, "exchange_agent_batch_size_count", agent=agent) >= 1
        assert value(samples, "exchange_agent_batch_seconds_count", agent=agent) >= 1
        assert 0 < value(samples, "exchange_agent_batch_seconds_sum", agent=agent) < 60
    assert value(samples, "exchange_agent_messages_in_total", agent="validate") == orders
    assert value(samples, "exchange_agent_batch_size_sum", agent="validate") == orders
    assert value(samples, "exchange_agent_batch_size_bucket", agent="validate", le="+Inf") == value(
        samples, "exchange_agent_batch_size_count", agent="validate")
    assert value(samples, "exchange_dead_letters_total") == 0
    # API latency by route (the route template, not the raw path)
    assert value(samples, "exchange_api_request_seconds_count", method="POST", route="/api/v3/order") == 2 * pairs
    requests = value(samples, "exchange_api_requests_total", method="POST", route="/api/v3/order", status="200")
    assert requests == 2 * pairs
    assert 0 < value(samples, "exchange_api_request_seconds_sum", method="POST", route="/api/v3/order") < 60
    # WebSockets and the persister
    assert value(samples, "exchange_ws_slow_consumers_dropped_total") == 0
    assert value(samples, "exchange_persister_lag_messages", stream="orders.in:0") == 0
    assert value(samples, "exchange_persister_lag_messages", stream="market.trades:0") == 0


async def test_metrics_counts_websocket_clients(served: Served) -> None:
    import websockets

    ws_url = served.base_url.replace("http://", "ws://")
    async with websockets.connect(f"{ws_url}/ws/btcusdt@trade"), httpx.AsyncClient(base_url=served.base_url) as http:
        async def open_clients() -> float:
            samples = parse((await http.get("/metrics")).text)
            return value(samples, "exchange_ws_clients", route="/ws/{names}")

        deadline = time.monotonic() + 10
        while await open_clients() != 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient(base_url=served.base_url) as http:
        while value(parse((await http.get("/metrics")).text), "exchange_ws_clients", route="/ws/{names}") != 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
