"""The runtime side of snapshots: when agents snapshot, how, and how they restore on start.

    manager = SnapshotManager(app, store, SnapshotConfig.from_env(), engine_codecs={"match": EngineCodec(m)})
    app.snapshots = manager          # before app.start(); the runtime calls the hooks below

A *unit* is what one snapshot row holds: a replay agent's in-memory state (match: the
engine), or the changelog tables a group of agents share (validate; risk+settle: the
accounts; publish). The runtime calls:

- `restore_state` / `restore_tables` while a partition is prepared: load the newest
  snapshot that decodes and whose hash checks (else the one before, saying so), then
  the runtime replays input (or applies the changelog) after the snapshot's offsets.
  PostgreSQL unreachable: full replay from the streams, unless they were trimmed (then
  the partition waits for PostgreSQL, retrying).
- `at_boundary` between batches (everything committed, nothing in hand): takes the
  snapshot when one is due (timer, `exchange snapshot now`), pausing the agent only to
  fork (or copy); serialising, compressing and writing happen off the event loop.
- `at_stop` when the app stops cleanly: a last snapshot, written before the agent exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from pipeline.errors import ExchangeError
from pipeline.snapshots.capture import collect, fork_encode
from pipeline.snapshots.codec import CODEC, Encoded, EngineCodec, SnapshotDecodeError, TablesCodec, decompress
from pipeline.snapshots.config import SnapshotConfig
from pipeline.tables.table import Table
from pipeline.transport.base import START, id_key

if TYPE_CHECKING:
    from pipeline.agent import PartitionRunner
    from pipeline.app import App

log = logging.getLogger(__name__)

REQUEST_KEY = "snapshot:request"
"""Redis counter: `exchange snapshot now` increments it; running agents snapshot when it moves."""
UNIT_KEY = "snapshot:unit:"
"""Redis keys ``snapshot:unit:<unit>:<partition>`` (short TTL): the units running somewhere now."""
TRIMMED_KEY = "trimmed"
"""Redis hash: stream -> the MINID it was last trimmed to (a stream in it cannot be fully replayed)."""


class SnapshotRecord(msgspec.Struct, kw_only=True):
    """One snapshot: a unit's state and the positions it reflects."""

    unit: str
    partition: int
    inputs: dict[str, str]
    """Input stream -> last entry id the state reflects."""
    changelogs: dict[str, str]
    """Changelog stream -> last changelog entry the state reflects (table units)."""
    state_hash: str
    format: str
    codec: str
    payload: bytes
    raw_size: int
    summary: dict[str, int]
    reason: str
    size: int = 0
    """Payload bytes (set also when the payload itself is not loaded)."""
    request_id: int | None = None
    capture_ms: float = 0.0
    encode_ms: float = 0.0
    id: int | None = None
    taken_at: float | None = None
    """Unix seconds (set by the store)."""


class SnapshotStore(Protocol):
    """Where snapshots are kept (PostgreSQL in production, memory in unit tests)."""

    async def save(self, record: SnapshotRecord) -> int: ...

    async def recent(self, unit: str, partition: int, limit: int) -> list[SnapshotRecord]:
        """The newest `limit` snapshots of a unit partition, newest first, with payloads."""
        ...

    async def prune(self, unit: str, partition: int, keep: int) -> int: ...

    async def close(self) -> None: ...


class MemorySnapshotStore:
    """Snapshots in a list: for tests without PostgreSQL."""

    def __init__(self) -> None:
        self.records: list[SnapshotRecord] = []
        self.down = False

    async def save(self, record: SnapshotRecord) -> int:
        self._check()
        record.id = len(self.records) + 1
        record.taken_at = time.time()
        self.records.append(record)
        return record.id

    async def recent(self, unit: str, partition: int, limit: int) -> list[SnapshotRecord]:
        self._check()
        found = [r for r in self.records if r.unit == unit and r.partition == partition]
        return found[::-1][:limit]

    async def prune(self, unit: str, partition: int, keep: int) -> int:
        keep_ids = {r.id for r in await self.recent(unit, partition, keep)}
        before = len(self.records)
        self.records = [r for r in self.records if r.unit != unit or r.partition != partition or r.id in keep_ids]
        return before - len(self.records)

    async def close(self) -> None:
        return None

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("snapshot store is down")


class SnapshotUnavailableError(ExchangeError):
    """No usable snapshot and the streams were trimmed: the state cannot be rebuilt yet."""


@dataclass(frozen=True)
class Unit:
    """What one snapshot holds: a replay agent's state, or a set of shared tables."""

    name: str
    agents: tuple[str, ...]
    codec: EngineCodec | TablesCodec
    tables: tuple[Table[Any, Any], ...] = ()

    @property
    def replay(self) -> bool:
        return not self.tables


@dataclass
class RecoveryReport:
    """How one unit partition came back: from which snapshot, how much tail, how long."""

    unit: str
    partition: int
    snapshot_id: int | None
    tail: int = 0
    """Input messages replayed (replay units) or changelog changes applied after the snapshot."""
    seconds: float = 0.0
    fallback: str = ""
    """Why an older snapshot or a full replay was used ("" if the newest snapshot was)."""
    done: bool = False


@dataclass
class _Recovering:
    report: RecoveryReport
    started: float
    processed: int


@dataclass
class _Round:
    """One round of snapshots: every unit takes one at its next boundary."""

    generation: int = 0
    reason: str = ""
    request_id: int | None = None


def build_units(app: App, engine_codecs: Mapping[str, EngineCodec]) -> dict[str, Unit]:
    """Agent name -> its unit: replay agents with an engine codec, and groups of agents sharing tables.

    Agents that share any table form one unit holding all their tables (risk and settle share
    the balances and holds; risk alone also owns its transfer requests).
    """
    units: dict[str, Unit] = {}
    groups: list[tuple[list[str], dict[str, Table[Any, Any]]]] = []
    for name, agent in app.agents.items():
        if agent.recover == "replay":
            if name in engine_codecs:
                units[name] = Unit(name, (name,), engine_codecs[name])
            continue
        if not agent.tables:
            continue
        names, tables = [name], {t.name: t for t in agent.tables}
        for group in [g for g in groups if set(g[1]) & set(tables)]:
            groups.remove(group)
            names, tables = group[0] + names, {**group[1], **tables}
        groups.append((names, tables))
    for names, tables in groups:
        ordered = tuple(tables[t] for t in sorted(tables))
        unit = Unit("+".join(names), tuple(names), TablesCodec(list(ordered)), ordered)
        for name in names:
            units[name] = unit
    return units


class SnapshotManager:
    """Takes and restores the snapshots of the agents running in one process."""

    def __init__(
        self,
        app: App,
        store: SnapshotStore,
        config: SnapshotConfig | None = None,
        *,
        engine_codecs: Mapping[str, EngineCodec] = {},
        redis: Any = None,
        after_snapshot: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.config = config or SnapshotConfig()
        self.redis = redis
        self.after_snapshot = after_snapshot
        self.units = build_units(app, engine_codecs)
        self.recoveries: dict[tuple[str, int], RecoveryReport] = {}
        """How each unit partition recovered at its last start (metrics read `seconds`)."""
        self.last: dict[tuple[str, int], SnapshotRecord] = {}
        """The last snapshot written per unit partition (without payload)."""
        self.round = _Round()
        self._taken: dict[tuple[str, int], int] = {}
        self._busy: set[tuple[str, int]] = set()
        self._final: set[tuple[str, int]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recovering: dict[tuple[str, int], _Recovering] = {}
        self._background: asyncio.Task[None] | None = None
        self._next_due = time.monotonic() + self.config.interval_s
        self._trim_lock = asyncio.Lock()

    # -- triggering -------------------------------------------------------------------

    def request(self, reason: str, request_id: int | None = None) -> int:
        """Start a round: every unit running here snapshots at its next batch boundary."""
        self.round = _Round(self.round.generation + 1, reason, request_id)
        return self.round.generation

    def _ensure_background(self) -> None:
        if self._background is None and self.redis is not None:
            self._background = asyncio.create_task(self._watch_requests(), name="snapshot-requests")

    async def _watch_requests(self) -> None:
        """Pick up `exchange snapshot now` requests, and say which units run here."""
        seen: int | None = None
        last_register = 0.0
        while True:
            try:
                value = int(await self.redis.get(REQUEST_KEY) or 0)
                if seen is None:
                    seen = value
                elif value > seen:
                    seen = value
                    self.request("request", value)
                now = time.monotonic()
                if now - last_register > 1.0:
                    last_register = now
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for (agent, partition), runner in list(self.app.runners.items()):
                            unit = self.units.get(agent)
                            if unit is not None and runner.ready:
                                pipe.set(f"{UNIT_KEY}{unit.name}:{partition}", self.app.owner, px=3000)
                        await pipe.execute()
            except Exception as exc:
                log.debug("snapshot request watch: %s", exc)
            await asyncio.sleep(self.config.request_poll_s)

    # -- the runtime's hooks ---------------------------------------------------------------

    async def at_boundary(self, runner: PartitionRunner) -> None:
        """Between batches: finish a recovery report, take a snapshot if one is due."""
        self._ensure_background()
        if runner.recovering or runner.lost:
            return
        agent, partition = runner.agent.name, runner.partition
        if self._recovering:
            self._finish_recovery(runner)
        if self.config.interval_s > 0 and time.monotonic() >= self._next_due:
            self._next_due = time.monotonic() + self.config.interval_s
            self.request("timer")
        unit = self.units.get(agent)
        if unit is None or self.round.generation == 0:
            return
        key = (unit.name, partition)
        if self._taken.get(key, 0) >= self.round.generation or key in self._busy:
            return
        self._taken[key] = self.round.generation
        await self.take(unit, runner, self.round.reason, self.round.request_id)

    async def at_stop(self, runner: PartitionRunner) -> None:
        """The app stops cleanly: a last snapshot of the unit, written before returning."""
        unit = self.units.get(runner.agent.name)
        if unit is None or runner.lost or runner.recovering or not runner.ready:
            return
        key = (unit.name, runner.partition)
        if key in self._final:
            return
        self._final.add(key)
        deadline = time.monotonic() + 60
        while key in self._busy and time.monotonic() < deadline:  # one is being written: let it finish first
            await asyncio.sleep(0.01)
        task = await self.take(unit, runner, "shutdown", None)
        if task is not None:
            with contextlib.suppress(Exception):
                await task

    async def close(self) -> None:
        """Wait for snapshots being written, stop watching requests, close the store."""
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
            self._background = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=30)
        self._final.clear()  # a restarted app takes shutdown snapshots again
        await self.store.close()

    # -- taking -----------------------------------------------------------------------

    async def take(self, unit: Unit, runner: PartitionRunner, reason: str,
                   request_id: int | None) -> asyncio.Task[SnapshotRecord | None] | None:
        """Capture the unit's state at this boundary and write it in the background; the writing task."""
        key = (unit.name, runner.partition)
        self._busy.add(key)
        try:
            if unit.replay:
                inputs, changelogs = runner.read_positions(), dict[str, str]()
                job = self._capture(unit, runner.state)
            else:
                job, inputs, changelogs = await self._capture_tables(unit, runner)
        except Exception:
            self._busy.discard(key)
            log.exception("snapshot of %s:%d: capture failed", unit.name, runner.partition)
            return None
        task = asyncio.create_task(self._write(unit, runner.partition, job, inputs, changelogs, reason,
                                               request_id), name=f"snapshot:{unit.name}:{runner.partition}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _capture(self, unit: Unit, source: Any) -> Callable[[], Awaitable[tuple[Encoded, float]]]:
        """Capture now (fork or copy, on the loop); the returned job encodes off the loop."""
        level = self.config.zstd_level
        codec: Any = unit.codec
        if self.config.capture == "fork":
            pid, fd, paused = fork_encode(lambda: codec.encode(source, level))

            async def from_child() -> tuple[Encoded, float]:
                return await collect(pid, fd), paused

            return from_child
        started = time.perf_counter()
        copy = codec.capture(source)
        paused = time.perf_counter() - started

        async def in_thread() -> tuple[Encoded, float]:
            return await asyncio.to_thread(codec.encode, copy, level), paused

        return in_thread

    async def _capture_tables(self, unit: Unit, runner: PartitionRunner) -> tuple[
            Callable[[], Awaitable[tuple[Encoded, float]]], dict[str, str], dict[str, str]]:
        """Hold the tables' locks (no co-owner mid-batch), read the positions they reflect, capture."""
        app, partition = self.app, runner.partition
        if not all(app.table_holders.get((t.name, partition)) for t in unit.tables):
            raise RuntimeError("not every table of the unit is loaded in this process")
        locks = [app.table_lock(table, partition) for table in sorted(unit.tables, key=lambda t: t.name)]
        acquired = []
        try:
            for lock in locks:
                await lock.acquire()
                acquired.append(lock)
            transport = app.transport
            changelogs = {}
            for table in unit.tables:
                stream = table.changelog_stream(partition)
                last = await transport.read_reverse(stream, 1)
                changelogs[stream] = last[0][0] if last else START
            inputs: dict[str, str] = {}
            for name in unit.agents:
                positions = await transport.positions(name)
                for topic in app.agents[name].topics:
                    stream = topic.stream(partition)
                    position = positions.get(stream)
                    inputs[stream] = position.last_id if position else START
            codec = unit.codec
            assert isinstance(codec, TablesCodec)
            # a forked child reads the live partitions (its memory is a copy); `copy` copies them here
            job = self._capture(unit, codec.view(partition) if self.config.capture == "fork" else partition)
            return job, inputs, changelogs
        finally:
            for lock in reversed(acquired):
                lock.release()

    async def _write(self, unit: Unit, partition: int, job: Callable[[], Awaitable[tuple[Encoded, float]]],
                     inputs: dict[str, str], changelogs: dict[str, str], reason: str,
                     request_id: int | None) -> SnapshotRecord | None:
        key = (unit.name, partition)
        try:
            encoded, paused = await job()
            record = SnapshotRecord(
                unit=unit.name, partition=partition, inputs=inputs, changelogs=changelogs,
                state_hash=encoded.state_hash, format=unit.codec.format, codec=CODEC, payload=encoded.payload,
                raw_size=encoded.raw_size, summary=encoded.summary, reason=reason, request_id=request_id,
                size=len(encoded.payload),
                capture_ms=round(paused * 1000, 3), encode_ms=round(encoded.encode_s * 1000, 3))
            await self.store.save(record)
            await self.store.prune(unit.name, partition, self.config.retain)
        except Exception as exc:
            log.warning("snapshot of %s:%d failed (%s: %s); the state stays recoverable from the streams",
                        unit.name, partition, type(exc).__name__, exc)
            return None
        finally:
            self._busy.discard(key)
        self.last[key] = msgspec.structs.replace(record, payload=b"")
        log.info("snapshot %s of %s:%d (%s): %d bytes, paused %.1f ms, encoded in %.0f ms", record.id, unit.name,
                 partition, reason, len(record.payload), record.capture_ms, record.encode_ms)
        if self.after_snapshot is not None and not self._trim_lock.locked():
            async with self._trim_lock:
                try:
                    await self.after_snapshot()
                except Exception as exc:
                    log.warning("trimming after the snapshot failed: %s", exc)
        return record

    # -- restoring ----------------------------------------------------------------------

    def _start_recovery(self, unit_name: str, runner: PartitionRunner, continued: bool = False) -> RecoveryReport:
        """A new report, or (`continued`: a co-owner restored the unit's other tables just now) that one's."""
        key = (unit_name, runner.partition)
        report = self.recoveries.get(key)
        started = time.perf_counter()
        if continued and report is not None:
            started -= report.seconds
        else:
            report = self.recoveries[key] = RecoveryReport(unit_name, runner.partition, None)
        self._recovering[(runner.agent.name, runner.partition)] = _Recovering(report, started, runner.processed)
        return report

    def _finish_recovery(self, runner: PartitionRunner) -> None:
        pending = self._recovering.pop((runner.agent.name, runner.partition), None)
        if pending is None:
            return
        report = pending.report
        unit = self.units.get(runner.agent.name)
        if unit is not None and unit.replay:
            report.tail = runner.processed - pending.processed
        report.seconds = time.perf_counter() - pending.started
        report.done = True
        source = f"snapshot {report.snapshot_id}" if report.snapshot_id is not None else "the streams alone"
        log.info("recovered %s:%d from %s + %d tail messages in %.3f s%s", report.unit, report.partition, source,
                 report.tail, report.seconds, f" ({report.fallback})" if report.fallback else "")

    async def _recent(self, unit: Unit, partition: int, report: RecoveryReport) -> list[SnapshotRecord] | None:
        try:
            return await self.store.recent(unit.name, partition, self.config.retain)
        except Exception as exc:
            report.fallback = f"snapshot store unreachable ({type(exc).__name__}: {exc}): full replay"
            log.warning("%s:%d: %s", unit.name, partition, report.fallback)
            return None

    async def _check_not_trimmed(self, unit: Unit, streams: list[str]) -> None:
        """A full rebuild needs every stream complete: refuse if any was trimmed."""
        if self.redis is None or not streams:
            return
        trimmed = [s for s, v in zip(streams, await self.redis.hmget(TRIMMED_KEY, streams), strict=True) if v]
        if trimmed:
            raise SnapshotUnavailableError(
                f"{unit.name}: no usable snapshot and {', '.join(trimmed)} were trimmed; waiting for the snapshot "
                "store to come back")

    def _usable(self, unit: Unit, record: SnapshotRecord, report: RecoveryReport) -> Any | None:
        """The decoded state of `record` if it decodes and its hash checks, else None (and why, logged)."""
        codec: Any = unit.codec
        try:
            state = codec.decode(decompress(record.payload, record.codec))
            if isinstance(codec, EngineCodec):
                result: Any = codec.build(state)
                state_hash = result.state_hash()
            else:
                state_hash, result = codec.state_hash(state), state
        except SnapshotDecodeError as exc:
            problem = f"snapshot {record.id} is corrupt ({exc})"
        else:
            if state_hash == record.state_hash:
                return result
            problem = f"snapshot {record.id} is corrupt (state hash {state_hash} != recorded {record.state_hash})"
        report.fallback = f"{problem}; falling back to an older one"
        log.warning("%s:%d: %s", unit.name, record.partition, report.fallback)
        return None

    async def restore_state(self, runner: PartitionRunner, committed: dict[str, str]) -> dict[str, str] | None:
        """Install the newest usable snapshot as the runner's state; the positions to replay from (None: START)."""
        unit = self.units.get(runner.agent.name)
        if unit is None or not unit.replay:
            return None
        report = self._start_recovery(unit.name, runner)
        if not any(p != START for p in committed.values()):
            return None
        records = await self._recent(unit, runner.partition, report)
        for record in records or ():
            ahead = [s for s, p in record.inputs.items() if id_key(p) > id_key(committed.get(s, START))]
            if ahead:
                report.fallback = f"snapshot {record.id} is ahead of the committed input ({', '.join(ahead)})"
                log.warning("%s:%d: %s; trying an older one", unit.name, runner.partition, report.fallback)
                continue
            state = self._usable(unit, record, report)
            if state is None:
                continue
            runner.state = state
            report.snapshot_id = record.id
            return {s: record.inputs.get(s, START) for s in runner.streams}
        if records:
            report.fallback = (report.fallback + "; " if report.fallback else "") + "no usable snapshot: full replay"
            log.warning("%s:%d: no usable snapshot: replaying the whole input", unit.name, runner.partition)
        await self._check_not_trimmed(unit, list(runner.streams))
        return None

    async def restore_tables(self, runner: PartitionRunner, tables: list[Table[Any, Any]]) -> None:
        """Rebuild table partitions from the newest usable snapshot plus the changelog after it."""
        transport, partition = self.app.transport, runner.partition
        unit = self.units.get(runner.agent.name)
        if unit is None or not {t.name for t in tables} <= {t.name for t in unit.tables}:
            for table in tables:
                await table.restore(transport, partition)
            return
        continued = any(self.app.table_holders.get((t.name, partition)) for t in unit.tables)
        report = self._start_recovery(unit.name, runner, continued)
        records = await self._recent(unit, partition, report)
        for record in records or ():
            ahead = []
            for stream in [t.changelog_stream(partition) for t in tables]:
                position = record.changelogs.get(stream, START)
                last = await transport.read_reverse(stream, 1)
                if id_key(position) > id_key(last[0][0] if last else START):
                    ahead.append(stream)
            if ahead:
                report.fallback = f"snapshot {record.id} is ahead of the changelog ({', '.join(ahead)})"
                log.warning("%s:%d: %s; trying an older one", unit.name, partition, report.fallback)
                continue
            data = self._usable(unit, record, report)
            if data is None:
                continue
            applied = 0
            for table in tables:
                stream = table.changelog_stream(partition)
                applied += await table.restore(transport, partition, base=data[table.name],
                                               after=record.changelogs.get(stream, START))
            report.snapshot_id = record.id
            report.tail += applied
            self._finish_recovery(runner)
            return
        if records:
            report.fallback = (report.fallback + "; " if report.fallback else "") + "no usable snapshot"
        await self._check_not_trimmed(unit, [t.changelog_stream(partition) for t in tables])
        for table in tables:
            report.tail += await table.restore(transport, partition)
        self._finish_recovery(runner)

