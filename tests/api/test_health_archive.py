"""`/healthz` reports the persister's archive lag; past `EXCHANGE_HEALTH_MAX_ARCHIVE_LAG` (if set) it is 503."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bench.flows import funding
from pipeline.exchange import Exchange
from recovery.persister import Persister, PersisterConfig, app_streams
from tests.api.conftest import eventually, start_api

pytestmark = pytest.mark.redis


@pytest.fixture
async def served(redis_url: str) -> AsyncIterator[tuple[Exchange, httpx.AsyncClient]]:
    exchange, transport, app = await start_api(redis_url)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            yield exchange, client
    finally:
        await app.state.api.writer.close()
        await exchange.app.stop()
        await transport.close()


async def _deposits(exchange: Exchange) -> None:
    await exchange.orders_in.send_many((d.account_id, d) for d in funding(exchange.markets, range(1, 4)))
    await exchange.app.wait_caught_up()


async def _health(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/healthz")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def test_a_lagging_archive_makes_healthz_fail_past_the_threshold_then_recover(
        served: tuple[Exchange, httpx.AsyncClient], database_flush: str, monkeypatch: pytest.MonkeyPatch) -> None:
    exchange, client = served
    monkeypatch.setenv("DATABASE_URL", database_flush)
    monkeypatch.setenv("EXCHANGE_HEALTH_MAX_ARCHIVE_LAG", "5")
    await _deposits(exchange)
    status, body = await _health(client)
    assert status == 503
    persister = body["persister"]
    assert not persister["ok"] and persister["max_lag"] == 5 and persister["lag"] > 5
    assert persister["streams"]["orders.in:0"] > 0
    assert all(agent["running"] for agent in body["agents"])  # the agents are fine: only the archive lags

    archive = Persister(exchange.app.transport, database_flush, app_streams(exchange.app), PersisterConfig())
    while await archive.step(block_ms=0):
        pass
    await archive.stop()

    async def healthy() -> dict[str, Any] | None:
        status, body = await _health(client)
        return body if status == 200 else None

    body = await eventually(healthy)
    assert body["persister"]["ok"] and body["persister"]["streams"] == {}


async def test_by_default_the_archive_lag_is_reported_only(
        served: tuple[Exchange, httpx.AsyncClient], database_flush: str, monkeypatch: pytest.MonkeyPatch) -> None:
    exchange, client = served
    monkeypatch.setenv("DATABASE_URL", database_flush)
    monkeypatch.delenv("EXCHANGE_HEALTH_MAX_ARCHIVE_LAG", raising=False)
    await _deposits(exchange)
    status, body = await _health(client)
    assert status == 200
    assert body["persister"]["ok"] and body["persister"]["lag"] > 0 and body["persister"]["max_lag"] == 0


async def test_postgres_unreachable_means_an_unknown_lag_not_a_failure(
        served: tuple[Exchange, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch) -> None:
    _, client = served
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("EXCHANGE_HEALTH_MAX_ARCHIVE_LAG", "5")
    started = time.monotonic()
    status, body = await _health(client)
    assert time.monotonic() - started < 3
    assert status == 200
    assert body["persister"]["lag"] is None and body["persister"]["error"]
