"""The whole exchange pipeline over real Valkey (AOF everysec), orders injected at `orders.in`.

    .venv/bin/python -m bench.pipeline_bench [--orders 100000] [--rate 5000] [--seconds 20] [--workers 1]

Two measurements, with the agents in `exchange worker` processes and the injector here:

1. throughput: `--orders` orders injected as fast as the pipeline takes them (entries of
   100 orders, as the API's group commit writes them); orders/s from the first order in
   until every agent has committed everything;
2. latency: orders offered open-loop at `--rate` per second for `--seconds` (a batch every
   2 ms, sent on schedule whether or not the pipeline keeps up, so coordinated omission
   does not hide delays); for every trade, the time from its taker order entering
   `orders.in` to the trade arriving on the published stream (`market.trades` when the
   publish agent exists, else `orders.events`), as a subscriber sees it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from typing import Any

import msgspec

from bench._valkey import running_valkey
from bench.flows import funding, order_flow
from pipeline.app import wait_for_condition
from pipeline.exchange import Exchange, build_exchange
from pipeline.transport.base import START
from pipeline.transport.redis import RedisTransport

WORKER_SPLITS = {
    1: ["validate,risk,settle,match,publish"],
    2: ["validate,risk,settle", "match,publish"],
}


def stamped(command: Any, ts: int) -> Any:
    """The command as if sent now (a cancel-replace's new order too)."""
    if hasattr(command, "new_order"):
        command = msgspec.structs.replace(command, new_order=msgspec.structs.replace(command.new_order, ts=ts))
    return msgspec.structs.replace(command, ts=ts)


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[index] / 1e6


async def start_workers(url: str, exchange: Exchange, workers: int) -> list[asyncio.subprocess.Process]:
    known = set(exchange.app.agents)
    processes = []
    for group in WORKER_SPLITS[workers]:
        agents = ",".join(a for a in group.split(",") if a in known)
        env = {**os.environ, "REDIS_URL": url}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "infra", "worker", "--agents", agents, env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line.startswith(b"worker running"):
            raise RuntimeError(f"worker did not start: {line!r}")
        processes.append(process)
    return processes


async def stop_workers(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        await asyncio.wait_for(process.wait(), 60)


def published_topic(exchange: Exchange) -> str:
    return "market.trades" if "market.trades" in exchange.app.topics else "orders.events"


async def throughput(url: str, orders: int, workers: int) -> tuple[float, int]:
    transport = RedisTransport(url)
    await transport.client.flushall()
    exchange = build_exchange(transport)
    markets = exchange.markets
    commands: list[Any] = [*funding(markets, range(1, 201)), *order_flow(markets, orders, seed=1,
                                                                          accounts=range(1, 201), mid=100_000)]
    processes = await start_workers(url, exchange, workers)
    start = time.perf_counter()
    for i in range(0, len(commands), 100):
        chunk = commands[i : i + 100]
        while True:
            try:
                await exchange.orders_in.send_many((getattr(c, "account_id", None), c) for c in chunk)
                break
            except Exception as exc:  # backpressure: the pipeline is full, try again shortly
                if type(exc).__name__ != "BackpressureError":
                    raise
                await asyncio.sleep(0.005)
    await wait_for_condition(lambda: caught_up(exchange), 600, "the pipeline to drain", interval=0.01)
    elapsed = time.perf_counter() - start
    trades = await count_trades(exchange)
    await stop_workers(processes)
    await transport.close()
    return len(commands) / elapsed, trades


async def caught_up(exchange: Exchange) -> bool:
    return all(v == 0 for v in (await exchange.app.lag()).values())


async def count_trades(exchange: Exchange) -> int:
    topic = exchange.app.topics["orders.events"]
    count, after = 0, START
    while entries := await exchange.app.transport.read_range(topic.stream(0), after, 1000):
        for _, raw in entries:
            count += sum(type(v).__name__ == "TradeExecuted" for v in topic.batch_decoder.decode(raw))
        after = entries[-1][0]
    return count


async def latency(url: str, rate: int, seconds: float, workers: int) -> dict[str, float]:
    transport = RedisTransport(url)
    await transport.client.flushall()
    exchange = build_exchange(transport)
    markets = exchange.markets
    total = int(rate * seconds)
    flow: list[Any] = list(order_flow(markets, total, seed=2, accounts=range(1, 201), mid=100_000))
    await exchange.orders_in.send_many((c.account_id, c) for c in funding(markets, range(1, 201)))
    processes = await start_workers(url, exchange, workers)
    topic = exchange.app.topics[published_topic(exchange)]
    samples: list[int] = []
    done = asyncio.Event()

    async def subscribe() -> None:
        position = (await transport.read_reverse(topic.stream(0), 1) or [(START, b"")])[0][0]
        while not done.is_set():
            for _, entries in await transport.read({topic.stream(0): position}, 500, 100):
                now = time.time_ns()
                for entry_id, raw in entries:
                    for value in topic.batch_decoder.decode(raw):
                        if type(value).__name__ in ("TradeExecuted", "Trade"):
                            samples.append(now - value.ts)
                    position = entry_id

    reader = asyncio.create_task(subscribe())
    per_tick = max(1, rate // 500)  # a batch every 2 ms
    start = time.perf_counter()
    sent = late = 0
    while sent < total:
        due = start + (sent / rate)
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.01:
            late += 1
        now = time.time_ns()
        chunk = [stamped(c, now) for c in flow[sent : sent + per_tick]]
        await exchange.orders_in.send_many((c.account_id, c) for c in chunk)
        sent += len(chunk)
    offered_for = time.perf_counter() - start
    await wait_for_condition(lambda: caught_up(exchange), 120, "the pipeline to drain", interval=0.01)
    done.set()
    await reader
    await stop_workers(processes)
    await transport.close()
    samples.sort()
    return {
        "offered/s": total / offered_for, "trades": len(samples), "late ticks": late,
        "p50 ms": percentile(samples, 0.50), "p95 ms": percentile(samples, 0.95),
        "p99 ms": percentile(samples, 0.99), "p99.9 ms": percentile(samples, 0.999),
        "max ms": samples[-1] / 1e6 if samples else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=1, choices=sorted(WORKER_SPLITS))
    parser.add_argument("--appendfsync", default="everysec", choices=["always", "everysec", "no"])
    args = parser.parse_args()
    with running_valkey(appendonly=True, appendfsync=args.appendfsync) as server:
        print(f"throughput: injecting {args.orders:,} orders ...", flush=True)
        rate, trades = asyncio.run(throughput(server.url, args.orders, args.workers))
        print(f"latency: offering {args.rate:,}/s for {args.seconds:g}s ...", flush=True)
        stats = asyncio.run(latency(server.url, args.rate, args.seconds, args.workers))
    print(f"\nAOF appendfsync={args.appendfsync}, agents in {args.workers} worker process(es)")
    print(f"{'throughput (orders/s, sustained)':<40} {rate:>12,.0f}   ({trades:,} trades)")
    for key, value in stats.items():
        print(f"{'latency ' + key:<40} {value:>12,.2f}")


if __name__ == "__main__":
    main()
