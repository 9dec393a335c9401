"""`exchange snapshot now|list|show ID|verify [ID]`: the agents' state snapshots in PostgreSQL.

- ``now``: ask every running stateful agent for a snapshot (they take it at their next batch
  boundary), wait for all of them and print the result;
- ``list``: the newest snapshots with size, age and offsets;
- ``show ID``: one snapshot: positions, what it holds (orders, levels, balances...);
- ``verify [ID]``: decode and recompute the state hash (default: the newest of each agent).

Uses REDIS_URL / DATABASE_URL, else the running embedded servers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from infra.cli.common import ToolError, async_tool, database_url, print_table, redis_url


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("snapshot", help="take, list, show and verify state snapshots")
    sub = parser.add_subparsers(dest="snapshot_command", metavar="ACTION", required=True)
    now = sub.add_parser("now", help="snapshot every running stateful agent now and wait for it")
    now.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    now.set_defaults(func=_tool(cmd_now))
    listing = sub.add_parser("list", help="the newest snapshots")
    listing.add_argument("-n", "--count", type=int, default=30)
    listing.set_defaults(func=_tool(cmd_list))
    show = sub.add_parser("show", help="one snapshot in detail")
    show.add_argument("id", type=int)
    show.set_defaults(func=_tool(cmd_show))
    verify = sub.add_parser("verify", help="decode snapshots and recompute their state hash")
    verify.add_argument("id", type=int, nargs="?", help="snapshot id (default: the newest of each agent)")
    verify.set_defaults(func=_tool(cmd_verify))



def _tool(command: Any) -> Any:
    return async_tool(command, unreachable=True)


def human_size(n: int) -> str:
    """Bytes as an operator reads them."""
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def human_age(taken_at: float | None, now: float | None = None) -> str:
    if taken_at is None:
        return "?"
    seconds = max(0.0, (now or time.time()) - taken_at)
    for limit, size, unit in ((60, 1, "s"), (3600, 60, "m"), (86400, 3600, "h")):
        if seconds < limit:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds / 86400:.1f}d"


def short_offsets(offsets: dict[str, str]) -> str:
    return " ".join(f"{stream}@{entry}" for stream, entry in sorted(offsets.items()) if entry != "0-0") or "-"


def _store() -> Any:
    from recovery.snapshot_store import PostgresSnapshotStore

    return PostgresSnapshotStore(database_url())


async def cmd_now(args: argparse.Namespace) -> int:
    import redis.asyncio as aioredis

    from pipeline.snapshots.manager import REQUEST_KEY, UNIT_KEY

    client = aioredis.Redis.from_url(redis_url(), decode_responses=True)
    store = _store()
    try:
        expected = sorted({key[len(UNIT_KEY):] async for key in client.scan_iter(match=f"{UNIT_KEY}*")})
        if not expected:
            raise ToolError("no stateful agent is running (start the exchange: `exchange up` or `exchange worker`)")
        request_id = int(await client.incr(REQUEST_KEY))
        print(f"request {request_id}: waiting for {len(expected)} snapshots ({', '.join(expected)})",
              file=sys.stderr, flush=True)
        deadline = time.monotonic() + args.timeout
        done: list[Any] = []
        while time.monotonic() < deadline:
            done = await store.listing(request_id=request_id)
            if {f"{r.unit}:{r.partition}" for r in done} >= set(expected):
                break
            await asyncio.sleep(0.2)
        _print_records(done)
        missing = set(expected) - {f"{r.unit}:{r.partition}" for r in done}
        if missing:
            print(f"error: no snapshot after {args.timeout:.0f}s from {', '.join(sorted(missing))}", file=sys.stderr)
            return 1
        return 0
    finally:
        await client.aclose()
        await store.close()


def _print_records(records: list[Any]) -> None:
    now = time.time()
    print_table(
        ["id", "agent", "partition", "size", "raw", "age", "reason", "paused ms", "offsets"],
        [[r.id, r.unit, r.partition, human_size(r.size), human_size(r.raw_size), human_age(r.taken_at, now), r.reason,
          r.capture_ms, short_offsets(r.inputs)] for r in records])


async def cmd_list(args: argparse.Namespace) -> int:
    store = _store()
    try:
        _print_records(await store.listing(args.count))
    finally:
        await store.close()
    return 0


async def _load(store: Any, snapshot_id: int) -> Any:
    record = await store.get(snapshot_id)
    if record is None:
        raise ToolError(f"no snapshot {snapshot_id}")
    return record


async def cmd_show(args: argparse.Namespace) -> int:
    from pipeline.snapshots.codec import SnapshotDecodeError
    from recovery.snapshots import decode_record, tool_units

    store = _store()
    try:
        record = await _load(store, args.id)
    finally:
        await store.close()
    print(f"snapshot {record.id}: {record.unit}:{record.partition}, taken {human_age(record.taken_at)} ago "
          f"({record.reason}), {human_size(record.size)} {record.codec} ({human_size(record.raw_size)} raw), "
          f"format {record.format}")
    print(f"state hash {record.state_hash}; agent paused {record.capture_ms} ms, encoded in {record.encode_ms} ms\n")
    print_table(["stream", "kind", "entry id"],
                [[s, "input", e] for s, e in sorted(record.inputs.items())]
                + [[s, "changelog", e] for s, e in sorted(record.changelogs.items())])
    print()
    print_table(["what", "count"], sorted(record.summary.items()))
    try:
        state, _ = decode_record(record, tool_units())
    except SnapshotDecodeError as exc:
        print(f"\ncannot decode the payload: {exc}", file=sys.stderr)
        return 1
    if hasattr(state, "markets"):
        print()
        rows = []
        for symbol in sorted(state.markets()):
            book = state.book(symbol)
            bids, asks = book.depth(10**9)
            rows.append([symbol, state.market(symbol).spec.status, len(book), len(bids), len(asks),
                         book.best_bid(), book.best_ask(), state.next_trade_id(symbol) - 1])
        print_table(["market", "status", "orders", "bid levels", "ask levels", "best bid", "best ask", "trades"], rows)
    elif "balances" in state:
        print()
        per_asset: dict[str, list[int]] = {}
        for balance in state["balances"].values():
            totals = per_asset.setdefault(balance.asset, [0, 0, 0])
            totals[0] += 1
            totals[1] += balance.available
            totals[2] += balance.locked
        print_table(["asset", "accounts", "available (units)", "locked (units)"],
                    [[asset, *totals] for asset, totals in sorted(per_asset.items())])
    return 0


async def cmd_verify(args: argparse.Namespace) -> int:
    from pipeline.snapshots.codec import SnapshotDecodeError
    from recovery.snapshots import decode_record, tool_units

    store = _store()
    try:
        if args.id is not None:
            records = [await _load(store, args.id)]
        else:
            newest: dict[tuple[str, int], Any] = {}
            for listed in await store.listing(1000):
                newest.setdefault((listed.unit, listed.partition), listed)
            records = [await store.get(r.id) for r in sorted(newest.values(), key=lambda r: r.id)]
    finally:
        await store.close()
    if not records:
        print("no snapshots")
        return 0
    units = tool_units()
    rows, bad = [], 0
    for record in records:
        started = time.perf_counter()
        try:
            _, state_hash = decode_record(record, units)
            verdict = "ok" if state_hash == record.state_hash else f"HASH MISMATCH (recomputed {state_hash})"
        except SnapshotDecodeError as exc:
            verdict = f"UNDECODABLE: {exc}"
        bad += verdict != "ok"
        rows.append([record.id, record.unit, record.partition, record.state_hash,
                     round((time.perf_counter() - started) * 1000, 1), verdict])
    print_table(["id", "agent", "partition", "recorded hash", "ms", "verdict"], rows)
    return 1 if bad else 0
