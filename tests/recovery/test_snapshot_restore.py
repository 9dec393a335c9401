"""Agents snapshot under a flow and restore from snapshot + tail (in-process stream store and snapshot store)."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.flows import funding, order_flow
from pipeline.app import wait_for_condition
from pipeline.exchange import Exchange, build_exchange
from pipeline.snapshots.codec import EngineCodec
from pipeline.snapshots.config import SnapshotConfig
from pipeline.snapshots.manager import MemorySnapshotStore, SnapshotManager
from pipeline.transport.memory import MemoryTransport
from tests.core.core_helpers import sample_markets

UNITS = {"validate", "risk+settle", "match", "publish"}


def _exchange(transport: MemoryTransport, store: MemorySnapshotStore) -> tuple[Exchange, SnapshotManager]:
    markets = sample_markets()
    exchange = build_exchange(transport, markets=markets)
    manager = SnapshotManager(exchange.app, store, SnapshotConfig(interval_s=0),
                              engine_codecs={"match": EngineCodec(markets)})
    exchange.app.snapshots = manager
    return exchange, manager


async def _send(exchange: Exchange, commands: list[Any]) -> None:
    for start in range(0, len(commands), 500):
        await exchange.orders_in.send_many((getattr(c, "account_id", None), c) for c in commands[start:start + 500])
    await exchange.app.wait_caught_up(timeout=60)


def _hashes(exchange: Exchange) -> dict[str, str]:
    app = exchange.app
    tables = {name: table.state_hash() for name, table in app.tables.items()}
    return {"match": app.runners[("match", 0)].state.state_hash(), **tables}


async def _snapshot_round(manager: SnapshotManager, store: MemorySnapshotStore) -> dict[str, int]:
    before = len(store.records)
    manager.request("request", None)

    async def all_taken() -> bool:
        return {r.unit for r in store.records[before:]} >= UNITS

    await wait_for_condition(all_taken, 20, "a snapshot of every unit")
    return {r.unit: r.id or 0 for r in store.records[before:]}


async def _run_then_crash(transport: MemoryTransport, store: MemorySnapshotStore) -> tuple[dict[str, str], int]:
    """Flow, snapshot, more flow (the tail); stop as a crash would (no shutdown snapshot). Tail length of match."""
    markets = sample_markets()
    exchange, manager = _exchange(transport, store)
    await exchange.app.start()
    await exchange.app.wait_running()
    commands = [*funding(markets, range(1, 9)), *order_flow(markets, 2400, seed=11)]
    await _send(exchange, commands[:1600])
    ids = await _snapshot_round(manager, store)
    match_offset = next(r for r in store.records if r.id == ids["match"]).inputs["orders.accepted:0"]
    await _send(exchange, commands[1600:])
    hashes = _hashes(exchange)
    manager.units = {}  # a crash takes no shutdown snapshot
    await exchange.app.stop()
    tail = sum(len(exchange.orders_accepted.batch_decoder.decode(raw))
               for _, raw in await transport.read_range("orders.accepted:0", match_offset, 100_000))
    return hashes, tail


async def test_restart_restores_snapshot_and_replays_only_the_tail() -> None:
    transport, store = MemoryTransport(), MemorySnapshotStore()
    before, tail = await _run_then_crash(transport, store)
    assert tail > 0
    exchange, manager = _exchange(transport, store)
    await exchange.app.start()
    await exchange.app.wait_running()
    await exchange.app.wait_caught_up()
    await wait_for_condition(_done(manager, "match"), 10, "match to finish its replay")
    assert _hashes(exchange) == before
    match = manager.recoveries[("match", 0)]
    assert match.snapshot_id is not None and match.tail == tail and not match.fallback
    assert manager.recoveries[("risk+settle", 0)].snapshot_id is not None
    await exchange.app.stop()
    # a clean stop wrote a shutdown snapshot of every unit
    assert {r.unit for r in store.records if r.reason == "shutdown"} == UNITS


async def _done_async(manager: SnapshotManager, unit: str) -> bool:
    report = manager.recoveries.get((unit, 0))
    return report is not None and report.done


def _done(manager: SnapshotManager, unit: str) -> Any:
    return lambda: _done_async(manager, unit)


async def test_a_corrupt_latest_snapshot_falls_back_to_the_previous_one() -> None:
    transport, store = MemoryTransport(), MemorySnapshotStore()
    markets = sample_markets()
    exchange, manager = _exchange(transport, store)
    await exchange.app.start()
    await exchange.app.wait_running()
    commands = [*funding(markets, range(1, 9)), *order_flow(markets, 1500, seed=4)]
    await _send(exchange, commands[:800])
    first = await _snapshot_round(manager, store)
    await _send(exchange, commands[800:])
    second = await _snapshot_round(manager, store)
    before = _hashes(exchange)
    manager.units = {}
    await exchange.app.stop()
    for record in store.records:
        if record.id == second["match"]:  # undecodable
            record.payload = record.payload[:20]
        if record.id == second["risk+settle"]:  # decodes, but not to the recorded state
            record.state_hash = "0" * 32

    exchange, manager = _exchange(transport, store)
    await exchange.app.start()
    await exchange.app.wait_running()
    await wait_for_condition(_done(manager, "match"), 10, "match to finish its replay")
    assert _hashes(exchange) == before
    match, accounts = manager.recoveries[("match", 0)], manager.recoveries[("risk+settle", 0)]
    assert match.snapshot_id == first["match"] and "corrupt" in match.fallback
    assert accounts.snapshot_id == first["risk+settle"] and "state hash" in accounts.fallback
    assert manager.recoveries[("publish", 0)].snapshot_id == second["publish"]
    await exchange.app.stop()


async def test_snapshot_store_down_at_start_means_a_full_replay() -> None:
    transport, store = MemoryTransport(), MemorySnapshotStore()
    before, _ = await _run_then_crash(transport, store)
    store.down = True
    exchange, manager = _exchange(transport, store)
    await exchange.app.start()
    await exchange.app.wait_running()
    await wait_for_condition(_done(manager, "match"), 10, "match to finish its replay")
    assert _hashes(exchange) == before
    match = manager.recoveries[("match", 0)]
    assert match.snapshot_id is None and "unreachable" in match.fallback
    assert match.tail > 2000  # everything was replayed
    await exchange.app.stop()


async def test_taking_a_snapshot_does_not_lose_or_reorder_work() -> None:
    """Snapshots requested again and again while orders flow: the result equals a run without them."""
    markets = sample_markets()
    commands = [*funding(markets, range(1, 9)), *order_flow(markets, 1500, seed=8)]
    plain = build_exchange(MemoryTransport(), markets=markets)
    await plain.app.start()
    await plain.app.wait_running()
    await _send(plain, commands)
    expected = _hashes(plain)
    await plain.app.stop()

    store = MemorySnapshotStore()
    exchange, manager = _exchange(MemoryTransport(), store)
    await exchange.app.start()
    await exchange.app.wait_running()
    for start in range(0, len(commands), 100):
        await exchange.orders_in.send_many((getattr(c, "account_id", None), c) for c in commands[start:start + 100])
        manager.request("request", None)
        await asyncio.sleep(0)
    await exchange.app.wait_caught_up(timeout=60)
    assert _hashes(exchange) == expected
    await exchange.app.stop()
    assert len(store.records) > len(UNITS)
