"""The persister archives every stream of a pipeline run exactly once, and survives PostgreSQL outages."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import asyncpg
import pytest

from infra.services import PostgresService
from pipeline.config import PipelineConfig
from pipeline.core.markets import Market
from pipeline.exchange import Exchange, build_exchange
from pipeline.transport.redis import RedisTransport
from recovery.persister import Persister, PersisterBusyError, PersisterConfig, StalePositionError, app_streams
from recovery.rows import RowBuilder
from tests.recovery.checks import assert_archive_complete
from tests.recovery.conftest import commands, send

FAST = PersisterConfig(block_ms=50, backoff_initial=0.05, backoff_max=0.5)

TABLE_COUNTS = "SELECT (SELECT count(*) FROM event_archive), (SELECT count(*) FROM trades)," \
               " (SELECT count(*) FROM ledger), (SELECT count(*) FROM orders), (SELECT count(*) FROM candles)"


async def quiesce(exchange: Exchange, *persisters: Persister) -> None:
    """Let the exchange finish, stop it (its agents and publish's clock, which appends a tick every
    5 s and would race the comparison), then let the persisters archive everything there is."""
    await exchange.app.wait_caught_up(timeout=60)
    await exchange.app.stop()
    for persister in persisters:
        await persister.wait_caught_up(timeout=60)


async def archive_run(exchange: Exchange, url: str, markets: dict[str, Market], n: int) -> Persister:
    persister = Persister(exchange.app.transport, url, config=FAST)
    await persister.start()
    await send(exchange, commands(markets, n))
    await quiesce(exchange, persister)
    return persister


@pytest.mark.parametrize("method", ["copy", "executemany"])
async def test_a_pipeline_run_is_archived_completely(
    exchange: Exchange, database_flush: str, db: asyncpg.Connection, markets: dict[str, Market], method: str
) -> None:
    persister = Persister(exchange.app.transport, database_flush,
                          config=PersisterConfig(block_ms=50, method=method))  # type: ignore[arg-type]
    await persister.start()
    await send(exchange, commands(markets, 1200))
    await quiesce(exchange, persister)
    await persister.stop()
    causes = await assert_archive_complete(db, exchange)
    assert {"hold", "release", "trade", "fee", "fee_income", "deposit"} <= set(causes)
    assert persister.status.failures == 0


async def test_accounts_over_three_partitions_are_archived_with_a_balanced_ledger(
    redis_flush: str, database_flush: str, db: asyncpg.Connection, markets: dict[str, Market]
) -> None:
    """Trades settled leg by leg on each account's partition, fees moved to the fee account's partition:
    the ledger still explains every balance (no adjustments) and pays the fee account what was charged."""
    transport = RedisTransport(redis_flush)
    exchange = build_exchange(transport, PipelineConfig(account_partitions=3), markets=markets)
    await exchange.app.start()
    try:
        await exchange.app.wait_running()
        persister = Persister(exchange.app.transport, database_flush, app_streams(exchange.app), config=FAST)
        await persister.start()
        await send(exchange, commands(markets, 1200))
        await quiesce(exchange, persister)
        await persister.stop()
        causes = await assert_archive_complete(db, exchange)
    finally:
        await exchange.app.stop()
        await transport.close()
    assert {"hold", "release", "trade", "fee", "fee_income", "deposit"} <= set(causes)
    fees = await db.fetchval("SELECT -sum(available_delta + locked_delta) FROM ledger WHERE cause = 'fee'")
    income = await db.fetchval("SELECT sum(available_delta) FROM ledger WHERE cause = 'fee_income'")
    assert fees == income > 0
    legs = await db.fetchval("SELECT count(*) FROM event_archive WHERE type = 'LegSettled'")
    trades = await db.fetchval("SELECT count(*) FROM trades")
    assert legs == 2 * trades > 0


async def test_a_replayed_batch_writes_nothing_twice(
    exchange: Exchange, database_flush: str, db: asyncpg.Connection, markets: dict[str, Market]
) -> None:
    persister = await archive_run(exchange, database_flush, markets, 600)
    await persister.stop()
    before = tuple(await db.fetchrow(TABLE_COUNTS))

    # a crash after the commit: a new persister starts from the committed positions
    again = Persister(exchange.app.transport, database_flush, config=FAST)
    assert await again.step(block_ms=0) == 0

    # a persister that lost track of its position: the position check refuses the batch
    again.positions = {}
    with pytest.raises(StalePositionError):
        await again.step(block_ms=0)
    assert tuple(await db.fetchrow(TABLE_COUNTS)) == before
    await again.stop()

    # positions lost in the database too: they are recovered from the archive
    positions = await db.fetch("SELECT stream, last_id, entries, messages FROM archive_positions ORDER BY stream")
    await db.execute("DELETE FROM archive_positions")
    replay = Persister(exchange.app.transport, database_flush, config=FAST)
    assert await replay.step(block_ms=0) == 0
    assert await db.fetch("SELECT stream, last_id, entries, messages FROM archive_positions ORDER BY stream") \
        == positions
    assert tuple(await db.fetchrow(TABLE_COUNTS)) == before
    await replay.stop()


async def test_rows_already_archived_are_not_written_again(
    exchange: Exchange, database_flush: str, db: asyncpg.Connection, markets: dict[str, Market]
) -> None:
    """The second guard: natural keys refuse a batch written twice, even past the position check."""
    persister = await archive_run(exchange, database_flush, markets, 300)
    await persister.stop()
    before = tuple(await db.fetchrow(TABLE_COUNTS))
    conn = await persister.connect()
    builder = RowBuilder(fee_account_id=0)
    for stream in persister.streams:
        for entry_id, data in await exchange.app.transport.read_range(stream, "0-0", 10_000):
            builder.add_entry(stream, entry_id, data)
    rows = builder.take()
    rows.positions = {}
    rows.balances = {}
    await persister._write(conn, rows)
    assert tuple(await db.fetchrow(TABLE_COUNTS)) == before
    await persister.stop()
    await assert_archive_complete(db, exchange)


async def test_postgres_down_under_load_then_the_archive_catches_up(
    exchange: Exchange, service_dir: Path, markets: dict[str, Market]
) -> None:
    service = PostgresService(service_dir)
    url = await asyncio.to_thread(service.start)
    persister = Persister(exchange.app.transport, url, config=FAST)
    try:
        await persister.start()
        flow = commands(markets, 2000, seed=11)
        await send(exchange, flow[:700])
        await exchange.app.wait_caught_up(timeout=60)
        await persister.wait_caught_up(timeout=60)

        await asyncio.to_thread(service.stop)
        await send(exchange, flow[700:1700])
        await exchange.app.wait_caught_up(timeout=60)  # matching goes on without PostgreSQL
        for _ in range(200):
            if persister.status.consecutive_failures >= 2:
                break
            await asyncio.sleep(0.05)
        assert persister.status.consecutive_failures >= 2
        assert not persister.status.connected
        assert sum((await persister.lag()).values()) > 0

        await asyncio.to_thread(service.start)
        await send(exchange, flow[1700:])
        await quiesce(exchange, persister)
        assert persister.status.connected
        await persister.stop()
        conn = await asyncpg.connect(url)
        try:
            await assert_archive_complete(conn, exchange)
        finally:
            await conn.close()
    finally:
        await persister.stop()
        await asyncio.to_thread(service.stop)
        shutil.rmtree(service_dir, ignore_errors=True)


async def test_the_persister_command_archives_what_the_streams_hold(
    exchange: Exchange, redis_flush: str, database_flush: str, db: asyncpg.Connection, markets: dict[str, Market]
) -> None:
    await send(exchange, commands(markets, 300))
    await quiesce(exchange)
    env = {**os.environ, "REDIS_URL": redis_flush, "DATABASE_URL": database_flush}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "infra", "persister", "--once", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert b"behind: 0" in out
    await assert_archive_complete(db, exchange)


async def test_a_second_persister_waits_while_the_first_is_active(
    exchange: Exchange, database_flush: str, db: asyncpg.Connection, markets: dict[str, Market]
) -> None:
    first = Persister(exchange.app.transport, database_flush, config=FAST)
    second = Persister(exchange.app.transport, database_flush, config=FAST)
    await first.connect()
    with pytest.raises(PersisterBusyError):
        await second.connect()
    await first.stop()
    await second.start()
    await send(exchange, commands(markets, 200))
    await quiesce(exchange, second)
    await second.stop()
    await assert_archive_complete(db, exchange)
