"""`exchange state diff A B`: what differs between two states (orders, levels, balances, counters).

A side is a snapshot id (`exchange snapshot list`) or ``replay:<topic>@<offset>``: the state an
isolated replay of the topic up to that offset (inclusive; an entry id, a time, ``end``)
leads to (see `exchange replay`). A replay of ``orders.accepted`` holds the books only;
of ``orders.valid`` / ``orders.in`` the books and the accounts. Only what both sides hold
is compared.

Replay sides read the streams of REDIS_URL, one server or a Valkey Cluster (``redis+cluster://``):
``replay:orders.accepted:2@<offset>`` names a stream of a market partition; a topic name means
all its partitions merged by entry id (an offset in it: ``MS-SEQ#INDEX@pN`` as `exchange
replay` prints it, or ``MS-SEQ`` / a time for every partition; see `exchange replay --help`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.cli.common import ToolError, async_tool, database_url, print_table, redis_url

MAX_ROWS = 40


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("state", help="compare agent states (snapshots, replays)")
    sub = parser.add_subparsers(dest="state_command", metavar="ACTION", required=True)
    diff = sub.add_parser("diff", help="show what differs between two states")
    diff.add_argument("a", help="snapshot id, or replay:<topic>@<offset>")
    diff.add_argument("b", help="snapshot id, or replay:<topic>@<offset>")
    diff.add_argument("--rows", type=int, default=MAX_ROWS, help=f"rows shown per section (default {MAX_ROWS})")
    diff.set_defaults(func=cmd_diff)


@dataclass
class StateView:
    """A state reduced to what an operator compares; a section is None when this side does not hold it."""

    label: str
    hashes: dict[str, str] = field(default_factory=dict)
    orders: dict[tuple[str, int], tuple[Any, ...]] | None = None
    levels: dict[tuple[str, str, int], int] | None = None
    counters: dict[str, Any] | None = None
    balances: dict[tuple[int, str], tuple[int, int]] | None = None
    holds: dict[tuple[str, int], tuple[Any, ...]] | None = None
    tables: dict[str, dict[Any, Any]] = field(default_factory=dict)


def engine_view(view: StateView, engine: Any) -> None:
    """Fill the book sections from a `MatchingEngine`."""
    view.orders, view.levels, view.counters = {}, {}, {}
    for market in engine.snapshot().markets:
        symbol = market.symbol
        view.counters[f"{symbol} status"] = market.status
        view.counters[f"{symbol} next trade id"] = market.next_trade_id
        view.counters[f"{symbol} reserved client ids"] = len(market.ended_client_ids)
        for o in market.orders:
            view.orders[(symbol, o.order_id)] = (o.account_id, o.side, o.price_ticks, o.qty_lots, o.remaining_lots,
                                                 o.filled_quote)
            level = (symbol, o.side, o.price_ticks)
            view.levels[level] = view.levels.get(level, 0) + o.remaining_lots
    view.hashes["match"] = engine.state_hash()


def accounts_view(view: StateView, balances: Any, holds: Any) -> None:
    """Fill the accounts sections from `BalanceState` / `HoldState` values."""
    view.balances = {(b.account_id, b.asset): (b.available, b.locked) for b in balances}
    view.holds = {(h.symbol, h.order_id): (h.account_id, h.asset, h.remaining, h.fee_charged) for h in holds}


async def load_side(spec: str) -> StateView:
    """A side of the diff from its spec."""
    if spec.startswith("replay:"):
        return await _replay_side(spec)
    try:
        snapshot_id = int(spec)
    except ValueError:
        raise ToolError(f"{spec!r} is neither a snapshot id nor replay:<topic>@<offset>") from None
    from pipeline.snapshots.codec import SnapshotDecodeError
    from recovery.snapshot_store import PostgresSnapshotStore
    from recovery.snapshots import decode_record, tool_units

    store = PostgresSnapshotStore(database_url())
    try:
        record = await store.get(snapshot_id)
    finally:
        await store.close()
    if record is None:
        raise ToolError(f"no snapshot {snapshot_id}")
    view = StateView(f"#{record.id} {record.unit}:{record.partition}")
    try:
        state, state_hash = decode_record(record, tool_units())
    except SnapshotDecodeError as exc:
        raise ToolError(f"snapshot {snapshot_id} does not decode: {exc}") from None
    if hasattr(state, "markets"):
        engine_view(view, state)
        return view
    view.hashes[record.unit] = state_hash
    if "balances" in state and "holds" in state:
        accounts_view(view, state["balances"].values(), state["holds"].values())
    view.tables = {name: data for name, data in state.items() if name not in ("balances", "holds")}
    return view


async def _replay_side(spec: str) -> StateView:
    try:
        from recovery.replay import replay_state
        from recovery.replay_source import parse_bound
        from recovery.replay_topic import split_partition
    except ImportError as exc:  # the replay tool is not installed in this tree
        raise ToolError(f"replay sides need recovery.replay: {exc}") from None
    topic, _, offset = spec[len("replay:"):].partition("@")
    if not topic:
        raise ToolError(f"{spec!r}: expected replay:<topic>@<offset>")
    try:
        parse_bound(split_partition(offset or "end")[0], "to")  # a malformed offset fails before any reading
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    print(f"replaying {topic} up to {offset or 'end'}...", file=sys.stderr, flush=True)
    try:
        database: str | None = database_url()
    except ToolError:
        database = None
    core = await replay_state(topic, redis_url=redis_url(), database_url=database, end=offset or "end")
    view = StateView(f"replay {topic}@{offset or 'end'}")
    engine_view(view, core.engine)
    if topic.split(":")[0] != "orders.accepted":
        snapshot = core.accounts.snapshot()
        accounts_view(view, snapshot.balances, snapshot.holds)
        view.hashes["accounts"] = core.accounts.state_hash()
    return view


def diff_maps(a: Mapping[Any, Any], b: Mapping[Any, Any]) -> list[tuple[Any, Any, Any]]:
    """(key, value in a or None, value in b or None) for every key whose values differ, sorted."""
    keys = sorted(set(a) | set(b), key=repr)
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]


def _section(title: str, headers: list[str], rows: list[list[Any]], limit: int) -> None:
    print(f"\n{title}: {len(rows)} difference(s)")
    print_table(headers, rows[:limit], out=sys.stdout)  # the current stdout (the default is bound at import)
    if len(rows) > limit:
        print(f"... and {len(rows) - limit} more")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def print_diff(a: StateView, b: StateView, limit: int = MAX_ROWS) -> int:
    """Print what differs; the number of differences."""
    print(f"A: {a.label}  {' '.join(f'{k}={v}' for k, v in a.hashes.items())}")
    print(f"B: {b.label}  {' '.join(f'{k}={v}' for k, v in b.hashes.items())}")
    total, compared = 0, []
    if a.orders is not None and b.orders is not None and a.levels is not None and b.levels is not None:
        compared.append("books")
        counters = diff_maps(a.counters or {}, b.counters or {})
        _section("counters", ["counter", "A", "B"], [[k, _cell(x), _cell(y)] for k, x, y in counters], limit)
        orders = diff_maps(a.orders, b.orders)
        _section("orders (account side price qty remaining filled-quote)", ["market", "order id", "A", "B"],
                 [[k[0], k[1], _cell(x), _cell(y)] for k, x, y in orders], limit)
        levels = diff_maps(a.levels, b.levels)
        _section("levels (total lots)", ["market", "side", "price ticks", "A", "B"],
                 [[k[0], k[1], k[2], _cell(x), _cell(y)] for k, x, y in levels], limit)
        total += len(counters) + len(orders) + len(levels)
    if a.balances is not None and b.balances is not None and a.holds is not None and b.holds is not None:
        compared.append("accounts")
        balances = diff_maps(a.balances, b.balances)
        _section("balances (available locked, minimal units)", ["account", "asset", "A", "B"],
                 [[k[0], k[1], _cell(x), _cell(y)] for k, x, y in balances], limit)
        holds = diff_maps(a.holds, b.holds)
        _section("holds (account asset remaining fee-charged)", ["market", "order id", "A", "B"],
                 [[k[0], k[1], _cell(x), _cell(y)] for k, x, y in holds], limit)
        total += len(balances) + len(holds)
    for name in sorted(set(a.tables) & set(b.tables)):
        compared.append(name)
        rows = diff_maps(a.tables[name], b.tables[name])
        _section(f"table {name}", ["key", "A", "B"], [[_cell(k), _cell(x), _cell(y)] for k, x, y in rows], limit)
        total += len(rows)
    if not compared:
        raise ToolError(f"{a.label} and {b.label} hold nothing in common to compare")
    print(f"\ncompared {', '.join(compared)}: " + ("identical" if total == 0 else f"{total} difference(s)"))
    return total


async def _diff(args: argparse.Namespace) -> int:
    a, b = await load_side(args.a), await load_side(args.b)
    return 1 if print_diff(a, b, args.rows) else 0


cmd_diff = async_tool(_diff, unreachable=True, error_code=2)
"""`exchange state diff`: exit 0 identical, 1 different, 2 trouble (as diff(1) does)."""
