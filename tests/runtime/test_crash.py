"""Crash tests: SIGKILL a worker at random points mid-batch, many times; nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from pipeline.app import wait_for_condition
from pipeline.transport.redis import RedisTransport
from tests.runtime.pipeline_fixture import Number, build_app
from tests.runtime.test_app import outputs

pytestmark = pytest.mark.redis


@pytest.fixture
async def redis_transport(redis_url: str) -> AsyncIterator[RedisTransport]:
    transport = RedisTransport(redis_url)
    await transport.client.flushall()
    yield transport
    await transport.close()


async def start_worker(url: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.runtime.crash_worker", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line.strip() == b"ready", line
    return process


async def consumed(transport: RedisTransport) -> int:
    return sum(p.consumed for p in (await transport.positions("double")).values())


async def test_sigkill_mid_batch_loses_nothing_and_applies_nothing_twice(
    redis_transport: RedisTransport, redis_url: str
) -> None:
    rng = random.Random(20261130)
    app, numbers, _ = build_app(redis_transport)  # the test's own view of the same topics
    sent = 0
    interrupted = 0  # rounds in which the kill landed while work remained
    for _ in range(10):
        for start in range(sent, sent + 1500, 50):  # entries of 50 messages, like API group commits
            await numbers.send_many((i, Number(i)) for i in range(start, start + 50))
        sent += 1500
        before = await consumed(redis_transport)
        worker = await start_worker(redis_url)

        async def progressing(before: int = before) -> bool:
            return await consumed(redis_transport) > before

        await wait_for_condition(progressing, 30, "the worker to commit a batch")
        await asyncio.sleep(rng.uniform(0, 0.05))  # then a random moment in the middle of the work
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        interrupted += await consumed(redis_transport) < sent
    assert interrupted >= 8, "the kills should land while work remains"

    worker = await start_worker(redis_url)

    async def caught_up() -> bool:
        return await consumed(redis_transport) == sent

    await wait_for_condition(caught_up, 60, "the last worker to finish")
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(worker.wait(), 30) == 0

    assert await outputs(redis_transport, app) == Counter(range(sent))
    counts = app.tables["counts"]
    restored: Counter[int] = Counter()
    for p in range(counts.partitions):
        await counts.restore(redis_transport, p)
        restored.update(counts.partition(p))
    assert restored == Counter({r: sent // 5 for r in range(5)})
