"""How fast the persister archives, writing with COPY (temp table + INSERT ... SELECT) or executemany.

    DATABASE_URL=postgresql://... python -m bench.persister_bench [--orders 20000] [--rounds 3]

Runs the pipeline in-process (memory transport) on a generated flow, then archives
its streams from scratch into a scratch schema once per method and round, side by
side, and prints messages per second for each. The schemas are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import asyncpg

from bench.flows import funding, order_flow
from pipeline.exchange import build_exchange
from pipeline.transport.memory import MemoryTransport
from recovery.persister import Persister, PersisterConfig, WriteMethod


async def pipeline_output(orders: int) -> MemoryTransport:
    transport = MemoryTransport()
    exchange = build_exchange(transport)
    await exchange.app.start()
    await exchange.app.wait_running()
    commands: list[Any] = [*funding(exchange.markets, range(1, 9)), *order_flow(exchange.markets, orders, seed=1)]
    for start in range(0, len(commands), 500):
        await exchange.orders_in.send_many((getattr(c, "account_id", None), c) for c in commands[start:start + 500])
    await exchange.app.wait_caught_up(timeout=600)
    await exchange.app.stop()
    return transport


async def archive_once(transport: MemoryTransport, url: str, method: WriteMethod) -> tuple[int, float]:
    schema = f"bench_persister_{method}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    separator = "&" if "?" in url else "?"
    persister = Persister(transport, f"{url}{separator}search_path={schema}", config=PersisterConfig(method=method))
    await persister.connect()  # migrations are not part of the measurement
    started = time.perf_counter()
    messages = 0
    while written := await persister.step(block_ms=0):
        messages += written
    elapsed = time.perf_counter() - started
    await persister.stop()
    return messages, elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"]
    transport = await pipeline_output(args.orders)
    results: dict[str, list[float]] = {"copy": [], "executemany": []}
    methods: list[WriteMethod] = ["copy", "executemany"]
    for _ in range(args.rounds):
        for method in methods:
            messages, elapsed = await archive_once(transport, url, method)
            results[method].append(messages / elapsed)
            print(f"{method:12s} {messages} messages in {elapsed:.2f}s: {messages / elapsed:,.0f}/s", flush=True)
    best = {m: max(v) for m, v in results.items()}
    print(f"best: copy {best['copy']:,.0f}/s, executemany {best['executemany']:,.0f}/s, "
          f"ratio copy/executemany {best['copy'] / best['executemany']:.2f}")
    conn = await asyncpg.connect(url)
    try:
        for method in methods:
            await conn.execute(f"DROP SCHEMA IF EXISTS bench_persister_{method} CASCADE")
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
