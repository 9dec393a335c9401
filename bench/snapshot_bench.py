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


def pause_tables(args: argparse.Namespace, markets: dict[str, Market], engine: MatchingEngine,
                 holds: list[HoldState], codec: EngineCodec) -> None:
    """The pause, off-loop and compression tables."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replay", type=int, default=1_000_000,
                        help="tail commands replayed after the restore (0: skip)")
    parser.add_argument("--entry-sizes", default="500,10",
                        help="messages per stream entry of the tail (500: batches under overload, 10: steady flow)")
    parser.add_argument("--old-path", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the live path's replay (first entry size only)")
    parser.add_argument("--only-recovery", action="store_true", help="skip the pause and compression tables")
    args = parser.parse_args()
    markets = load_markets(None)
    started = time.perf_counter()
    engine, holds = build_engine(markets, args.orders)
    print(f"built {args.orders} open orders over {len(markets)} markets in {time.perf_counter() - started:.1f} s\n")
    codec = EngineCodec(markets)
    if not args.only_recovery:
        pause_tables(args, markets, engine, holds, codec)
    raw = msgspec.msgpack.encode(codec.snapshot_of(engine))  # after the baseline batches (they leave ended ids)
    payload = zstandard.ZstdCompressor(level=3).compress(raw)

    def restore() -> MatchingEngine:
        rebuilt = codec.build(codec.decode(decompress(payload)))
        assert rebuilt.state_hash() == engine.state_hash()
        return rebuilt

    restore_s, _ = best(args.rounds, restore)
    print("## Restore\n")
    table(["what", "s"], [["decompress + decode + rebuild the engine + verify its hash", f"{restore_s:.2f}"]])
    if args.replay:
        print(f"## Recovery: the snapshot ({len(payload) / 1e6:.2f} MB) + {args.replay:,} commands of tail,"
              " on Valkey\n")
        sizes = [int(x) for x in args.entry_sizes.split(",")]
        table(["what", "entries x messages", "s", "CPU s", "commands/s", "vs bare core", "< 5 s"],
              recovery_rows(markets, engine, payload, len(raw), args.replay, sizes, args.old_path))


def lots_for(market: Market, price: int) -> int:
    """The fewest lots a limit order at `price` may have (min quantity and min notional)."""
    unit = max(market.quote_per_tick_lot, 1)
    return max(market.min_qty_lots, -(-market.min_notional_quote // (unit * price)))


def tail_flow(markets: dict[str, Market], resting: int, n: int, seed: int = 7) -> list[Any]:
    """`n` commands as match receives them after validate and risk, on the book `build_engine` made.

    Per command: 30% cancels of an open order (some already filled: UNKNOWN_ORDER, as when a
    cancel races a fill), 45% GTC limit orders near the touch that rest, 12% limit orders that
    cross (GTC or IOC: trades), 5% market orders (buys by quote, sells by quantity), 4%
    cancel-replaces, 3% post-only, 1% FOK, and a rare cancel-all; every order passes the
    market filters (the tail of the earlier runs was 70% MIN_NOTIONAL rejects, which
    validate never lets through).
    """
    from pipeline.core.messages import CancelAll, CancelOrder, CancelReplace

    rng = random.Random(seed)
    symbols = sorted(markets)
    open_ids: dict[str, list[tuple[int, int]]] = {s: [] for s in symbols}
    for i in range(resting):
        open_ids[symbols[i % len(symbols)]].append((i + 1, 1 + i % 1000))
    out: list[Any] = []
    next_id = 10_000_000
    rand, randint = rng.random, rng.randint
    for k in range(n):
        ts = 10_000_000 + k
        symbol = symbols[randint(0, len(symbols) - 1)]
        market = markets[symbol]
        ids = open_ids[symbol]
        roll = rand()
        if roll < 0.30 and ids:
            at = randint(0, len(ids) - 1)
            ids[at], ids[-1] = ids[-1], ids[at]
            order_id, owner = ids.pop()
            out.append(CancelOrder(ts=ts, account_id=owner, symbol=symbol, order_id=order_id))
            continue
        if roll < 0.3005:
            out.append(CancelAll(ts=ts, account_id=randint(1, 1000), symbol=symbol))
            continue
        account = randint(1, 1000)
        next_id += 1
        buy = rand() < 0.5
        side: Any = "BUY" if buy else "SELL"
        kind = rand()
        if kind < 0.05:
            if buy:
                order = PlaceOrder(ts=ts, account_id=account, symbol=symbol, order_id=next_id,
                                   client_order_id=f"t{next_id}", side="BUY", order_type="MARKET",
                                   quote_qty=market.min_notional_quote * randint(1, 4))
            else:
                order = PlaceOrder(ts=ts, account_id=account, symbol=symbol, order_id=next_id,
                                   client_order_id=f"t{next_id}", side="SELL", order_type="MARKET",
                                   qty_lots=lots_for(market, 1000) * randint(1, 3))
            out.append(order)
            continue
        crossing = kind < 0.18
        price = (1000 + randint(1, 8) if buy else 1000 - randint(1, 8)) if crossing else \
            (1000 - randint(1, 40) if buy else 1000 + randint(1, 40))
        qty = lots_for(market, price) * randint(1, 3)
        tif: Any = "FOK" if 0.17 < kind < 0.18 else ("IOC" if crossing and kind < 0.11 else "GTC")
        otype: Any = "LIMIT_MAKER" if 0.18 <= kind < 0.21 else "LIMIT"
        order = PlaceOrder(ts=ts, account_id=account, symbol=symbol, order_id=next_id,
                           client_order_id=f"t{next_id}", side=side, order_type=otype, time_in_force=tif,
                           price_ticks=price, qty_lots=qty)
        if 0.21 <= kind < 0.25 and ids:
            at = randint(0, len(ids) - 1)
            ids[at], ids[-1] = ids[-1], ids[at]
            old_id, owner = ids.pop()
            order = msgspec.structs.replace(order, account_id=owner)
            out.append(CancelReplace(ts=ts, account_id=owner, symbol=symbol, new_order=order,
                                     cancel_order_id=old_id))
        else:
            out.append(order)
        if tif == "GTC":
            ids.append((next_id, order.account_id))
    return out


def core_replay(engine: MatchingEngine, commands: list[Any]) -> tuple[float, float]:
    """(wall s, CPU s) for the bare core to process already-decoded `commands` (the floor of any replay)."""
    process = engine.process
    started, cpu = time.perf_counter(), time.process_time()
    for command in commands:
        process(command)
    return time.perf_counter() - started, time.process_time() - cpu


async def _load_stream(url: str, stream: str, entries: list[bytes], messages: int) -> str:
    """Append `entries` to `stream` and commit match's position at the last one; the last entry id."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_timeout=60)
    last = b"0-0"
    try:
        start = 0
        while start < len(entries):
            async with client.pipeline(transaction=False) as pipe:
                size = 0
                while start < len(entries) and size < 4_000_000:  # pipelines of about 4 MB
                    pipe.xadd(stream, {"d": entries[start]})
                    size += len(entries[start])
                    start += 1
                ids = await pipe.execute()
            last = ids[-1]
        last_id = last.decode()
        await client.hset(f"meta:{stream}", "added", messages)
        await client.hset("pos:match", mapping={stream: last_id, f"n:{stream}": messages})
    finally:
        await client.aclose()
    return last_id


async def _recover(url: str, markets: dict[str, Market], payload: bytes, state_hash: str, raw_size: int,
                   fast: bool) -> tuple[float, float, float, int, str]:
    """Start a match agent that restores the snapshot and replays the stream: (seconds, tail, final hash)."""
    from pipeline.agents.events import BookChanged
    from pipeline.agents.match import register_match
    from pipeline.agents.topology import MatchCommand
    from pipeline.app import App
    from pipeline.core.messages import OrderEvent
    from pipeline.snapshots.codec import CODEC
    from pipeline.snapshots.config import SnapshotConfig
    from pipeline.snapshots.manager import MemorySnapshotStore, SnapshotManager, SnapshotRecord
    from pipeline.transport.redis import RedisTransport

    transport = RedisTransport(url)
    # the live path hands the agent whole XREADs (500 entries: up to 250k commands) without yielding to the
    # loop: under load that outlasts the default 10 s lease, the partition is lost and the replay starts
    # over, for ever; a long lease lets it finish so that it can be timed
    app = App("bench", transport, lease_ttl_ms=10_000 if fast else 600_000)
    accepted = app.topic("orders.accepted", value_type=MatchCommand)
    register_match(app, markets, accepted, app.topic("orders.events", value_type=OrderEvent | BookChanged))
    if not fast:
        app.agents["match"].replay = None  # the live path: every batch through the agent function
    store = MemorySnapshotStore()
    await store.save(SnapshotRecord(unit="match", partition=0, inputs={"orders.accepted:0": "0-0"}, changelogs={},
                                    state_hash=state_hash, format=EngineCodec(markets).format, codec=CODEC,
                                    payload=payload, raw_size=raw_size, summary={}, reason="bench"))
    manager = SnapshotManager(app, store, SnapshotConfig(interval_s=0), engine_codecs={"match": EngineCodec(markets)})
    app.snapshots = manager
    restore_s = 0.0
    restore_state = manager.restore_state

    async def timed_restore(*args: Any) -> Any:
        nonlocal restore_s
        began = time.perf_counter()
        try:
            return await restore_state(*args)
        finally:
            restore_s = time.perf_counter() - began

    manager.restore_state = timed_restore  # type: ignore[method-assign,assignment]
    started, cpu = time.perf_counter(), time.process_time()
    await app.start()
    while not ((report := manager.recoveries.get(("match", 0))) is not None and report.done):
        await asyncio.sleep(0.002)
    elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    final = app.runners[("match", 0)].state.state_hash()
    manager.units = {}  # no shutdown snapshot
    await app.stop()
    await transport.close()
    return elapsed, cpu_s, restore_s, report.tail, final


def recovery_rows(markets: dict[str, Market], engine: MatchingEngine, payload: bytes, raw_size: int, n: int,
                  entry_sizes: list[int], old_path: bool) -> list[list[Any]]:
    """Issue 4's figure on a real Valkey: restore the snapshot, then replay `n` commands (per entry size)."""
    from bench._valkey import running_valkey
    from pipeline.agents.topology import MatchCommand
    from pipeline.batching import pack
    from pipeline.messages import Codec

    started = time.perf_counter()
    commands = tail_flow(markets, sum(len(b.orders) for b in engine.books().values()), n)
    print(f"generated a tail of {len(commands)} commands in {time.perf_counter() - started:.1f} s")
    from infra.runner import tune_gc
    from pipeline.snapshots.catchup import _gc_for_bulk_work

    tune_gc()  # as `exchange up` and `exchange worker` run the agents
    build = EngineCodec(markets)
    reference = build.build(build.decode(decompress(payload)))
    with _gc_for_bulk_work():
        core_s, core_cpu = core_replay(reference, commands)
    expected = reference.state_hash()
    codec: Codec[Any] = Codec(MatchCommand)
    encoded = [codec.encode(c) for c in commands]
    del commands
    rows: list[list[Any]] = [
        ["bare core: engine.process of decoded commands (baseline)", "", f"{core_s:.2f}", f"{core_cpu:.2f}",
         f"{n / core_s:,.0f}/s", "1.00x", ""]]
    for size in entry_sizes:
        entries = [pack(encoded[i:i + size]) for i in range(0, len(encoded), size)]
        paths = [("bulk catch-up (agent replay fn)", True)] + ([("live path (agent function)", False)]
                                                                if old_path else [])
        for label, fast in paths:
            with running_valkey() as server:
                asyncio.run(_load_stream(server.url, "orders.accepted:0", entries, n))
                seconds, cpu_s, restore_s, tail, final = asyncio.run(
                    _recover(server.url, markets, payload, engine.state_hash(), raw_size, fast))
            if tail != n or final != expected:
                raise RuntimeError(f"{label}: replayed {tail} of {n}, hash {final} != {expected}")
            replay_s = seconds - restore_s
            print(f"  {label}, entries of {size}: {seconds:.2f} s, CPU {cpu_s:.2f} s (restore {restore_s:.2f} s)",
                  flush=True)
            rows.append([f"{label}: replay", f"{len(entries):,} x {size}", f"{replay_s:.2f}", "",
                         f"{n / replay_s:,.0f}/s", f"{replay_s / core_s:.2f}x", ""])
            rows.append([f"{label}: start to recovered (restore {restore_s:.2f} s + replay)", "", f"{seconds:.2f}",
                         f"{cpu_s:.2f}", "", f"{cpu_s / core_cpu:.2f}x (CPU)", "met" if seconds < 5 else "not met"])
        old_path = False  # the slow path once is enough
    return rows


if __name__ == "__main__":
    main()
