"""CPU cost per order of the settle and publish agents' own Python, without Redis or the runtime.

The pipeline's stages run in-process on recorded input: validate + risk + match (the pure
core, untimed) turn a realistic order flow into each chunk's matcher events, which then go
through `settle_batch` (settle's per-batch code, table mirroring and emits included) and
`Publisher.process` (publish's per-batch code) as one batch per chunk, like the agents
see them. Only those two calls are timed, in CPU time (`time.process_time_ns`, which a
loaded box does not inflate the way it does wall time), best of `--repeat` runs.

A SHA-256 digest of everything both agents produced (encoded outputs with their streams,
read-model writes, table changelog hashes) is printed, so two trees can be checked for
byte-identical output: same flags, same digest.

    .venv/bin/python -m bench.agents_bench [--orders 20000] [--chunk 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.flows import funding, order_flow
from pipeline.agents.match import book_change
from pipeline.agents.publish.publisher import Publisher
from pipeline.agents.settle import settle_batch
from pipeline.agents.validate import MarketView, order_rejection, rejected
from pipeline.context import BatchContext, set_context
from pipeline.core.engine import MatchingEngine
from pipeline.core.messages import (
    CancelReplace,
    Command,
    Deposit,
    OrderRejected,
    PlaceOrder,
    SetMarketStatus,
    Withdraw,
)
from pipeline.exchange import build_exchange
from pipeline.transport.memory import MemoryTransport


@dataclass
class Result:
    """CPU time of each agent over one run, and the digest of what they produced."""

    settle_ns: int = 0
    publish_ns: int = 0
    orders: int = 0
    events: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


def run(commands: Sequence[Command], chunk: int, agents: bool = True) -> Result:
    """Stage `commands` chunk by chunk; time settle's and publish's batch of each chunk.

    Without `agents`, settlement is the bare core (no emits, no table mirroring) and
    publish does not run: the staging cost alone, to subtract from an instruction count.
    """
    exchange = build_exchange(MemoryTransport())
    markets = exchange.markets
    shared = exchange.accounts[0]
    tables = [shared.balances, shared.holds, *([shared.requests] if shared.requests is not None else []),
              *exchange.publish_tables.all()]
    for table in tables:
        table.attach(0)
    engine, view = MatchingEngine(markets), MarketView(markets)
    accounts = shared.refresh()
    context = BatchContext(0)
    set_context(context)
    writes: list[Any] = []
    result = Result()
    digest = result.digest
    clock = time.process_time_ns
    try:
        publisher = Publisher(markets, exchange.publish_tables, exchange.published, lambda *w: writes.extend(w), 0)
        for start in range(0, len(commands), chunk):
            matched: list[Any] = []
            rejects: list[Any] = []
            account_events: list[Any] = []
            for command in commands[start:start + chunk]:  # validate, risk, match: untimed
                if isinstance(command, Deposit | Withdraw):
                    fn = accounts.deposit if isinstance(command, Deposit) else accounts.withdraw
                    account_events += fn(command)  # type: ignore[arg-type]
                    continue
                if isinstance(command, SetMarketStatus):
                    view.set_status(command.symbol, command.status)
                if isinstance(command, PlaceOrder | CancelReplace):
                    result.orders += 1
                    order = command if isinstance(command, PlaceOrder) else command.new_order
                    reason = order_rejection(order, view)
                    if reason is not None:
                        rejects.append(rejected(order, reason))
                        continue
                    held: PlaceOrder | CancelReplace | None
                    if isinstance(command, PlaceOrder):
                        held, events = accounts.take_hold(command)
                    else:
                        held, events = accounts.take_replace_hold(command)
                    rejects += (e for e in events if isinstance(e, OrderRejected))
                    account_events += (e for e in events if not isinstance(e, OrderRejected))
                    if held is None:
                        continue
                    command = held
                matched += engine.process(command)
                change = book_change(engine, command.ts, command.symbol)
                if change is not None:
                    matched.append(change)
            shared.flush()  # risk's changes, as the risk agent mirrors them: not settle's cost
            context.clear()

            if not agents:
                for event in matched:
                    account_events += accounts.settle(event)
                continue
            t0 = clock()
            settle_batch(shared, matched, exchange.accounts_events)
            t1 = clock()
            result.settle_ns += t1 - t0
            for stream, data in context.outputs:
                digest.update(stream.encode())
                digest.update(data)
            account_events += (exchange.accounts_events.codec.decode(data) for _, data in context.outputs)
            context.clear()

            batch = [*matched, *rejects, *account_events]
            result.events += len(batch)
            t0 = clock()
            publisher.process(batch)
            t1 = clock()
            result.publish_ns += t1 - t0
            for stream, data in context.outputs:
                digest.update(stream.encode())
                digest.update(data)
            for write in writes:
                digest.update(repr(write).encode())
            writes.clear()
            context.clear()
    finally:
        set_context(None)
    for table in tables:
        digest.update(table.state_hash().encode())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20_000, help="order commands in the flow")
    parser.add_argument("--chunk", type=int, default=200, help="commands per batch")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best CPU time of each agent counts")
    parser.add_argument("--stage-only", action="store_true",
                        help="run only the untimed staging (for instruction counts: subtract from a full run)")
    args = parser.parse_args()
    markets = build_exchange(MemoryTransport()).markets
    commands: list[Command] = [*funding(markets, range(1, 201)),
                               *order_flow(markets, args.orders, seed=1, accounts=range(1, 201), mid=100_000)]
    results: list[Result] = []
    gc.collect()
    for i in range(args.repeat):
        results.append(run(commands, args.chunk, agents=not args.stage_only))
        r = results[-1]
        print(f"run {i + 1}/{args.repeat}: settle {r.settle_ns / r.orders / 1000:.2f} us/order, "
              f"publish {r.publish_ns / r.orders / 1000:.2f} us/order", flush=True)
    digests = {r.digest.hexdigest() for r in results}
    assert len(digests) == 1, "runs differ"
    if args.stage_only:
        return
    best_settle = min(r.settle_ns for r in results)
    best_publish = min(r.publish_ns for r in results)
    r = results[0]
    print(f"\norders {r.orders}, publish input events {r.events}, chunk {args.chunk}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'agent':<10}{'best us/order':>15}{'median us/order':>17}")
    for name, best, values in (("settle", best_settle, [x.settle_ns for x in results]),
                               ("publish", best_publish, [x.publish_ns for x in results])):
        median = sorted(values)[len(values) // 2]
        print(f"{name:<10}{best / r.orders / 1000:>15.2f}{median / r.orders / 1000:>17.2f}")
    print(f"output digest {digests.pop()}")


if __name__ == "__main__":
    main()
