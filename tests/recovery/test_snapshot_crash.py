"""With real Valkey and PostgreSQL: snapshot under a flow, SIGKILL the worker, restart from snapshot + tail.

Also the operator commands (`exchange snapshot now|list|verify`, `exchange state diff`) against
the snapshots the worker wrote, and the fallback to the previous snapshot when the latest is corrupt.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench.flows import funding, order_flow
from pipeline.app import wait_for_condition
from pipeline.config import PipelineConfig
from pipeline.core.engine import MatchingEngine
from pipeline.exchange import Exchange, build_exchange
from pipeline.snapshots.config import SnapshotConfig
from pipeline.snapshots.manager import SnapshotManager
from pipeline.transport.base import START
from pipeline.transport.redis import RedisTransport
from recovery.snapshots import attach_snapshots

ROOT = Path(__file__).resolve().parents[2]
EXCHANGE = str(Path(sys.executable).with_name("exchange"))
CONFIG = PipelineConfig(lease_ttl_ms=1000)
SNAPSHOTS = SnapshotConfig(interval_s=0, trim=False)
WORKER = """
import sys
from pipeline.config import PipelineConfig
from pipeline.exchange import build_exchange
from pipeline.snapshots.config import SnapshotConfig
from pipeline.transport.redis import RedisTransport
from recovery.snapshots import attach_snapshots
exchange = build_exchange(RedisTransport(sys.argv[1]), PipelineConfig(lease_ttl_ms=1000))
attach_snapshots(exchange, sys.argv[2], SnapshotConfig(interval_s=0, trim=False))
exchange.app.run(on_ready=lambda: print("ready", flush=True))
"""

pytestmark = pytest.mark.slow


def _env(redis_url: str, database_url: str) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXCHANGE, *args], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


async def _send(exchange: Exchange, commands: list[Any]) -> None:
    for start in range(0, len(commands), 500):
        await exchange.orders_in.send_many((getattr(c, "account_id", None), c) for c in commands[start:start + 500])
    await exchange.app.wait_caught_up(timeout=90)


async def _expected(redis_url: str) -> dict[str, str]:
    """The state a clean rebuild from the streams gives: match by replaying its input, tables from changelogs."""
    transport = RedisTransport(redis_url)
    try:
        exchange = build_exchange(transport, CONFIG)
        engine = MatchingEngine(exchange.markets)
        decoder = exchange.orders_accepted.batch_decoder
        after = START
        while entries := await transport.read_range("orders.accepted:0", after, 2000):
            for _, raw in entries:
                for command in decoder.decode(raw):
                    engine.process(command)
            after = entries[-1][0]
        hashes = {"match": engine.state_hash()}
        for name, table in exchange.app.tables.items():
            await table.restore(transport, 0)
            hashes[name] = table.state_hash()
        return hashes
    finally:
        await transport.close()


def _hashes(exchange: Exchange) -> dict[str, str]:
    app = exchange.app
    return {"match": app.runners[("match", 0)].state.state_hash(),
            **{name: table.state_hash() for name, table in app.tables.items()}}


async def _restart(redis_url: str, database_url: str) -> tuple[Exchange, SnapshotManager]:
    exchange = build_exchange(RedisTransport(redis_url), CONFIG)
    manager = attach_snapshots(exchange, database_url, SNAPSHOTS)
    await exchange.app.start()
    await exchange.app.wait_running(timeout=30)

    async def recovered() -> bool:
        report = manager.recoveries.get(("match", 0))
        return report is not None and report.done

    await wait_for_condition(recovered, 30, "match to restore and replay its tail")
    return exchange, manager


async def _tail(redis_url: str, offset: str) -> int:
    transport = RedisTransport(redis_url)
    try:
        decoder = build_exchange(transport, CONFIG).orders_accepted.batch_decoder
        return sum(len(decoder.decode(raw)) for _, raw in await transport.read_range("orders.accepted:0", offset,
                                                                                       1_000_000))
    finally:
        await transport.close()


async def test_sigkill_then_restart_restores_the_pre_crash_state(redis_flush: str, database_flush: str) -> None:
    env = _env(redis_flush, database_flush)
    worker = await asyncio.create_subprocess_exec(sys.executable, "-c", WORKER, redis_flush, database_flush,
                                                  stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT)
    producer = build_exchange(RedisTransport(redis_flush), CONFIG)
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), 60)
        assert line.strip() == b"ready"
        markets = producer.markets
        commands = [*funding(markets, range(1, 9)), *order_flow(markets, 2500, seed=21)]
        await _send(producer, commands[:1500])

        # `exchange snapshot now`: the running worker snapshots every unit and the command waits for them
        now = await asyncio.to_thread(_cli, env, "snapshot", "now")
        assert now.returncode == 0, now.stderr
        conn = await asyncpg.connect(database_flush)
        try:
            rows = await conn.fetch("SELECT id, agent, offsets FROM snapshots WHERE request_id IS NOT NULL")
        finally:
            await conn.close()
        by_unit = {r["agent"]: r for r in rows}
        assert set(by_unit) == {"validate", "risk+settle", "match", "publish"}
        match_id = by_unit["match"]["id"]
        import json
        match_offset = json.loads(by_unit["match"]["offsets"])["inputs"]["orders.accepted:0"]

        await _send(producer, commands[1500:])  # the tail, after the snapshot
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        await producer.app.transport.close()

    expected = await _expected(redis_flush)
    tail = await _tail(redis_flush, match_offset)
    assert tail > 0
    exchange, manager = await _restart(redis_flush, database_flush)
    try:
        assert _hashes(exchange) == expected
        match = manager.recoveries[("match", 0)]
        assert match.snapshot_id == match_id and match.tail == tail and not match.fallback
        assert manager.recoveries[("risk+settle", 0)].snapshot_id == by_unit["risk+settle"]["id"]
    finally:
        await exchange.app.stop()  # clean: shutdown snapshots
        await exchange.app.transport.close()

    listing = await asyncio.to_thread(_cli, env, "snapshot", "list")
    assert listing.returncode == 0 and "risk+settle" in listing.stdout and "shutdown" in listing.stdout
    verify = await asyncio.to_thread(_cli, env, "snapshot", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    show = await asyncio.to_thread(_cli, env, "snapshot", "show", str(match_id))
    assert show.returncode == 0 and "orders" in show.stdout
    same = await asyncio.to_thread(_cli, env, "state", "diff", str(match_id), f"replay:orders.accepted@{match_offset}")
    assert same.returncode == 0 and "identical" in same.stdout, same.stdout + same.stderr

    # the newest match snapshot (the shutdown one) is corrupt: restart falls back to the one before
    conn = await asyncpg.connect(database_flush)
    try:
        newest = await conn.fetchval("SELECT max(id) FROM snapshots WHERE agent = 'match'")
        await conn.execute("UPDATE snapshots SET payload = substring(payload from 1 for 40) WHERE id = $1", newest)
    finally:
        await conn.close()
    differs = await asyncio.to_thread(_cli, env, "state", "diff", str(match_id), str(newest))
    assert differs.returncode == 2 and "does not decode" in differs.stderr
    verify = await asyncio.to_thread(_cli, env, "snapshot", "verify", str(newest))
    assert verify.returncode == 1 and "UNDECODABLE" in verify.stdout
    exchange, manager = await _restart(redis_flush, database_flush)
    try:
        assert _hashes(exchange) == expected
        match = manager.recoveries[("match", 0)]
        assert match.snapshot_id == match_id and "corrupt" in match.fallback and match.tail == tail
    finally:
        manager.units = {}  # no shutdown snapshots needed
        await exchange.app.stop()
        await exchange.app.transport.close()
