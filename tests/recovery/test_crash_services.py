"""Crash tests of the servers: Valkey SIGKILLed mid-flow (AOF `always`), PostgreSQL stopped for a while under load.

- Valkey: every acknowledged order survives the server's death (acknowledged = the API
  answered 200 after the write returned, and `appendfsync always` fsyncs before that
  reply); the workers, the API and the flow reconnect by themselves, and afterwards the
  whole state equals a clean replay of orders.in.
- PostgreSQL: matching goes on while it is down (orders are processed and settled), the
  persister keeps retrying, and once PostgreSQL is back the archive catches up completely:
  every event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
from pathlib import Path

import psutil
import pytest
import redis.asyncio as aioredis

from infra.services import PostgresService, ValkeyService
from tests.conftest import make_service_dir
from tests.recovery.crash_harness import (
    ExchangeProcesses,
    OrderFlow,
    check_everything,
    finish,
    flowing,
    free_port,
    stream_added,
    wait_until,
)
from tests.recovery.test_crash_processes import crash_seed

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def test_valkey_sigkilled_mid_flow_loses_nothing_acknowledged(service_dir: Path) -> None:
    seed = crash_seed()
    rng = random.Random(seed)
    valkey = ValkeyService(service_dir, appendfsync="always")
    url = valkey.start()
    try:
        log_dir = make_service_dir("crash-valkey-")
        port = free_port()
        procs = ExchangeProcesses(url, "postgresql://unused", port=port, log_dir=log_dir,
                                  only=("validate", "risk", "match", "publish", "api"))
        flow = OrderFlow(url, port, seed, procs.env)
        try:
            await procs.start_all()
            await flow.setup()
            flow.start()
            for outage in range(2):
                await flowing(flow, 80, f"orders to flow before outage {outage}")
                await asyncio.sleep(rng.uniform(0, 0.3))
                pid = valkey.pid
                assert pid is not None
                acked_before_kill = len(flow.acks)
                os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).wait(10)
                await asyncio.sleep(rng.uniform(0.2, 1.0))  # down for a moment
                assert valkey.start() == url  # same port: every client reconnects to it
                await flowing(flow, 80, f"orders to flow after outage {outage}")
                assert len(flow.acks) > acked_before_kill
            await finish(procs, flow, url, None)
        finally:
            await procs.kill_all()
            await flow.stop()
        verdict = await check_everything(url, "", flow, archive=False)
    finally:
        valkey.stop()  # also when a step failed: no server left behind
    print(f"logs in {log_dir}; {verdict.acked} acknowledged orders, {verdict.trades} trades; failed requests"
          f" {dict(flow.failures)}")
    assert flow.failures, "the outages should have failed some requests"
    shutil.rmtree(log_dir, ignore_errors=True)  # kept when a check fails, for the processes' logs


async def test_postgres_down_under_load_then_the_archive_catches_up(redis_flush: str, service_dir: Path) -> None:
    seed = crash_seed()
    postgres = PostgresService(service_dir)
    database = postgres.start()
    try:
        log_dir = make_service_dir("crash-postgres-")
        procs = ExchangeProcesses(redis_flush, database, port=0, log_dir=log_dir,
                                  only=("validate", "risk", "match", "publish", "persister"))
        flow = OrderFlow(redis_flush, None, seed, procs.env)  # straight into orders.in, as the API's writer does
        client = aioredis.Redis.from_url(redis_flush)
        try:
            await procs.start_all()
            await flow.setup()
            flow.start()
            await flowing(flow, 150, "orders to flow")
            postgres.stop()
            settled = await stream_added(client, "accounts.events:0")
            await flowing(flow, 400, "orders to flow while PostgreSQL is down")

            async def matching_goes_on() -> bool:  # orders are matched and settled without PostgreSQL
                return await stream_added(client, "accounts.events:0") > settled + 400

            await wait_until(matching_goes_on, 60, "settlements while PostgreSQL is down")
            assert procs.running["persister"].process.returncode is None, "the persister must wait, not die"
            assert postgres.start() == database
            await finish(procs, flow, redis_flush, database)  # waits for the archive to catch up completely
        finally:
            await procs.kill_all()
            await flow.stop()
            await client.aclose()
        verdict = await check_everything(redis_flush, database, flow)
    finally:
        postgres.stop()  # also when a step failed: no server left behind
    print(f"logs in {log_dir}; {verdict.acked} orders, {verdict.trades} trades archived exactly once")
    shutil.rmtree(log_dir, ignore_errors=True)
