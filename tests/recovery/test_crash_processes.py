"""Crash test: the exchange as separate processes under a steady order flow; each one SIGKILLed in turn, many rounds.

Afterwards: every acknowledged order is present with a consistent final status (orders.in,
the replay, the read model and the archive agree), every asset is conserved, the state
(accounts tables, match's committed input, books, balances) equals a clean replay of the
same input, and the archive holds every event exactly once.

The second test runs the same with accounts on 3 partitions and markets on 2 in every
process (each worker runs every partition of its agents): match re-keys trades onto
``orders.settle``, settle settles each leg on its account's partition and sends the fees to
the fee account's. Its replay applies the commands in the order match saw them.

The seed is printed (and can be fixed with CRASH_SEED) so a failing run can be repeated;
CRASH_ROUNDS sets the number of kills (default 18, and 12 for the partitioned variant).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.conftest import make_service_dir
from tests.recovery.crash_harness import (
    ExchangeProcesses,
    OrderFlow,
    check_everything,
    finish,
    flowing,
    free_port,
    stream_added,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROUNDS = int(os.environ.get("CRASH_ROUNDS") or 18)
PARTITIONED_ROUNDS = int(os.environ.get("CRASH_ROUNDS") or 12)
PARTITIONS = {"EXCHANGE_ACCOUNT_PARTITIONS": "3", "EXCHANGE_MARKET_PARTITIONS": "2"}
ORDER = ("validate", "risk", "match", "publish", "persister", "api")


def crash_seed() -> int:
    seed = int(os.environ.get("CRASH_SEED") or time.time_ns() % 1_000_000)
    print(f"\ncrash seed {seed} (CRASH_SEED={seed} repeats its random choices)")
    return seed


async def kill_in_turn(procs: ExchangeProcesses, flow: OrderFlow, rng: random.Random, rounds: int,
                       redis_url: str, database_url: str) -> None:
    """Start everything and the flow; SIGKILL one process per round (in `ORDER`) and restart it at once;
    then let the flow go on and everything catch up. Every process is killed at the end either way."""
    try:
        await procs.start_all()
        await flow.setup()
        flow.start()
        for round_ in range(rounds):
            name = ORDER[round_ % len(ORDER)]
            await flowing(flow, 15, f"orders to flow before round {round_}", procs=procs)
            await procs.wait_ready(name)
            await asyncio.sleep(rng.uniform(0, 0.5))  # a random moment of its work
            await procs.kill(name)
            await procs.start(name, wait=False)  # back at once; it recovers while the next one dies
        for name in procs.specs:
            await procs.wait_ready(name)
        await flowing(flow, 50, "orders to flow after the last restart", procs=procs)
        await finish(procs, flow, redis_url, database_url)
    finally:
        await procs.kill_all()
        await flow.stop()


async def test_sigkill_each_process_in_turn(redis_flush: str, database_flush: str) -> None:
    seed = crash_seed()
    rng = random.Random(seed)
    log_dir: Path = make_service_dir("crash-processes-")
    port = free_port()
    procs = ExchangeProcesses(redis_flush, database_flush, port=port, log_dir=log_dir)
    flow = OrderFlow(redis_flush, port, seed, procs.env)
    await kill_in_turn(procs, flow, rng, ROUNDS, redis_flush, database_flush)

    verdict = await check_everything(redis_flush, database_flush, flow)
    print(f"logs in {log_dir}; kills {dict(procs.kills)}; {verdict.acked} acknowledged orders,"
          f" {verdict.orders_in} commands, {verdict.trades} trades, statuses {dict(verdict.statuses)};"
          f" failed requests {dict(flow.failures)}")
    assert sum(procs.kills.values()) == ROUNDS
    assert verdict.acked > 200 and verdict.trades > 50
    assert flow.failures, "killing the API should have failed some requests"
    shutil.rmtree(log_dir, ignore_errors=True)  # kept when a check fails, for the processes' logs


async def test_sigkill_each_process_in_turn_partitioned(redis_flush: str, database_flush: str) -> None:
    seed = crash_seed()
    rng = random.Random(seed)
    log_dir: Path = make_service_dir("crash-partitioned-")
    port = free_port()
    procs = ExchangeProcesses(redis_flush, database_flush, port=port, log_dir=log_dir, env=PARTITIONS)
    flow = OrderFlow(redis_flush, port, seed, procs.env)
    await kill_in_turn(procs, flow, rng, PARTITIONED_ROUNDS, redis_flush, database_flush)

    verdict = await check_everything(redis_flush, database_flush, flow)
    client = aioredis.Redis.from_url(redis_flush)
    try:  # every partition had work: the accounts on all three, both markets' matchers, legs re-keyed to each
        streams = [f"{topic}:{p}" for topic, n in (("orders.in", 3), ("orders.valid", 3), ("orders.accepted", 2),
                                                   ("orders.settle", 3)) for p in range(n)]
        added = {stream: await stream_added(client, stream) for stream in streams}
    finally:
        await client.aclose()
    print(f"logs in {log_dir}; kills {dict(procs.kills)}; {verdict.acked} acknowledged orders,"
          f" {verdict.orders_in} commands, {verdict.trades} trades, statuses {dict(verdict.statuses)};"
          f" messages per partition {added}; failed requests {dict(flow.failures)}")
    assert all(added.values()), f"a partition had nothing to do: {added}"
    assert sum(procs.kills.values()) == PARTITIONED_ROUNDS
    assert verdict.acked > 200 and verdict.trades > 50
    assert flow.failures, "killing the API should have failed some requests"
    shutil.rmtree(log_dir, ignore_errors=True)  # kept when a check fails, for the processes' logs
