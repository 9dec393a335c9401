"""Benchmark of the pure matching core on a realistic order mix over 10 markets.

Run: .venv/bin/python -m bench.core_bench [--orders N] [--seed S] [--write-docs] [--once engine|bare|none]

Mix: about 60% limit orders added near the touch, 30% cancels of live orders, 10%
orders that cross (IOC limits through the touch and market orders). Commands are
generated up front (with a shadow engine, so cancels hit live orders) and msgpack-encoded;
every timed run gets freshly decoded commands, as the match agent does (so no run profits
from string hashes cached by an earlier one). Timed: throughput without per-order timers
(best of `--rounds`, the engine and the baseline interleaved), the same with
`book.drain_changes()` after every command (what the match agent adds for BookChanged),
and latency with `time.perf_counter_ns` per order; each under default GC and under
`gc.freeze()` + raised thresholds and under the worker's own setting
(`infra.runner.tune_gc`). A bare sortedcontainers book (SortedDict of
price -> deque, lazy cancel, no events, no validation) doing the same operations in the
same rounds is the baseline, so results read as ratios on a noisy machine.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

import msgspec
from sortedcontainers import SortedDict

from pipeline.core.engine import MatchingEngine
from pipeline.core.markets import Market, load_markets
from pipeline.core.messages import CancelOrder, Event, OrderCanceled, OrderExpired, OrderFilled, PlaceOrder

EngineCommand = PlaceOrder | CancelOrder
DOCS_FILE = Path(__file__).resolve().parent.parent / "docs" / "bench-core.md"

# Baseline operations: (kind, market index, order id, is_buy, price, qty); kind 0 add, 1 cancel, 2 take.
BareOp = tuple[int, int, int, bool, int, int]


# ------------------------------------------------------------------ the order flow


def generate(markets: dict[str, Market], n: int, seed: int) -> list[EngineCommand]:
    """The command mix, produced against a shadow engine so cancels target live orders."""
    rng = random.Random(seed)
    symbols = list(markets)
    mids = {s: _realistic_mid(markets[s]) for s in symbols}
    # Smallest order whose notional meets the market's minimum at the mid price.
    min_lots = {s: max(markets[s].min_qty_lots,
                       -(-markets[s].min_notional_quote // (mids[s] * markets[s].quote_per_tick_lot)))
                for s in symbols}
    shadow = MatchingEngine(markets)
    live: dict[str, list[tuple[int, int]]] = {s: [] for s in symbols}  # (order id, account)
    position: dict[tuple[str, int], int] = {}
    commands: list[EngineCommand] = []
    next_id = 0
    for i in range(n):
        symbol = rng.choice(symbols)
        account = rng.randint(1, 200)
        roll = rng.random()
        ts = i * 1_000
        book = shadow.book(symbol)
        if roll < 0.30 and live[symbol]:
            orders = live[symbol]
            k = rng.randrange(len(orders))
            order_id, account = orders[k]
            cmd: EngineCommand = CancelOrder(ts=ts, account_id=account, symbol=symbol, order_id=order_id)
        else:
            next_id += 1
            side = "BUY" if rng.random() < 0.5 else "SELL"
            bid, ask = book.best_bid(), book.best_ask()
            mid = mids[symbol]
            if bid is not None and ask is not None:
                mid = (bid + ask) // 2
                mids[symbol] = mid
            qty = min_lots[symbol] * rng.randint(1, 20)
            common = dict(ts=ts, account_id=account, symbol=symbol, order_id=next_id,
                          client_order_id=f"b{next_id}", side=side)
            if roll < 0.90:  # passive limit near the touch
                away = rng.randint(1, 10)
                price = mid - away if side == "BUY" else mid + away
                cmd = PlaceOrder(**common, price_ticks=price, qty_lots=qty)  # type: ignore[arg-type]
            elif roll < 0.97:  # IOC through the touch
                through = rng.randint(0, 5)
                price = mid + through if side == "BUY" else mid - through
                cmd = PlaceOrder(**common, price_ticks=price, qty_lots=qty,  # type: ignore[arg-type]
                                 time_in_force="IOC")
            else:
                cmd = PlaceOrder(**common, order_type="MARKET", qty_lots=qty)  # type: ignore[arg-type]
        commands.append(cmd)
        _forget_ended(shadow.process(cmd), live, position)
        if isinstance(cmd, PlaceOrder) and book.get(cmd.order_id) is not None:
            position[(symbol, cmd.order_id)] = len(live[symbol])
            live[symbol].append((cmd.order_id, cmd.account_id))
    return commands


PRICES = {"BTC": "60000", "ETH": "3000", "SOL": "150", "BNB": "600", "XRP": "0.6", "ADA": "0.45",
          "DOGE": "0.15", "LTC": "80", "USDT": "1"}


def _realistic_mid(market: Market) -> int:
    """Ticks of a plausible price: the base's USD price over the quote's, on the tick grid."""
    price = Decimal(PRICES[market.base_asset.symbol]) / Decimal(PRICES[market.quote_asset.symbol])
    return max(1, int(price / Decimal(market.spec.tick_size)))


def _forget_ended(events: list[Event], live: dict[str, list[tuple[int, int]]],
                  position: dict[tuple[str, int], int]) -> None:
    """Drop ended orders from the per-market live lists (swap-remove keeps it O(1))."""
    for event in events:
        if isinstance(event, OrderFilled | OrderCanceled | OrderExpired):
            k = position.pop((event.symbol, event.order_id), None)
            if k is None:
                continue
            orders = live[event.symbol]
            last = orders.pop()
            if k < len(orders):
                orders[k] = last
                position[(event.symbol, last[0])] = k


# ------------------------------------------------------------------ the baseline


class BareBook:
    """The simplest fast book: SortedDict price -> deque of [id, qty], dict id -> entry, lazy cancel."""

    __slots__ = ("asks", "bids", "index")

    def __init__(self) -> None:
        self.bids: SortedDict[int, deque[list[int]]] = SortedDict()
        self.asks: SortedDict[int, deque[list[int]]] = SortedDict()
        self.index: dict[int, tuple[bool, int, list[int]]] = {}

    def add(self, order_id: int, is_buy: bool, price: int, qty: int) -> None:
        side = self.bids if is_buy else self.asks
        level = side.get(price)
        if level is None:
            level = side[price] = deque()
        entry = [order_id, qty]
        level.append(entry)
        self.index[order_id] = (is_buy, price, entry)

    def cancel(self, order_id: int) -> None:
        found = self.index.pop(order_id, None)
        if found is not None:
            found[2][1] = 0  # lazily skipped when matched

    def take(self, is_buy: bool, limit: int, qty: int) -> int:
        side = self.asks if is_buy else self.bids
        filled = 0
        while qty and side:
            price, level = side.peekitem(0 if is_buy else -1)
            if (price > limit) if is_buy else (price < limit):
                break
            while level and qty:
                entry = level[0]
                if entry[1] == 0:
                    level.popleft()
                    continue
                lots = min(qty, entry[1])
                entry[1] -= lots
                qty -= lots
                filled += lots
                if entry[1] == 0:
                    level.popleft()
                    self.index.pop(entry[0], None)
            if not level:
                del side[price]
        return filled


def bare_ops(commands: Sequence[EngineCommand], symbols: list[str]) -> list[BareOp]:
    position = {s: i for i, s in enumerate(symbols)}
    ops: list[BareOp] = []
    for c in commands:
        m = position[c.symbol]
        if isinstance(c, CancelOrder):
            ops.append((1, m, c.order_id, False, 0, 0))
        elif c.order_type == "MARKET":
            ops.append((2, m, c.order_id, c.side == "BUY", 1 << 62 if c.side == "BUY" else 0, c.qty_lots))
        elif c.time_in_force == "IOC":
            ops.append((2, m, c.order_id, c.side == "BUY", c.price_ticks, c.qty_lots))
        else:
            ops.append((0, m, c.order_id, c.side == "BUY", c.price_ticks, c.qty_lots))
    return ops


def run_bare(ops: Sequence[BareOp], n_markets: int) -> None:
    books = [BareBook() for _ in range(n_markets)]
    for kind, m, order_id, is_buy, price, qty in ops:
        book = books[m]
        if kind == 1:
            book.cancel(order_id)
        elif kind == 0:
            # a passive add that crosses trades first, as the engine does
            rest = qty - book.take(is_buy, price, qty)
            if rest:
                book.add(order_id, is_buy, price, rest)
        else:
            book.take(is_buy, price, qty)


# ------------------------------------------------------------------ measurements


class GcMode:
    def __init__(self, name: str, setup: Callable[[], None]) -> None:
        self.name, self.setup = name, setup


def gc_default() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    gc.enable()


def gc_frozen() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, 1_000, 1_000)


def gc_worker() -> None:
    """What an `exchange worker` process runs with once its agents are up (`infra.runner.tune_gc`)."""
    from infra.runner import tune_gc  # the production setting itself, not a copy of it

    tune_gc()


class Commands:
    """The command list as msgpack bytes: each run decodes its own fresh copy (untimed)."""

    def __init__(self, commands: Sequence[EngineCommand]) -> None:
        self.data = msgspec.msgpack.encode(list(commands))
        self.decoder = msgspec.msgpack.Decoder(list[PlaceOrder | CancelOrder])

    def fresh(self) -> list[EngineCommand]:
        return self.decoder.decode(self.data)


def throughput(commands: Sequence[EngineCommand], markets: dict[str, Market], mode: Callable[[], None],
               drain: bool = False) -> float:
    engine = MatchingEngine(markets)
    process = engine.process
    mode()
    if drain:  # as the match agent: the changed levels of the command's book after every command
        book = engine.book
        start = time.perf_counter()
        for cmd in commands:
            process(cmd)
            book(cmd.symbol).drain_changes()
    else:
        start = time.perf_counter()
        for cmd in commands:
            process(cmd)
    elapsed = time.perf_counter() - start
    gc_default()
    return len(commands) / elapsed


def latencies(commands: Sequence[EngineCommand], markets: dict[str, Market], mode: Callable[[], None],
              ) -> list[int]:
    engine = MatchingEngine(markets)
    process = engine.process
    clock = time.perf_counter_ns
    out = [0] * len(commands)
    mode()
    for i, cmd in enumerate(commands):
        t0 = clock()
        process(cmd)
        out[i] = clock() - t0
    gc_default()
    return out


def bare_throughput(ops: Sequence[BareOp], n_markets: int, mode: Callable[[], None]) -> float:
    mode()
    start = time.perf_counter()
    run_bare(ops, n_markets)
    elapsed = time.perf_counter() - start
    gc_default()
    return len(ops) / elapsed


def percentile(sorted_values: Sequence[int], p: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))]


def run_once(what: str, commands: Commands, ops: Sequence[BareOp], markets: dict[str, Market]) -> None:
    """One untimed pass with the collector off (the same set-up whatever `what` is, so runs subtract)."""
    gc.disable()
    fresh = commands.fresh()
    engine = MatchingEngine(markets)
    if what == "engine":
        process = engine.process
        for cmd in fresh:
            process(cmd)
    elif what == "bare":
        run_bare(ops, len(markets))
    print(f"{what}: {len(fresh):,} commands")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per figure (best is kept)")
    parser.add_argument("--write-docs", action="store_true", help=f"write the results to {DOCS_FILE}")
    parser.add_argument("--once", choices=["engine", "bare", "none"],
                        help="only run the engine (or the bare book, or nothing) once over the commands, GC off, "
                             "and exit: for instruction counts (valgrind --tool=callgrind), a run of `engine` "
                             "minus a run of `none`, divided by --orders, is the engine's cost per command")
    args = parser.parse_args(argv)

    markets = load_markets()
    symbols = list(markets)
    generated = generate(markets, args.orders, args.seed)
    ops = bare_ops(generated, symbols)
    commands = Commands(generated)
    del generated
    if args.once is not None:
        run_once(args.once, commands, ops, markets)
        return
    kinds = {"limit add": 0, "cancel": 0, "crossing": 0}
    for op in ops:
        kinds[("limit add", "cancel", "crossing")[op[0]]] += 1

    rows: list[str] = []
    summary: list[str] = []
    for name, setup in (("default GC", gc_default), ("frozen GC", gc_frozen), ("worker GC", gc_worker)):
        bare = engine = drained = 0.0
        for _ in range(max(1, args.rounds)):  # interleaved, so each figure sees the same machine
            bare = max(bare, bare_throughput(ops, len(symbols), setup))
            engine = max(engine, throughput(commands.fresh(), markets, setup))
            drained = max(drained, throughput(commands.fresh(), markets, setup, drain=True))
        lat = sorted(latencies(commands.fresh(), markets, setup))
        rows.append(
            f"| {name} | {engine:,.0f} | {drained:,.0f} | {bare:,.0f} | {engine / bare:.2f} | "
            f"{percentile(lat, 50) / 1000:.1f} | {percentile(lat, 99) / 1000:.1f} | "
            f"{percentile(lat, 99.9) / 1000:.1f} | {lat[-1] / 1000:.0f} |")
        summary.append(f"{name}: engine {engine:,.0f} orders/s = {engine / bare:.2f} x the bare book's "
                       f"{bare:,.0f} ops/s in the same rounds (with drain_changes: {drained / bare:.2f} x)")
    header = [
        "| GC | engine orders/s | engine + drain_changes | bare book ops/s | engine / bare | "
        "p50 us | p99 us | p99.9 us | worst us |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    mix = ", ".join(f"{k} {v / len(ops):.0%}" for k, v in kinds.items())
    context = (f"{len(ops):,} commands over {len(symbols)} markets ({mix}); "
               f"Python {platform.python_version()} on {platform.machine()}, seed {args.seed}, "
               f"throughput best of {max(1, args.rounds)} rounds")
    table = "\n".join(header + rows)
    print(context)
    print(table)
    print("\n".join(summary))
    print("Target (issue 3): 400k orders/s where a bare book does about 800k ops/s, i.e. about 0.5 x.")
    if args.write_docs:
        command = "python -m bench.core_bench " + " ".join(argv if argv is not None else sys.argv[1:])
        DOCS_FILE.write_text(
            "# Benchmark: the pure matching core\n\n"
            f"Command: `.venv/bin/{command.strip()}`\n\n{context}.\n\n{table}\n\n"
            + "".join(f"- {line}.\n" for line in summary) + "\n"
            "Engine: `MatchingEngine.process` per command (validation, id checks, matching, events), "
            "on freshly decoded commands.\n"
            "Engine + drain_changes: also `engine.book(symbol).drain_changes()` after every command, "
            "as the match agent does.\n"
            "Bare book: SortedDict of price -> deque with lazy cancel, no validation and no events, same "
            "operations, interleaved with the engine in the same rounds (throughput: best round of each).\n"
            "Latency: `time.perf_counter_ns` around each `process` call (includes the timer).\n"
            "Frozen GC: `gc.collect(); gc.freeze(); gc.set_threshold(5_000, 1_000, 1_000)` after setup.\n"
            "Worker GC: `infra.runner.tune_gc()`, what `exchange worker` runs with once its agents are up.\n"
            "Targets (issue 3): at least 400k orders/s, worst single order under 5 ms.\n")


if __name__ == "__main__":
    main()
