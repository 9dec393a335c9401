"""Snapshot cost at 100k open orders: how long matching pauses, payload size, compression, restore.

    .venv/bin/python -m bench.snapshot_bench [--orders 100000] [--rounds 3]

Builds a matching engine with `--orders` resting orders over the 10 default markets (and
the accounts tables' holds for them), then measures, best of `--rounds`:

- the pause: what the agent's event loop is blocked for when a snapshot is taken, with
  `fork` (the default capture: a child serialises a copy-on-write image) and with `copy`
  (walk the books in the loop, `MatchingEngine.snapshot()`); the baseline is one typical
  matching batch of 500 orders on the same engine;
- the off-loop work: serialising, compressing and hashing in the child;
- the event loop's worst lag while a fork snapshot is taken and written (a 1 ms ticker);
- payload sizes and compress / decompress times, zstd (levels 1, 3) vs stdlib zlib (1, 6);
- restore: decompress, decode, rebuild the engine and check its hash; then replay a tail of
  `--replay` order commands (decoded from record-batch entries, as match replays its input,
  Redis reads excluded): issue 4's recovery figure (100k orders + 1M events, target < 5 s).

Prints tables; record results in docs/bench-snapshot.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import zlib
from collections.abc import Callable
from typing import Any

import msgspec
import zstandard

from pipeline.core.accounts import HoldState
from pipeline.core.engine import MatchingEngine
from pipeline.core.markets import Market, load_markets
from pipeline.core.messages import PlaceOrder
from pipeline.snapshots.capture import collect, fork_encode
from pipeline.snapshots.codec import EngineCodec, TablesCodec, decompress
from pipeline.tables.table import Table
from pipeline.transport.memory import MemoryTransport


def build_engine(markets: dict[str, Market], n: int, seed: int = 1) -> tuple[MatchingEngine, list[HoldState]]:
    """An engine with `n` resting orders (no crossing) spread over every market, and a hold per order."""
    rng = random.Random(seed)
    engine = MatchingEngine(markets)
    symbols = sorted(markets)
    holds = []
    for i in range(n):
        symbol = symbols[i % len(symbols)]
        market = markets[symbol]
        buy = i % 2 == 0
        base = max(market.min_price_ticks, 1000)
        price = base - 1 - rng.randint(0, 200) if buy else base + 1 + rng.randint(0, 200)
        unit = max(market.quote_per_tick_lot, 1)
        qty = max(market.min_qty_lots, -(-market.min_notional_quote // unit) // price + 1) * rng.randint(1, 5)
        order_id = i + 1
        events = engine.process(PlaceOrder(ts=order_id, account_id=1 + i % 1000, symbol=symbol, order_id=order_id,
                                           client_order_id=f"c{order_id}", side="BUY" if buy else "SELL",
                                           price_ticks=price, qty_lots=qty))
        if type(events[0]).__name__ != "OrderAccepted":
            raise RuntimeError(f"order {order_id} did not rest: {events}")
        holds.append(HoldState(symbol, order_id, 1 + i % 1000, market.quote_asset.symbol if buy
                               else market.base_asset.symbol, qty * 1000, 0, 0))
    return engine, holds


def best(rounds: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Fastest of `rounds` runs of `fn` (seconds) and the last result."""
    times, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def batch_baseline(markets: dict[str, Market], engine: MatchingEngine, rounds: int) -> float:
    """Seconds to match one batch of 500 limit orders that rest (then cancel them, leaving the book as it was)."""
    from pipeline.core.messages import CancelOrder

    symbols = sorted(markets)
    times = []
    for r in range(rounds):
        first = 10_000_000 + r * 1000
        orders = [PlaceOrder(ts=first + i, account_id=5, symbol=symbols[i % len(symbols)], order_id=first + i,
                             client_order_id=f"b{first + i}", side="BUY",
                             price_ticks=max(markets[symbols[i % len(symbols)]].min_price_ticks, 1000) - 300,
                             qty_lots=engine.open_orders(symbols[i % len(symbols)])[0].qty_lots)
                  for i in range(500)]
        started = time.perf_counter()
        for order in orders:
            engine.process(order)
        times.append(time.perf_counter() - started)
        for order in orders:
            engine.process(CancelOrder(ts=order.ts, account_id=5, symbol=order.symbol, order_id=order.order_id))
    return min(times)


def fork_once(codec: Any, source: Any) -> tuple[float, float, float, int]:
    """(pause s, child encode s, total s, payload bytes) of one forked snapshot."""
    started = time.perf_counter()
    pid, fd, paused = fork_encode(lambda: codec.encode(source, 3))
    encoded = asyncio.run(collect(pid, fd))
    return paused, encoded.encode_s, time.perf_counter() - started, len(encoded.payload)


async def loop_lag_during_snapshot(codec: Any, source: Any) -> tuple[float, float]:
    """Worst event-loop lag (s) of a 1 ms ticker while a fork snapshot is taken and collected; and without."""
    async def ticker(stop: asyncio.Event) -> float:
        worst = 0.0
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - started - 0.001)
        return worst

    stop = asyncio.Event()
    quiet = asyncio.create_task(ticker(stop))
    await asyncio.sleep(0.3)
    stop.set()
    idle = await quiet
    stop = asyncio.Event()
    busy = asyncio.create_task(ticker(stop))
    await asyncio.sleep(0.05)
    pid, fd, _ = fork_encode(lambda: codec.encode(source, 3))
    await collect(pid, fd)
    stop.set()
    return await busy, idle


def compression_rows(raw: bytes, rounds: int) -> list[list[Any]]:
    rows = []
    cases: list[tuple[str, Callable[[bytes], bytes], Callable[[bytes], bytes]]] = [
        ("zstd 1", zstandard.ZstdCompressor(level=1).compress, zstandard.ZstdDecompressor().decompress),
        ("zstd 3 (default)", zstandard.ZstdCompressor(level=3).compress, zstandard.ZstdDecompressor().decompress),
        ("zlib 1", lambda b: zlib.compress(b, 1), zlib.decompress),
        ("zlib 6", lambda b: zlib.compress(b, 6), zlib.decompress),
    ]
    base = None
    for name, comp, decomp in cases:
        t_comp, packed = best(rounds, lambda c=comp: c(raw))  # type: ignore[misc]
        t_decomp, _ = best(rounds, lambda d=decomp, p=packed: d(p))  # type: ignore[misc]
        if base is None:
            base = t_comp
        rows.append([name, f"{len(packed) / 1e6:.2f}", f"{len(raw) / len(packed):.1f}x", f"{t_comp * 1e3:.0f}",
                     f"{t_decomp * 1e3:.0f}", f"{t_comp / base:.1f}x"])
    return rows


def table(headers: list[str], rows: list[list[Any]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) + " |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replay", type=int, default=1_000_000,
                        help="tail commands replayed after the restore (0: skip)")
    args = parser.parse_args()
    markets = load_markets(None)
    started = time.perf_counter()
    engine, holds = build_engine(markets, args.orders)
    print(f"built {args.orders} open orders over {len(markets)} markets in {time.perf_counter() - started:.1f} s\n")
    codec = EngineCodec(markets)

    batch = batch_baseline(markets, engine, args.rounds)
    copy_pause, _ = best(args.rounds, lambda: codec.capture(engine))
    forks = [fork_once(codec, engine) for _ in range(args.rounds)]
    fork_pause = min(f[0] for f in forks)
    fork_pause_median = statistics.median(f[0] for f in forks)
    child, total, size = min(f[1] for f in forks), min(f[2] for f in forks), forks[-1][3]
    worst_lag, idle_lag = asyncio.run(loop_lag_during_snapshot(codec, engine))

    holds_table: Table[Any, Any] = Table("holds", tuple[str, int], HoldState)
    asyncio.run(holds_table.restore(MemoryTransport(), 0, base={(h.symbol, h.order_id): h for h in holds}))
    tables = TablesCodec([holds_table])
    table_forks = [fork_once(tables, tables.view(0)) for _ in range(args.rounds)]
    table_copy, _ = best(args.rounds, lambda: tables.capture(0))

    print(f"## Pause of the agent taking a snapshot ({args.orders} open orders; baseline: one batch of 500 orders)\n")
    table(["what", "ms", "vs one batch"], [
        ["one matching batch of 500 orders (baseline)", f"{batch * 1e3:.1f}", "1.00x"],
        ["match, capture = fork (default), best", f"{fork_pause * 1e3:.1f}", f"{fork_pause / batch:.2f}x"],
        ["match, capture = fork, median", f"{fork_pause_median * 1e3:.1f}", f"{fork_pause_median / batch:.2f}x"],
        ["match, capture = copy (engine.snapshot() in the loop)", f"{copy_pause * 1e3:.1f}",
         f"{copy_pause / batch:.2f}x"],
        [f"risk+settle holds table ({len(holds)}), fork", f"{min(f[0] for f in table_forks) * 1e3:.1f}",
         f"{min(f[0] for f in table_forks) / batch:.2f}x"],
        [f"risk+settle holds table ({len(holds)}), copy", f"{table_copy * 1e3:.1f}", f"{table_copy / batch:.2f}x"],
        ["worst event-loop lag of a 1 ms ticker during a fork snapshot", f"{worst_lag * 1e3:.1f}",
         f"{worst_lag / batch:.2f}x"],
        ["worst lag of the same ticker, no snapshot", f"{idle_lag * 1e3:.1f}", f"{idle_lag / batch:.2f}x"],
    ])
    print("## Off the hot path (in the forked child)\n")
    table(["what", "value"], [
        ["serialise + hash + compress (child)", f"{child * 1e3:.0f} ms"],
        ["fork to payload in the parent", f"{total * 1e3:.0f} ms"],
        ["match payload (zstd 3)", f"{size / 1e6:.2f} MB"],
        ["holds payload (zstd 3)", f"{table_forks[-1][3] / 1e6:.2f} MB"],
    ])
    raw = msgspec.msgpack.encode(codec.snapshot_of(engine))
    print(f"## Compression of the match payload ({len(raw) / 1e6:.2f} MB of msgpack)\n")
    table(["codec", "MB", "ratio", "compress ms", "decompress ms", "compress time vs zstd 1"],
          compression_rows(raw, args.rounds))
    payload = zstandard.ZstdCompressor(level=3).compress(raw)

    def restore() -> MatchingEngine:
        rebuilt = codec.build(codec.decode(decompress(payload)))
        assert rebuilt.state_hash() == engine.state_hash()
        return rebuilt

    restore_s, _ = best(args.rounds, restore)
    rows = [["decompress + decode + rebuild the engine + verify its hash", f"{restore_s:.2f}", ""]]
    if args.replay:
        replay_s, n = replay_tail(markets, restore(), args.replay)
        rows += [[f"replay a tail of {n} match commands (decode entries of 500 + process)", f"{replay_s:.2f}",
                  f"{n / replay_s:,.0f} commands/s"],
                 ["restore + replay (issue 4 target: < 5 s)", f"{restore_s + replay_s:.2f}",
                  "met" if restore_s + replay_s < 5 else "not met"]]
    print("## Restore\n")
    table(["what", "s", "note"], rows)


def replay_tail(markets: dict[str, Market], engine: MatchingEngine, n: int) -> tuple[float, int]:
    """Seconds to replay `n` order commands into `engine` from record-batch entries, as match replays its input."""
    from bench.flows import order_flow
    from pipeline.agents.topology import MatchCommand
    from pipeline.batching import BatchDecoder, pack
    from pipeline.messages import Codec

    codec: Codec[Any] = Codec(MatchCommand)
    commands = list(order_flow(markets, n, seed=7, first_order_id=10_000_000))
    entries = [pack([codec.encode(c) for c in commands[i:i + 500]]) for i in range(0, len(commands), 500)]
    del commands
    decoder: BatchDecoder[Any] = BatchDecoder(MatchCommand)
    process = engine.process
    started = time.perf_counter()
    count = 0
    for raw in entries:
        for command in decoder.decode(raw):
            process(command)
            count += 1
    return time.perf_counter() - started, count


if __name__ == "__main__":
    main()
