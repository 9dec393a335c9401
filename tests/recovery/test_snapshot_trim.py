"""Stream trimming never drops an entry that is unarchived, uncommitted or not covered by a snapshot."""

from __future__ import annotations

from typing import Any

import pytest

from bench.flows import funding, order_flow
from pipeline.agents.events import ClockTick
from pipeline.agents.publish.agent import CLOCK_TOPIC
from pipeline.app import wait_for_condition
from pipeline.config import PipelineConfig
from pipeline.exchange import Exchange, build_exchange
from pipeline.snapshots.config import SnapshotConfig
from pipeline.snapshots.manager import TRIMMED_KEY, SnapshotManager, SnapshotRecord
from pipeline.transport.base import START, id_key
from pipeline.transport.redis import RedisTransport
from recovery.persister import Persister, PersisterConfig
from recovery.snapshot_store import PostgresSnapshotStore
from recovery.snapshots import attach_snapshots
from recovery.trim import StreamTrimmer, TrimRule
from tests.serving import within

pytestmark = pytest.mark.slow
CONFIG = PipelineConfig(lease_ttl_ms=1000)
SNAPSHOTS = SnapshotConfig(interval_s=0, trim=False)
UNITS = {"validate", "risk+settle", "match", "publish"}


async def _send(exchange: Exchange, commands: list[Any]) -> None:
    for start in range(0, len(commands), 500):
        await exchange.orders_in.send_many((getattr(c, "account_id", None), c) for c in commands[start:start + 500])
    await exchange.app.wait_caught_up(timeout=90)


async def _archive_all(persister: Persister) -> dict[str, str]:
    while await persister.step(block_ms=0):
        pass
    return dict(persister.positions)


async def _snapshot_round(manager: SnapshotManager, store: PostgresSnapshotStore) -> dict[str, SnapshotRecord]:
    generation = manager.request("request", None)

    async def taken() -> bool:
        return all(manager.last.get((unit, 0)) is not None and manager._taken.get((unit, 0), 0) >= generation
                   and (unit, 0) not in manager._busy for unit in UNITS)

    await wait_for_condition(taken, 30, "a snapshot of every unit")
    return {unit: manager.last[(unit, 0)] for unit in UNITS}


async def _entry_ids(transport: RedisTransport) -> dict[str, list[str]]:
    out = {}
    for info in await transport.streams():
        ids, after = [], START
        while entries := await transport.read_range(info.stream, after, 5000):
            ids += [e for e, _ in entries]
            after = entries[-1][0]
        out[info.stream] = ids
    return out


async def _committed(transport: RedisTransport) -> dict[str, list[str]]:
    """Stream -> every registered consumer's committed position (START if it committed nothing)."""
    out: dict[str, list[str]] = {}
    for info in await transport.streams():
        for consumer in await transport.consumers(info.stream):
            position = (await transport.positions(consumer)).get(info.stream)
            out.setdefault(info.stream, []).append(position.last_id if position else START)
    return out


def _assert_safe(before: dict[str, list[str]], after: dict[str, list[str]], limits: dict[str, list[str]]) -> int:
    """Every removed entry is at or below every limit of its stream; the removed count."""
    removed_total = 0
    for stream, ids in before.items():
        removed = set(ids) - set(after.get(stream, []))
        removed_total += len(removed)
        if not removed:
            continue
        highest = max(removed, key=id_key)
        stream_limits = limits.get(stream)
        assert stream_limits, f"{stream} was trimmed though nothing bounds it"
        for limit in stream_limits:
            assert id_key(highest) <= id_key(limit), f"{stream}: trimmed {highest} above {limit}"
        assert ids[-len(after.get(stream, [])):] == after.get(stream, []) or not after.get(stream)
    return removed_total


async def test_trimming_keeps_everything_unarchived_or_needed_for_recovery(
        redis_flush: str, database_flush: str) -> None:
    transport = RedisTransport(redis_flush)
    exchange = build_exchange(transport, CONFIG)
    manager = attach_snapshots(exchange, database_flush, SNAPSHOTS)
    store = PostgresSnapshotStore(database_flush)
    persister = Persister(transport, database_flush, config=PersisterConfig(block_ms=50))
    trimmer = StreamTrimmer(transport.client, transport, store, TrimRule.from_units(manager.units),
                            keep_snapshots=2, keep_seconds=0)
    markets = exchange.markets
    commands = [*funding(markets, range(1, 9)), *order_flow(markets, 3000, seed=31)]
    await exchange.app.start()
    await exchange.app.wait_running()
    try:
        clock = exchange.app.topics[CLOCK_TOPIC]
        for _ in range(3):  # publish's clock input (its timer ticks every 5 s): archived and trimmed like the rest
            await clock.send(ClockTick(exchange.app.clock()))
        await _send(exchange, commands[:1000])
        archived = await _archive_all(persister)
        assert archived.get("publish.clock:0", START) != START
        # an analytics consumer group on orders.valid that has read only its first entries
        valid = (await _entry_ids(transport))["orders.valid:0"]
        group_at = valid[len(valid) // 2]
        await transport.client.xgroup_create("orders.valid:0", "analytics", id=group_at)
        await _send(exchange, commands[1000:1800])  # not archived yet
        first = await _snapshot_round(manager, store)

        before = await _entry_ids(transport)
        committed = await _committed(transport)
        await trimmer.run()
        after = await _entry_ids(transport)
        limits = {s: [archived[s], *committed.get(s, [])] for s in archived}
        assert _assert_safe(before, after, limits) > 0
        # one snapshot per unit is not enough (keep 2): match's input and the changelogs stay whole
        assert after["orders.accepted:0"] == before["orders.accepted:0"]
        assert all(after[s] == before[s] for s in before if s.startswith("changelog."))
        assert all(after[s] == before[s] for s in before if s not in archived and not s.startswith("changelog."))
        assert [e for e in before["orders.valid:0"] if id_key(e) >= id_key(group_at)] == after["orders.valid:0"]
        assert len(after["orders.in:0"]) < len(before["orders.in:0"])
        assert len(after["publish.clock:0"]) < len(before["publish.clock:0"])

        archived = await _archive_all(persister)
        await _send(exchange, commands[1800:2400])
        await _snapshot_round(manager, store)
        archived = await _archive_all(persister)
        await _send(exchange, commands[2400:])  # unarchived again

        before = await _entry_ids(transport)
        committed = await _committed(transport)
        await trimmer.run()
        after = await _entry_ids(transport)
        limits = {s: [archived[s], *committed.get(s, [])] for s in archived}
        limits["orders.accepted:0"].append(first["match"].inputs["orders.accepted:0"])
        for unit in first.values():
            for stream, position in unit.changelogs.items():
                limits[stream] = [position]
        assert _assert_safe(before, after, limits) > 0
        assert len(after["orders.accepted:0"]) < len(before["orders.accepted:0"])  # now covered by 2 snapshots
        assert len(after["changelog.balances:0"]) < len(before["changelog.balances:0"])
        assert await transport.client.hget(TRIMMED_KEY, "orders.accepted:0") is not None
        expected = {"match": exchange.app.runners[("match", 0)].state.state_hash(),
                    **{n: t.state_hash() for n, t in exchange.app.tables.items()}}
    finally:
        manager.units = {}  # stop as a crash would: no shutdown snapshots
        await within(exchange.app.stop(), 120, "the first exchange's stop")
        await persister.stop()
        await store.close()

    # restart on the trimmed streams: the snapshots make up for what is gone
    again = build_exchange(transport, CONFIG)
    restored = attach_snapshots(again, database_flush, SNAPSHOTS)
    await again.app.start()
    try:
        await again.app.wait_running(timeout=30)

        async def done() -> bool:
            report = restored.recoveries.get(("match", 0))
            return report is not None and report.done

        await wait_for_condition(done, 30, "match to recover")
        assert {"match": again.app.runners[("match", 0)].state.state_hash(),
                **{n: t.state_hash() for n, t in again.app.tables.items()}} == expected
    finally:
        restored.units = {}
        await within(again.app.stop(), 120, "the restarted exchange's stop")

    # without the snapshot store the trimmed streams cannot rebuild the state: agents wait instead of lying
    blind = build_exchange(transport, CONFIG)
    attach_snapshots(blind, None, SNAPSHOTS)
    await blind.app.start()
    try:
        with pytest.raises(TimeoutError):
            await blind.app.wait_running(timeout=4)
        assert not blind.app.runners[("match", 0)].ready
    finally:
        await within(blind.app.stop(), 120, "the blind exchange's stop")
        await within(transport.close(), 30, "closing the transport")
