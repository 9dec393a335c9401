"""Every family issue 7 names is on `/metrics` and moves when the exchange works.

One served exchange (five agents with snapshots into PostgreSQL, the persister, the API on
uvicorn) scraped at four moments: before anything, after orders over HTTP and WebSockets
(counters, histograms and WebSocket figures moved; a slow consumer was dropped), with the
agents and the persister stopped while commands keep coming (lag per consumer and stream
and persister lag above 0; the shutdown snapshots show age, pause and encode time), and
after they restart and catch up (lags back to 0, the snapshot older).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from api.accounts import create_account
from api.app import create_app
from api.context import ApiConfig
from pipeline.core.messages import Deposit
from pipeline.exchange import Exchange, build_exchange
from pipeline.snapshots.config import SnapshotConfig
from pipeline.transport.redis import RedisTransport
from recovery.persister import Persister, app_streams
from recovery.snapshots import attach_snapshots
from tests.ops.test_metrics import Samples, order, parse, value
from tests.serving import uvicorn_serving

AGENTS = ("validate", "risk", "match", "settle", "publish")
BUSY = "/".join(["btcusdt@trade", "btcusdt@depth", "btcusdt@depth@100ms", "btcusdt@ticker", "btcusdt@kline_1s",
                 "btcusdt@kline_1m", "!ticker@arr", "!miniTicker@arr"])


@dataclass
class Rig:
    exchange: Exchange
    transport: RedisTransport
    base_url: str
    database_url: str


@pytest.fixture
async def rig(redis_flush: str, database_flush: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setenv("DATABASE_URL", database_flush)
    transport = RedisTransport(redis_flush)
    exchange = build_exchange(transport)
    attach_snapshots(exchange, database_flush, SnapshotConfig(interval_s=0))
    await exchange.app.start()
    # a queue of 2 and no grace: a slow consumer shows at once
    app = create_app(exchange, config=ApiConfig(weight_per_minute=0, ws_queue=2, ws_slow_grace_s=0))
    try:
        async with uvicorn_serving(app) as port:
            await exchange.app.wait_running()
            yield Rig(exchange, transport, f"http://127.0.0.1:{port}", database_flush)
    finally:
        await exchange.app.stop()
        await transport.close()


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200
    return parse(response.text)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` matching `labels` (0 when there is none yet)."""
    return sum(v for got, v in samples.get(name, []) if all(got.get(k) == want for k, want in labels.items()))


async def until(condition: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, condition
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_every_family_is_present_and_moves(rig: Rig) -> None:
    exchange, client = rig.exchange, rig.transport.client
    persister = Persister(rig.transport, rig.database_url, app_streams(exchange.app))
    await persister.start()
    ws_url = rig.base_url.replace("http://", "ws://")
    async with httpx.AsyncClient(base_url=rig.base_url, timeout=30) as http:
        try:
            s0 = await scrape(http)
            assert value(s0, "exchange_ws_slow_consumers_dropped_total") == 0
            buyer = await create_account(client, "buyer")
            seller = await create_account(client, "seller")
            await exchange.orders_in.send(Deposit(time.time_ns(), buyer.account_id, "USDT", 10**14),
                                          key=buyer.account_id)
            await exchange.orders_in.send(Deposit(time.time_ns(), seller.account_id, "BTC", 10**10),
                                          key=seller.account_id)
            async with websockets.connect(f"{ws_url}/stream?streams={BUSY}") as slow, \
                    websockets.connect(f"{ws_url}/ws/btcusdt@trade") as watcher:
                await until(lambda: _ws_open(http, 2))
                for _ in range(4):
                    await order(http, seller, "SELL", "20000")
                    await order(http, buyer, "BUY", "20000")
                with pytest.raises(ConnectionClosed):  # it never kept up with its queue of 2: dropped
                    while True:
                        await asyncio.wait_for(slow.recv(), 20)
                await asyncio.wait_for(watcher.recv(), 20)  # the trade reached the client that reads
                await exchange.app.wait_caught_up(timeout=30)
                await persister.wait_caught_up(timeout=30)
                s1 = await scrape(http)
            assert value(s1, "exchange_ws_clients", route="/ws/{names}") == 1  # the watcher, still open
            await until(lambda: _ws_open(http, 0))

            # moved between s0 and s1: per-agent events/s counters, batches, batch sizes and times, API routes
            for agent in AGENTS:
                assert total(s1, "exchange_agent_events_consumed_total", agent=agent) > total(
                    s0, "exchange_agent_events_consumed_total", agent=agent), agent
                for name in ("exchange_agent_batches_total", "exchange_agent_messages_in_total",
                             "exchange_agent_batch_size_count", "exchange_agent_batch_size_sum",
                             "exchange_agent_batch_seconds_count", "exchange_agent_batch_seconds_sum"):
                    assert total(s1, name, agent=agent) > total(s0, name, agent=agent), (name, agent)
            assert total(s1, "exchange_stream_messages_added_total", stream="market.trades:0") == 4
            route = {"method": "POST", "route": "/api/v3/order"}
            assert total(s1, "exchange_api_request_seconds_count", **route) == 8
            assert total(s0, "exchange_api_request_seconds_count", **route) == 0
            assert total(s1, "exchange_api_request_seconds_bucket", le="+Inf", **route) == 8
            assert total(s1, "exchange_api_requests_total", status="200", **route) == 8
            assert total(s1, "exchange_api_request_seconds_count", method="GET", route="/metrics") >= 1
            assert value(s1, "exchange_ws_slow_consumers_dropped_total") == 1
            assert value(s1, "exchange_persister_lag_messages", stream="orders.in:0") == 0
            assert value(s1, "exchange_dead_letters_total") == 0

            # the agents and the persister stop (the agents snapshot as they stop); commands keep coming
            await persister.stop()
            await exchange.app.stop()
            for i in range(5):
                await exchange.orders_in.send(Deposit(time.time_ns(), buyer.account_id, "USDT", 100 + i),
                                              key=buyer.account_id)
            s2 = await scrape(http)
            assert value(s2, "exchange_consumer_lag_messages", consumer="validate", stream="orders.in:0") == 5
            assert value(s2, "exchange_persister_lag_messages", stream="orders.in:0") == 5
            for unit in ("validate", "risk+settle", "match", "publish"):
                assert value(s2, "exchange_snapshot_age_seconds", agent=unit, partition="0") >= 0
                assert value(s2, "exchange_snapshot_capture_seconds", agent=unit, partition="0") >= 0
                assert value(s2, "exchange_snapshot_encode_seconds", agent=unit, partition="0") > 0
                assert value(s2, "exchange_snapshot_size_bytes", agent=unit, partition="0") > 0
            assert value(s2, "exchange_agent_lease_held", agent="validate", partition="0") == 0

            # they come back and catch up: the lags fall to 0, the snapshots grow older
            await exchange.app.start()
            await exchange.app.wait_running()
            persister = Persister(rig.transport, rig.database_url, app_streams(exchange.app))
            await persister.start()
            await exchange.app.wait_caught_up(timeout=30)
            await persister.wait_caught_up(timeout=30)
            s3 = await scrape(http)
            assert value(s3, "exchange_consumer_lag_messages", consumer="validate", stream="orders.in:0") == 0
            assert value(s3, "exchange_persister_lag_messages", stream="orders.in:0") == 0
            assert total(s3, "exchange_agent_events_consumed_total", agent="validate") == total(
                s2, "exchange_agent_events_consumed_total", agent="validate") + 5
            assert value(s3, "exchange_agent_lease_held", agent="validate", partition="0") == 1
            assert value(s3, "exchange_snapshot_age_seconds", agent="match", partition="0") > value(
                s2, "exchange_snapshot_age_seconds", agent="match", partition="0")
        finally:
            await persister.stop()


async def _ws_open(http: httpx.AsyncClient, want: int) -> bool:
    return total(await scrape(http), "exchange_ws_clients") == want
