"""The bulk catch-up of replay agents: same state as the live path, bounded by the committed position."""

from __future__ import annotations

from typing import Any

import msgspec

from bench.flows import order_flow
from pipeline.agents.events import BookChanged
from pipeline.agents.match import register_match
from pipeline.agents.topology import MatchCommand
from pipeline.app import App, wait_for_condition
from pipeline.batching import pack
from pipeline.core.engine import MatchingEngine
from pipeline.core.messages import OrderEvent
from pipeline.messages import Codec
from pipeline.snapshots.catchup import BulkDecoder, catch_up, merge_entries
from pipeline.transport.base import Commit, id_key
from pipeline.transport.memory import MemoryTransport
from tests.core.core_helpers import sample_markets

CODEC: Codec[Any] = Codec(MatchCommand)
STREAM = "orders.accepted:0"


def _entries(commands: list[Any], sizes: list[int]) -> list[bytes]:
    """Record-batch entries of the given sizes (cycled); a size of 1 is written as a bare message."""
    out, at, k = [], 0, 0
    while at < len(commands):
        size = sizes[k % len(sizes)]
        chunk = [CODEC.encode(c) for c in commands[at:at + size]]
        out.append(chunk[0] if size == 1 else pack(chunk))
        at, k = at + size, k + 1
    return out


def test_bulk_decoding_equals_entry_by_entry_and_skips_bad_messages() -> None:
    commands = list(order_flow(sample_markets(), 400, seed=3))
    entries = [(f"{i + 1}-0", raw) for i, raw in enumerate(_entries(commands, [1, 15, 16, 200, 3]))]
    assert merge_entries(entries) is not None
    values, bad = BulkDecoder(MatchCommand).decode(entries)
    assert values == commands and bad == 0
    # one message of an entry is not a command: the others of that entry and of the rest still come through
    broken = pack([CODEC.encode(commands[0]), msgspec.msgpack.encode({"type": "Nonsense"}), CODEC.encode(commands[1])])
    values, bad = BulkDecoder(MatchCommand).decode([*entries[:2], ("99-0", broken), *entries[2:]])
    assert bad == 1
    assert values == [*commands[:16], commands[0], commands[1], *commands[16:]]
    assert merge_entries([("1-0", b"\xc3")]) is None  # neither an array nor a map


async def test_catch_up_stops_at_the_committed_entry() -> None:
    transport = MemoryTransport()
    commands = list(order_flow(sample_markets(), 300, seed=5))
    ids = await transport.produce(STREAM, _entries(commands, [7]))
    until = id_key(ids[20])
    applied: list[Any] = []
    result = await catch_up(transport, STREAM, "0-0", until, MatchCommand, applied.extend, target_messages=30)
    assert applied == commands[:21 * 7] and result.last_id == ids[20] and result.entries == 21
    assert not result.interrupted
    # asked to stop (the app stopping, the partition lost): it ends after the range in hand
    applied = []
    result = await catch_up(transport, STREAM, "0-0", until, MatchCommand, applied.extend, target_messages=30,
                            interrupted=lambda: True)
    assert result.interrupted and 0 < len(applied) < 21 * 7 and applied == commands[:len(applied)]


async def _recover(transport: MemoryTransport, fast: bool) -> tuple[MatchingEngine, int]:
    app = App("test", transport)
    markets = sample_markets()
    register_match(app, markets, app.topic("orders.accepted", value_type=MatchCommand),
                   app.topic("orders.events", value_type=OrderEvent | BookChanged))
    if not fast:
        app.agents["match"].replay = None
    await app.start()
    runner: Any = None

    async def recovered() -> bool:
        nonlocal runner
        runner = app.runners.get(("match", 0))
        return runner is not None and runner.ready and not runner.recovering and runner.processed > 0

    await wait_for_condition(recovered, 20, "match to replay its input")
    engine: MatchingEngine = runner.state
    processed: int = runner.processed
    await app.stop()
    return engine, processed


async def test_fast_and_live_replay_rebuild_the_same_engine() -> None:
    markets = sample_markets()
    commands = list(order_flow(markets, 3000, seed=9))
    live = MatchingEngine(markets)
    for command in commands:
        live.process(command)
    transport = MemoryTransport()
    entries = _entries(commands, [1, 40, 500, 9])
    bad = msgspec.msgpack.encode(["not", "commands"])  # dead-lettered when first read: skipped by both replays
    ids = await transport.produce(STREAM, [*entries[:30], bad, *entries[30:]])
    await transport.register_consumer(STREAM, "match")
    await transport.commit(Commit("match", {STREAM: (ids[-1], len(ids))}, [], None, []))
    fast, n_fast = await _recover(transport, True)
    slow, n_slow = await _recover(transport, False)
    assert fast.state_hash() == slow.state_hash() == live.state_hash()
    assert n_fast == n_slow == len(commands)
    assert all(book.drain_sides() is None for book in fast.books().values())  # nothing left over for BookChanged
