"""Runtime hop benchmark: one agent hop through the runtime vs a plain redis-py hop, and a 5-agent chain.

    .venv/bin/python -m bench.runtime_hop [--events 200000] [--appendfsync everysec]

Each case drains a pre-filled input stream through the hop(s) on a private Valkey
(AOF on, the fsync policy given) and reports events/s; the plain redis-py hop
(XREAD 500 + pipelined XADD + offset HSET) runs in the same process against the same
server as the baseline, and results are quoted as ratios to it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis

from bench._valkey import running_valkey
from pipeline.agent import AgentStream
from pipeline.app import App, wait_for_condition
from pipeline.batching import pack
from pipeline.messages import Codec, Message
from pipeline.topics import Topic
from pipeline.transport.redis import RedisTransport


class Event(Message, frozen=True):
    """A small event, about the size of an order command."""

    seq: int
    account: int
    symbol: str
    price: int
    qty: int
    ts: int


CODEC: Codec[Event] = Codec(Event)


async def prefill(client: aioredis.Redis, stream: str, events: int, per_entry: int = 1) -> None:
    """Append `events` messages to `stream`, `per_entry` per entry (the runtime's batch format
    when above 1, a plain one-message entry when 1), in pipelined batches (not timed)."""
    encoded = [CODEC.encode(Event(seq, seq % 1000, "BTCUSDT", 100_000 + seq % 50, 3, seq)) for seq in range(events)]
    async with client.pipeline(transaction=False) as pipe:
        for start in range(0, events, per_entry):
            chunk = encoded[start : start + per_entry]
            pipe.xadd(stream, {"d": pack(chunk) if per_entry > 1 else chunk[0]})
            if len(pipe) >= 1000:
                await pipe.execute()
        await pipe.execute()
    await client.hset(f"meta:{stream}", "added", events)


async def plain_hop(url: str, events: int) -> float:
    """XREAD 500 from A, decode + re-encode, pipelined XADD to B and HSET the offset; events/s."""
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    await prefill(client, "plain.a", events)
    start, last, done = time.perf_counter(), "0-0", 0
    while done < events:
        reply: Any = await client.xread({"plain.a": last}, count=500, block=100)
        for _, entries in reply:
            async with client.pipeline(transaction=False) as pipe:
                for _entry_id, fields in entries:
                    value = CODEC.decode(fields[b"d"])
                    pipe.xadd("plain.b", {"d": CODEC.encode(value)})
                last = entries[-1][0].decode()
                pipe.hset("plain.offsets", "plain.a", last)
                await pipe.execute()
            done += len(entries)
    elapsed = time.perf_counter() - start
    await client.aclose()
    return events / elapsed


def chain_app(url: str, hops: int) -> tuple[App, list[Topic[Event]]]:
    """`hops` trivial agents in a chain t0 -> t1 -> ... -> t<hops>, as asyncio tasks in one process."""
    app = App("bench", RedisTransport(url))
    topics: list[Topic[Event]] = [app.topic(f"t{i}", value_type=Event) for i in range(hops + 1)]
    for i in range(hops):
        out = topics[i + 1]

        def make(out: Topic[Event]) -> Callable[[AgentStream[Event]], Coroutine[Any, Any, None]]:
            async def forward(stream: AgentStream[Event]) -> None:
                emit = out.emit
                async for batch in stream.batches():
                    for event in batch:
                        emit(event)

            return forward

        app.agent(topics[i], name=f"hop{i}")(make(out))
    return app, topics


async def drain(
    url: str, app: App, topics: list[Topic[Event]], events: int, per_entry: int, hops: int, produce: bool = True
) -> float:
    """With the agents already running: produce `events` into the chain's head as fast as a
    pipelined client can (unless pre-filled), and time until the last agent committed all."""
    client = aioredis.Redis.from_url(url)
    last_agent, stream = f"hop{hops - 1}", topics[hops - 1].stream(0)

    async def finished() -> bool:
        position = (await app.transport.positions(last_agent)).get(stream)
        return position is not None and position.consumed >= events

    start = time.perf_counter()
    if produce:
        await prefill(client, topics[0].stream(0), events, per_entry)
    await wait_for_condition(finished, 600, "the chain to drain", interval=0.005)
    elapsed = time.perf_counter() - start
    await client.aclose()
    return events / elapsed


async def runtime_chain(url: str, events: int, hops: int, per_entry: int, prefilled: bool = False) -> float:
    """`hops` agents as asyncio tasks in this process; events/s through all of them.

    `prefilled`: the input is written before the agents start (as for the plain hop), and the
    time runs from their start; otherwise it is produced while they run."""
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    app, topics = chain_app(url, hops)
    if prefilled:
        await prefill(client, topics[0].stream(0), events, per_entry)
        start = time.perf_counter()
    await client.aclose()
    await app.start()
    if prefilled:
        await drain(url, app, topics, events, per_entry, hops, produce=False)
        rate = events / (time.perf_counter() - start)
    else:
        await app.wait_running()
        rate = await drain(url, app, topics, events, per_entry, hops)
    await app.stop()
    await app.transport.close()
    return rate


async def process_chain(url: str, events: int, hops: int, processes: int, per_entry: int) -> float:
    """`hops` agents spread over `processes` worker processes; events/s through all of them."""
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    await client.aclose()
    app, topics = chain_app(url, hops)
    groups = [[f"hop{i}" for i in range(hops) if i % processes == p] for p in range(processes)]
    workers = []
    for group in groups:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.runtime_hop", "--worker", url, str(hops), ",".join(group),
            stdout=asyncio.subprocess.PIPE,
        )
        assert worker.stdout is not None
        assert (await asyncio.wait_for(worker.stdout.readline(), 60)).startswith(b"ready")
        workers.append(worker)
    rate = await drain(url, app, topics, events, per_entry, hops)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        await worker.wait()
    await app.transport.close()
    return rate


def run_worker(url: str, hops: int, agents: list[str]) -> None:
    """Worker process body for `process_chain`."""
    gc.freeze()
    app, _ = chain_app(url, hops)
    app.run(agents, on_ready=lambda: print("ready", flush=True))


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        run_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4].split(","))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--appendfsync", default="everysec", choices=["always", "everysec", "no"])
    parser.add_argument("--rounds", type=int, default=2, help="repeat each case, keep the best")
    parser.add_argument("--per-entry", type=int, default=50,
                        help="messages per input entry for the runtime cases (an API group commit's size)")
    args = parser.parse_args()
    gc.freeze()
    rows: list[tuple[str, float]] = []
    with running_valkey(appendonly=True, appendfsync=args.appendfsync) as server:
        url, n, per = server.url, args.events, args.per_entry
        cases: list[tuple[str, Callable[[], Coroutine[Any, Any, float]]]] = [
            ("plain redis-py hop (baseline)", lambda: plain_hop(url, n)),
            ("runtime hop, input 1 msg/entry", lambda: runtime_chain(url, n, 1, 1, prefilled=True)),
            (f"runtime hop, input {per} msg/entry", lambda: runtime_chain(url, n, 1, per, prefilled=True)),
            ("runtime chain, 5 agents, 1 process", lambda: runtime_chain(url, n, 5, per)),
            ("runtime chain, 5 agents, 2 processes", lambda: process_chain(url, n, 5, 2, per)),
            ("runtime chain, 5 agents, 5 processes", lambda: process_chain(url, n, 5, 5, per)),
        ]
        for name, case in cases:
            best = 0.0
            for round_no in range(args.rounds):
                rate = asyncio.run(case())
                print(f"  {name}: round {round_no + 1}: {rate:,.0f} events/s", flush=True)
                best = max(best, rate)
            rows.append((name, best))
    baseline = rows[0][1]
    print(f"\nAOF appendfsync={args.appendfsync}, {args.events:,} events, best of {args.rounds}")
    print(f"{'case':<40} {'events/s':>12} {'vs baseline':>12}")
    for name, rate in rows:
        print(f"{name:<40} {rate:>12,.0f} {rate / baseline:>11.2f}x")


if __name__ == "__main__":
    main()
