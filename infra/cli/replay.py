"""`exchange replay`: replay a topic into an isolated core, or re-deliver a range to a consumer group.

    exchange replay orders.in                                  # books, balances and hash after everything
    exchange replay orders.in --to 2026-11-30T23:50:00Z        # ... as of a time
    exchange replay orders.in --at 1764546600123-0#3           # what the books looked like after that message
    exchange replay orders.in --from now-5m --step             # every command of the last 5 minutes, one by one
    exchange replay orders.events --from now-1h --into-group backfill   # re-deliver to consumer group "backfill"

Bounds are offsets (``MS-SEQ`` or ``MS-SEQ#INDEX``, as `exchange topics tail` prints them),
times (ISO 8601, UTC unless a zone is given; or relative: ``now-90s``, ``now-5m``, ``now-2h``),
``start`` or ``end``. The core always starts empty, so by default it replays the history
before ``--from`` too, quietly (the books and balances then are those of the exchange);
``--fresh`` starts from nothing at ``--from`` instead. The live agents are never touched.
Entries already trimmed from Redis are read from the PostgreSQL archive (DATABASE_URL or
the running embedded PostgreSQL).

A topic name means every partition of the topic (``orders.accepted`` has
EXCHANGE_MARKET_PARTITIONS, ``orders.in``/``orders.valid`` EXCHANGE_ACCOUNT_PARTITIONS: the
streams TOPIC:0..N-1 found in Redis or the archive), read as one sequence merged by entry id;
``TOPIC:N`` means partition N alone. Entry ids are per partition: in a merged replay a
message is printed ``MS-SEQ#INDEX@pN`` (N: its partition), ordered by (MS, SEQ, N, INDEX),
and that form is what --from/--to/--at take to name it exactly; ``MS-SEQ`` alone means that
entry id in every partition, a time every partition's entries up to/from that time
(``#INDEX`` needs ``@pN`` when several partitions are merged). On one server the ids are the
server's clock, so the merge is the append order (entries of several partitions in the same
millisecond: partition 0 first); on a Valkey Cluster it is by each node's entry time.

Works on one server and on a Valkey Cluster (``REDIS_URL=redis+cluster://...``): streams are
named by their logical names (``orders.accepted:2``); on a cluster they are read from the
partition's tagged key, and --into-group writes ``{pN}replay.<group>.<stream>`` (printed;
a merged topic goes to ``replay.<group>.<topic>``, each entry with its partition in ``p``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from infra.cli.common import ToolError, async_tool, database_url, redis_url
from infra.cli.common import print_table as _print_table
from pipeline.errors import ExchangeError


def print_table(headers: Any, rows: Any) -> None:
    """`common.print_table` to the current stdout (its default is bound at import)."""
    _print_table(headers, rows, out=sys.stdout)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay", help="replay a topic into an isolated engine (books, balances, hash) or into a consumer group",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("topic", help="topic (all its partitions, merged by entry id) or stream TOPIC:P (one "
                                      "partition); cores replay orders.in, orders.valid or orders.accepted")
    parser.add_argument("--from", dest="start", default="start", metavar="OFFSET|TIME",
                        help="first message of the range (default: start); on a merged topic an offset is "
                             "MS-SEQ (every partition) or MS-SEQ#INDEX@pN (one message), as the replay prints it")
    parser.add_argument("--to", dest="end", default="end", metavar="OFFSET|TIME",
                        help="last message of the range, inclusive (default: end)")
    parser.add_argument("--at", metavar="OFFSET|TIME", help="show the state right after this message")
    parser.add_argument("--step", action="store_true", help="print every command of the range with what it did")
    parser.add_argument("--fresh", action="store_true",
                        help="start from an empty core at --from (default: replay the history before it too)")
    parser.add_argument("--levels", type=int, default=5, help="book levels per side to print (default 5)")
    parser.add_argument("--account", type=int, action="append", metavar="ID",
                        help="only these accounts' balances (repeatable)")
    parser.add_argument("--into-group", metavar="NAME",
                        help="append the range to stream replay.NAME.<stream> for consumer group NAME")
    parser.set_defaults(func=async_tool(_replay, errors=(ExchangeError,), unreachable=True))




def _check_args(args: argparse.Namespace) -> None:
    if args.at is not None and (args.start != "start" or args.end != "end"):
        raise ToolError("--at names one point: use it without --from/--to")
    if args.at is not None and args.into_group:
        raise ToolError("--into-group re-delivers a range: use --from/--to, not --at")
    if args.into_group and (args.step or args.fresh):
        raise ToolError("--step and --fresh are for replays into a core, not --into-group")
    if args.levels < 1:
        raise ToolError("--levels must be at least 1")


def _optional_database_url() -> str | None:
    try:
        return database_url()
    except ToolError:
        return None  # only needed if the range was trimmed from Redis; read_range says so then


async def _replay(args: argparse.Namespace) -> int:
    from pipeline.config import PipelineConfig
    from pipeline.core.markets import load_markets
    from recovery.replay import REPLAYABLE, ReplayCore, ReplayProgress, replay_into
    from recovery.replay_group import deliver_to_group
    from recovery.replay_source import ReplayError, open_client, stream_names
    from recovery.replay_topic import format_position, merged_before, resolve_topic

    _check_args(args)
    client = open_client(redis_url())  # one server, or a cluster (redis+cluster://): logical stream names
    try:
        db = _optional_database_url()
        source = await resolve_topic(client, args.topic, db)  # a bare topic: every partition, merged
        topic = source.topic
        if args.at is not None:
            start, end = None, source.bound(args.at, "to")
        else:
            start, end = source.bound(args.start, "from"), source.bound(args.end, "to")
        if start is not None and end is not None and start > end:
            raise ReplayError(f"the range is empty: --from {format_position(start, source.merged)} is after"
                              f" --to {format_position(end, source.merged)}")
        if not await source.exists(client) and db is None:
            known = await stream_names(client)
            raise ToolError(f"no stream {source.streams[0]!r} in Redis (streams: {', '.join(known) or 'none'})")
        if args.into_group:
            began = time.monotonic()
            target, entries, messages = await deliver_to_group(client, source, args.into_group, start, end, db)
            print(f"re-delivered {messages} message(s) in {entries} entr{'y' if entries == 1 else 'ies'} of"
                  f" {source.describe()} to {target} for consumer group {args.into_group!r}"
                  f" in {time.monotonic() - began:.2f}s")
            print(f"read them with: XREADGROUP GROUP {args.into_group} <consumer> STREAMS {target} >")
            return 0
        if topic not in REPLAYABLE:
            raise ToolError(f"{topic} cannot be replayed into a core; replayable: "
                            + "; ".join(f"{t} ({what})" for t, what in REPLAYABLE.items())
                            + ". Any topic can be re-delivered with --into-group")
        markets = load_markets(PipelineConfig.from_env().markets_file)
        core = ReplayCore(markets, stages=topic)
        began = time.monotonic()
        progress = ReplayProgress(lambda n, at: print(
            f"  replayed {n} messages ({n / max(time.monotonic() - began, 1e-9):,.0f}/s), at {at}",
            file=sys.stderr, flush=True))
        if start is not None and not args.fresh:  # the history before the range, quietly
            await replay_into(core, client, source, end=merged_before(start), database_url=db, progress=progress)
        skipped = core.applied
        step = _Stepper(core, args) if args.step else None
        await replay_into(core, client, source, start=start, end=end, database_url=db,
                          on_step=step, progress=None if step else progress)
        elapsed = time.monotonic() - began
    finally:
        await client.aclose()
    _print_state(core, args, source.describe(), skipped, elapsed)
    return 0


class _Stepper:
    """Prints each command of the range, what it did, the touched book and balances, and the hash."""

    def __init__(self, core: Any, args: argparse.Namespace) -> None:
        self.core = core
        self.levels = min(args.levels, 3)

    def __call__(self, message_id: Any, command: Any, events: list[Any]) -> None:
        from recovery.replay_view import BALANCE_HEADERS, BOOK_HEADERS, balance_rows, book_rows, describe, summarize

        print(f"\n[{self.core.applied}] {message_id}  {describe(command)}")
        print(f"  -> {summarize(events)}")
        symbol = getattr(command, "symbol", None)
        if isinstance(symbol, str) and symbol in self.core.markets:
            print_table(BOOK_HEADERS, book_rows(self.core, symbol, self.levels))
        accounts = {a for e in events for a in (getattr(e, "account_id", None),) if isinstance(a, int)}
        if accounts and self.core.stages != "orders.accepted":
            print_table(BALANCE_HEADERS, balance_rows(self.core, accounts))
        print(f"  state hash {self.core.state_hash()}")


def _print_state(core: Any, args: argparse.Namespace, what: str, skipped: int, elapsed: float) -> None:
    from recovery.replay_view import BALANCE_HEADERS, BOOK_HEADERS, balance_rows, book_rows, book_title

    print()
    shown = core.applied - skipped
    where = f"after {core.position}" if core.position is not None else "before the first message"
    print(f"replayed {core.applied} message(s) of {what} in {elapsed:.2f}s"
          + (f" ({skipped} before the range, {shown} in it)" if skipped else "")
          + (f"; {core.failed} undecodable skipped" if core.failed else "") + f"; state {where}")
    if args.at is not None and core.position is None:
        print("(nothing at or before that point)")
    empty = []
    for symbol in core.markets:
        rows = book_rows(core, symbol, args.levels)
        if not rows:
            empty.append(symbol)
            continue
        print(f"\n{book_title(core, symbol)}")
        print_table(BOOK_HEADERS, rows)
    if empty:
        print(f"\nempty books: {', '.join(empty)}")
    if core.stages != "orders.accepted":
        print("\nbalances")
        print_table(BALANCE_HEADERS, balance_rows(core, set(args.account) if args.account else None))
    print()
    print_table(("component", "state hash"), [*sorted(core.hashes().items()), ("all", core.state_hash())])
