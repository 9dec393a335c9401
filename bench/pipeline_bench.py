"""The whole exchange pipeline over real Valkey (AOF everysec), orders injected at `orders.in`.

    .venv/bin/python -m bench.pipeline_bench [--orders 100000] [--rate 5000] [--seconds 20] [--workers 1]
        [--uvloop/--no-uvloop] [--profile DIR]

Two measurements, with the agents in `exchange worker` processes and the injector here:

1. throughput: `--orders` orders injected as fast as the pipeline takes them (entries of
   100 orders, as the API's group commit writes them); orders/s from the first order in
   until every agent has committed everything;
2. latency: orders offered open-loop at `--rate` per second for `--seconds` (a batch every
   2 ms, sent on schedule whether or not the pipeline keeps up, so coordinated omission
   does not hide delays); for every trade, the time from its taker order entering
   `orders.in` to the trade arriving on the published stream (`market.trades` when the
   publish agent exists, else `orders.events`), as a subscriber sees it.

The box is shared, so wall-clock throughput is noisy: the throughput phase also reports
the CPU time (user + system, from /proc) each process spent per order -- every worker,
the Valkey server and the injector -- which other load disturbs much less. With
``--profile DIR`` each worker is sampled by py-spy during both phases (raw collapsed
stacks in DIR, summarised per agent at the end, scaled to each worker's CPU per order).
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

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    return time.process_time()


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


async def start_workers(
    url: str, exchange: Exchange, workers: int, uvloop: bool | None = None
) -> list[asyncio.subprocess.Process]:
    known = set(exchange.app.agents)
    processes = []
    for group in WORKER_SPLITS[workers]:
        agents = ",".join(a for a in group.split(",") if a in known)
        env = {**os.environ, "REDIS_URL": url}
        if uvloop is not None:
            env["EXCHANGE_UVLOOP"] = "1" if uvloop else "0"
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


async def start_profilers(
    processes: list[asyncio.subprocess.Process], directory: str, phase: str = "throughput"
) -> list[Any]:
    """py-spy, sampling each worker (raw collapsed stacks, idle frames left out)."""
    os.makedirs(directory, exist_ok=True)
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    profilers = []
    for index, process in enumerate(processes):
        profilers.append(await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(process.pid), "--format", "raw", "--rate", "250", "--nonblocking",
            "-o", os.path.join(directory, f"{phase}-worker-{index}.txt"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        ))
    await asyncio.sleep(1.0)  # py-spy attaches
    return profilers


async def stop_profilers(profilers: list[Any]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        await asyncio.wait_for(profiler.wait(), 60)


async def throughput(
    url: str, orders: int, workers: int, server_pid: int, uvloop: bool | None = None, profile: str | None = None
) -> tuple[float, int, dict[str, float]]:
    transport = RedisTransport(url)
    await transport.client.flushall()
    exchange = build_exchange(transport)
    markets = exchange.markets
    commands: list[Any] = [*funding(markets, range(1, 201)), *order_flow(markets, orders, seed=1,
                                                                          accounts=range(1, 201), mid=100_000)]
    processes = await start_workers(url, exchange, workers, uvloop)
    profilers = await start_profilers(processes, profile) if profile else []
    pids = {f"worker {i}": p.pid for i, p in enumerate(processes)} | {"valkey": server_pid}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    own_before = own_cpu_seconds()
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
    cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / len(commands) * 1e6 for name, pid in pids.items()}
    cpu["injector"] = (own_cpu_seconds() - own_before) / len(commands) * 1e6
    cpu["wall"] = elapsed / len(commands) * 1e6
    await stop_profilers(profilers)
    trades = await count_trades(exchange)
    await stop_workers(processes)
    await transport.close()
    return len(commands) / elapsed, trades, cpu


async def caught_up(exchange: Exchange) -> bool:
    """Every agent has committed everything added to its inputs.

    One pipelined round trip (the same counters as `App.lag`, which scans every stream
    and takes ~20 round trips: polled every 10 ms that loaded Valkey and the injector
    enough to distort the measurement on 2 cores).
    """
    pairs = [(agent.name, stream) for agent in exchange.app.agents.values()
             for topic in agent.topics for stream in topic.streams]
    client = exchange.app.transport.client  # type: ignore[attr-defined]
    async with client.pipeline(transaction=False) as pipe:
        for name, stream in pairs:
            pipe.hget(f"meta:{stream}", "added")
            pipe.hget(f"pos:{name}", f"n:{stream}")
        values = await pipe.execute()
    return all(int(values[i] or 0) == int(values[i + 1] or 0) for i in range(0, len(values), 2))


async def count_trades(exchange: Exchange) -> int:
    topic = exchange.app.topics["orders.events"]
    count, after = 0, START
    while entries := await exchange.app.transport.read_range(topic.stream(0), after, 1000):
        for _, raw in entries:
            count += sum(type(v).__name__ == "TradeExecuted" for v in topic.batch_decoder.decode(raw))
        after = entries[-1][0]
    return count


async def latency(
    url: str, rate: int, seconds: float, workers: int, server_pid: int, uvloop: bool | None = None,
    profile: str | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    transport = RedisTransport(url)
    await transport.client.flushall()
    exchange = build_exchange(transport)
    markets = exchange.markets
    total = int(rate * seconds)
    flow: list[Any] = list(order_flow(markets, total, seed=2, accounts=range(1, 201), mid=100_000))
    await exchange.orders_in.send_many((c.account_id, c) for c in funding(markets, range(1, 201)))
    processes = await start_workers(url, exchange, workers, uvloop)
    profilers = await start_profilers(processes, profile, "latency") if profile else []
    pids = {f"worker {i}": p.pid for i, p in enumerate(processes)} | {"valkey": server_pid}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
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
    cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / total * 1e6 for name, pid in pids.items()}
    done.set()
    await reader
    await stop_profilers(profilers)
    await stop_workers(processes)
    await transport.close()
    samples.sort()
    return cpu, {
        "offered/s": total / offered_for, "trades": len(samples), "late ticks": late,
        "p50 ms": percentile(samples, 0.50), "p95 ms": percentile(samples, 0.95),
        "p99 ms": percentile(samples, 0.99), "p99.9 ms": percentile(samples, 0.999),
        "max ms": samples[-1] / 1e6 if samples else float("nan"),
    }


AGENT_FILES = {"validate": "validate.py", "risk": "risk.py", "match": "match.py", "settle": "settle.py",
               "publish": "publish/agent.py"}


def classify(frames: list[str]) -> tuple[str, str]:
    """(agent or "loop", part) of one sampled stack, root first."""
    agent = None
    for index, frame in enumerate(frames):
        name, _, where = frame.partition(" (")
        name = name.rsplit(".", 1)[-1]
        if agent is None and name in AGENT_FILES and AGENT_FILES[name] in where:
            agent = name
            rest = frames[index + 1 :]
            names = [f.partition(" (")[0].rsplit(".", 1)[-1] for f in rest]
            if "_commit" in names:
                return agent, "runtime: commit"
            if "_fetch" in names or "next_unit" in names:
                return agent, "runtime: read/decode"
            if any("pipeline/core/" in f for f in rest):
                return agent, "core"
            if "emit" in names or "write" in names:
                return agent, "agent: emit/encode"
            if names and names[-1] in ("mirror", "__setitem__", "_write", "__delitem__"):
                return agent, "agent: table writes"
            if any("pipeline/tables/" in f for f in rest):
                return agent, "agent: table writes"
            return agent, "agent"
    text = ";".join(frames)
    if "redis/" in text or "hiredis" in text:
        return "loop", "redis client (outside agent tasks)"
    return "loop", "event loop / other"


def profile_split(directory: str, phase: str, cpu: dict[str, float]) -> None:
    """Samples per (agent, part) from py-spy raw output, scaled to CPU us per order of each worker."""
    for path in sorted(os.listdir(directory)):
        if not path.startswith(f"{phase}-worker-"):
            continue
        counts: dict[tuple[str, str], int] = {}
        with open(os.path.join(directory, path)) as f:
            for line in f:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if not stack:
                    continue
                key = classify(stack.split(";"))
                counts[key] = counts.get(key, 0) + int(count)
        total = sum(counts.values()) or 1
        worker_us = cpu.get(f"worker {path[len(phase) + 8:-4]}", 0.0)
        print(f"\n{path}: {total} samples; shares scaled to this worker's {worker_us:.1f} us CPU/order")
        agents: dict[str, int] = {}
        for (agent, _), n in counts.items():
            agents[agent] = agents.get(agent, 0) + n
        for agent, n in sorted(agents.items(), key=lambda kv: -kv[1]):
            print(f"  {agent:<10} {100 * n / total:5.1f}%  {worker_us * n / total:7.1f} us/order")
            for (a, part), m in sorted(counts.items(), key=lambda kv: -kv[1]):
                if a == agent:
                    print(f"      {part:<38} {100 * m / total:5.1f}%  {worker_us * m / total:7.1f} us/order")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=1, choices=sorted(WORKER_SPLITS))
    parser.add_argument("--appendfsync", default="everysec", choices=["always", "everysec", "no"])
    parser.add_argument("--uvloop", action=argparse.BooleanOptionalAction, default=None,
                        help="force the workers' event loop (default: the worker's own choice)")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the workers during the throughput phase")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    stats: dict[str, float] = {}
    latency_cpu: dict[str, float] = {}
    with running_valkey(appendonly=True, appendfsync=args.appendfsync) as server:
        print(f"throughput: injecting {args.orders:,} orders ...", flush=True)
        rate, trades, cpu = asyncio.run(
            throughput(server.url, args.orders, args.workers, server.process.pid, args.uvloop, args.profile))
        if not args.skip_latency:
            print(f"latency: offering {args.rate:,}/s for {args.seconds:g}s ...", flush=True)
            latency_cpu, stats = asyncio.run(latency(
                server.url, args.rate, args.seconds, args.workers, server.process.pid, args.uvloop, args.profile))
    loop = {None: "worker default", True: "uvloop", False: "asyncio"}[args.uvloop]
    print(f"\nAOF appendfsync={args.appendfsync}, agents in {args.workers} worker process(es), loop: {loop}")
    print(f"{'throughput (orders/s, sustained)':<40} {rate:>12,.0f}   ({trades:,} trades)")
    for name, micros in cpu.items():
        label = "wall time" if name == "wall" else f"CPU {name}"
        print(f"{label + ' (us/order)':<40} {micros:>12,.1f}")
    for key, value in stats.items():
        print(f"{'latency ' + key:<40} {value:>12,.2f}")
    for name, micros in latency_cpu.items():
        print(f"{'latency CPU ' + name + ' (us/order)':<40} {micros:>12,.1f}")
    if args.profile:
        profile_split(args.profile, "throughput", cpu)
        if latency_cpu:
            profile_split(args.profile, "latency", latency_cpu)


if __name__ == "__main__":
    main()
