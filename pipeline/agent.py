"""Agents: async functions that consume a topic partition in batches.

An agent function receives an `AgentStream` and iterates it, either event by event
(``async for event in stream``) or batch by batch (``async for batch in
stream.batches()``). The runtime commits a batch -- outputs, table changelog and
input offsets, in one atomic transport call -- when the agent asks for more after
consuming all of it, so a crash anywhere loses nothing and applies nothing twice.

If the agent raises, the effects of the failing event are rolled back, the event
goes to the dead-letter stream, and the agent function is started again on the
rest of the input (a failing batch is retried one event at a time to find it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import msgspec

from pipeline.batching import group, pack
from pipeline.context import BatchContext, set_context
from pipeline.deadletter import DEAD_LETTER_CODEC, DLQ_STREAM, DeadLetter
from pipeline.errors import FencedError
from pipeline.transport.base import START, WRITE_COMMANDS, Commit, id_key

if TYPE_CHECKING:
    from pipeline.app import App
    from pipeline.tables.table import Table
    from pipeline.topics import Topic

log = logging.getLogger(__name__)

V = TypeVar("V")
Item = tuple[str, str, bytes | None, Any]
"""(stream, entry id, raw message if kept, decoded value) of one input message."""

Recovery = Literal["changelog", "replay"]


class Agent(Generic[V]):
    """An agent definition: its function, its input topics and the tables it owns."""

    def __init__(
        self,
        app: App,
        fn: Callable[[AgentStream[V]], Awaitable[None]],
        topics: Sequence[Topic[Any]],
        *,
        name: str,
        tables: Sequence[Table[Any, Any]] = (),
        recover: Recovery = "changelog",
        state: Callable[[int], Any] | None = None,
        replay: Callable[[Any, list[Any]], None] | None = None,
    ) -> None:
        partitions = {t.partitions for t in topics}
        if len(partitions) != 1:
            raise ValueError(f"agent {name}: input topics must have the same partition count")
        if recover == "replay" and (len(topics) != 1 or tables):
            raise ValueError(f"agent {name}: replay recovery needs one input topic and no tables")
        if replay is not None and recover != "replay":
            raise ValueError(f"agent {name}: a replay function needs recover='replay'")
        self.app = app
        self.fn = fn
        self.topics = list(topics)
        self.name = name
        self.tables = sorted(tables, key=lambda t: t.name)
        self.recover = recover
        self.state_factory = state
        self.replay = replay
        """(state, values): apply already-committed input to the state, no outputs (see `_catch_up`)."""
        self.partitions = partitions.pop()
        self.lease_name = name
        """Agents that share state (risk and settle) share one lease name: one worker owns both."""

    def __repr__(self) -> str:
        return f"Agent({self.name!r})"

    def lease_key(self, partition: int) -> str:
        """The Redis key of this agent's ownership lease on one partition."""
        return f"lease:{self.lease_name}:{partition}"


class AgentStream(Generic[V]):
    """What an agent function iterates: the values of its input partition."""

    def __init__(self, runner: PartitionRunner) -> None:
        self._runner = runner

    @property
    def partition(self) -> int:
        """The partition this stream reads."""
        return self._runner.partition

    @property
    def state(self) -> Any:
        """The partition's in-memory state object (from the agent's `state` factory), fresh per owner."""
        return self._runner.state

    @property
    def replaying(self) -> bool:
        """True while the runtime is rebuilding state by replaying already-committed input."""
        return self._runner.context.replaying

    def write(self, *commands: tuple[str | bytes, ...]) -> None:
        """Add read-model updates to the current batch, applied atomically with its commit.

        Each command is one of `WRITE_COMMANDS`, e.g. ``("HSET", key, field, value, ...)``
        or ``("SET", key, value)``. A failing event's writes are rolled back with its other
        effects; while the runtime replays committed input, writes are dropped (they were
        applied when that input was first committed).
        """
        writes = self._runner.context.writes
        for command in commands:
            if command[0] not in WRITE_COMMANDS:
                raise ValueError(f"unsupported read-model write {command[0]!r}")
            writes.append(command)

    def __aiter__(self) -> AsyncIterator[V]:
        return self._events()

    async def _events(self) -> AsyncIterator[V]:
        runner = self._runner
        while (unit := await runner.next_unit()) is not None:
            for index, item in enumerate(unit):
                runner.mark(index, index + 1)
                yield item[3]
            runner.mark(len(unit), len(unit))

    async def batches(self) -> AsyncIterator[list[V]]:
        """Iterate lists of values: whatever arrived together, up to the batch size."""
        runner = self._runner
        while (unit := await runner.next_unit()) is not None:
            runner.mark(0, len(unit))
            yield [item[3] for item in unit]
            runner.mark(len(unit), len(unit))


class PartitionRunner:
    """Runs one agent on one partition: read, deliver, roll back on error, commit."""

    def __init__(self, app: App, agent: Agent[Any], partition: int, lease_value: str | None) -> None:
        self.app = app
        self.agent = agent
        self.partition = partition
        self.lease_value = lease_value
        self.context = BatchContext(partition)
        self.state: Any = agent.state_factory(partition) if agent.state_factory else None
        self.streams = [t.stream(partition) for t in agent.topics]
        self._decoders = {t.stream(partition): t.batch_decoder for t in agent.topics}
        self._codecs = {t.stream(partition): t.codec for t in agent.topics}
        self._positions: dict[str, str] = dict.fromkeys(self.streams, START)
        self._replay_until: dict[str, tuple[int, int]] = {}
        self._queue: deque[Item] = deque()
        self._single = 0  # how many queued items to deliver one at a time
        self._unit: list[Item] = []
        self._done = 0
        self._span_end = 0
        self._savepoint = (0, 0, 0)
        self._consumed: dict[str, tuple[str, int]] = {}
        self._locks: list[asyncio.Lock] = []
        # the next batch, returned by the last commit when the transport can read in the same call
        self._prefetched: list[tuple[str, list[tuple[str, bytes]]]] = []
        self._entry_messages = 1.0  # messages per entry lately read (smoothed): sizes the next read
        self._commit_read = getattr(app.transport, "commit_read", None)
        self.lost = False
        self.leaving = False
        """Set to hand the partition over: stop at the next batch boundary as on a clean shutdown."""
        self.ready = False
        self.failure: Exception | None = None
        self.processed = 0
        self._batch_started = 0.0  # when the batch in hand was read (metrics)

    # -- set-up ---------------------------------------------------------------

    async def prepare(self) -> None:
        """Load committed positions and rebuild state (changelog restore or input replay)."""
        committed = await self.app.transport.positions(self.agent.name)
        for stream in self.streams:
            await self.app.transport.register_consumer(stream, self.agent.name)
            position = committed.get(stream)
            if position is not None:
                self._positions[stream] = position.last_id
        if self.agent.recover == "changelog":
            await self._restore_tables()
        else:
            self._replay_until = {s: id_key(p) for s, p in self._positions.items() if p != START}
            snapshots = self.app.snapshots
            start = None if snapshots is None else await snapshots.restore_state(self, dict(self._positions))
            # replay from the start, or from the positions a restored snapshot reflects
            self._positions = dict.fromkeys(self.streams, START) if start is None else start
            self._replay_until = {s: limit for s, limit in self._replay_until.items()
                                  if id_key(self._positions[s]) < limit}
            self.context.replaying = bool(self._replay_until)

    async def _restore_tables(self) -> None:
        """Rebuild the agent's table partitions, unless a co-owner running here already holds them."""
        locks = self._locks_needed()
        for lock in locks:
            await lock.acquire()
        try:
            holders = self.app.table_holders
            pending = [t for t in self.agent.tables if not holders.get((t.name, self.partition))]
            if pending and self.app.snapshots is not None:
                await self.app.snapshots.restore_tables(self, pending)  # newest snapshot + changelog tail
            else:
                for table in pending:
                    await table.restore(self.app.transport, self.partition)
            for table in self.agent.tables:
                holders.setdefault((table.name, self.partition), set()).add(self.agent.name)
        finally:
            for lock in reversed(locks):
                lock.release()

    def leave_tables(self, failed: bool) -> None:
        """Stop holding the table partitions; after a failure, make every co-owner rebuild too.

        Called before the tables' locks are released, so no co-owner can commit on top
        of this runner's uncommitted writes.
        """
        holders = self.app.table_holders
        for table in self.agent.tables:
            key = (table.name, self.partition)
            owners = holders.get(key, set())
            owners.discard(self.agent.name)
            if failed:
                for other in owners:
                    runner = self.app.runners.get((other, self.partition))
                    if runner is not None:
                        runner.lost = True
                owners.clear()
                table.drop(self.partition)

    @property
    def recovering(self) -> bool:
        """True while committed input is being replayed to rebuild the state."""
        return bool(self._replay_until) or self.context.replaying

    def read_positions(self) -> dict[str, str]:
        """The last entry read per input stream (at a batch boundary: the last one committed)."""
        return dict(self._positions)

    # -- what the agent stream calls -------------------------------------------

    def mark(self, done: int, span_end: int) -> None:
        """Items before `done` of the current unit are processed; the agent now handles up to `span_end`."""
        self._done = done
        self._span_end = span_end
        self._savepoint = self.context.savepoint()

    async def next_unit(self) -> list[Item] | None:
        """The next items to hand the agent, committing a finished batch first; None to stop."""
        if self.lost:
            raise self._infrastructure(FencedError(f"{self.agent.name}:{self.partition}: lease lost"))
        self.processed += len(self._unit)
        self._unit = []
        if not self._queue:
            try:
                await self._commit()
                self._release_locks()
                if not await self._fetch():
                    return None
            except Exception as exc:
                raise self._infrastructure(exc) from None
        if self._single:
            self._single -= 1
            self._unit = [self._queue.popleft()]
        else:
            self._unit = list(self._queue)
            self._queue.clear()
        self._done = self._span_end = 0
        self._savepoint = self.context.savepoint()
        return self._unit

    # -- reading ---------------------------------------------------------------

    async def _fetch(self) -> bool:
        """Read the next batch into the queue; False when the runner should stop."""
        app = self.app
        while not app.stopping and not self.lost and not self.leaving:
            if self._replay_until and self.agent.replay is not None:
                await self._catch_up()
            if app.snapshots is not None:  # a batch boundary: everything committed, nothing in hand
                await app.snapshots.at_boundary(self)
            reply, self._prefetched = self._prefetched, []
            if not reply:
                reply = await app.transport.read(self._positions, self._read_count(), app.block_ms)
            if reply:
                self._accept(reply)
                if self._queue:
                    self._batch_started = time.perf_counter()
                    for lock in self._locks_needed():
                        await lock.acquire()
                        self._locks.append(lock)
                    if self.lost:  # a co-owner failed while we waited: our tables are gone
                        raise FencedError(f"{self.agent.name}:{self.partition}: shared state lost")
                    return True
                await self._commit()  # only undecodable entries: move them aside now
        if (app.stopping or self.leaving) and not self.lost and app.snapshots is not None:
            await app.snapshots.at_stop(self)  # clean shutdown or hand-over: a last snapshot
        return False

    def _accept(self, reply: list[tuple[str, list[tuple[str, bytes]]]]) -> None:
        """Decode entries into the queue, up to about `batch_messages` messages; entries beyond that
        stay read but not taken (positions do not pass them) and start the next unit."""
        queue, consumed = self._queue, self._consumed
        budget, taken = self.app.batch_messages, 0
        leftover: list[tuple[str, list[tuple[str, bytes]]]] = []
        for stream, entries in reply:
            if taken >= budget:
                leftover.append((stream, entries))
                continue
            limit = self._replay_until.get(stream)
            if limit is not None:
                entries = [e for e in entries if id_key(e[0]) <= limit]
            if not entries:
                continue
            decoder = self._decoders[stream]
            messages = used = 0
            for entry_id, raw in entries:
                if taken + messages >= budget:
                    break
                used += 1
                try:
                    values = decoder.decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    values = None
                if values is not None:
                    queue.extend([(stream, entry_id, None, value) for value in values])
                    messages += len(values)
                    continue
                for part, value, error in decoder.decode_each(raw):  # isolate the bad messages
                    messages += 1
                    if value is None:
                        self._dead_letter(stream, entry_id, part, error)
                    else:
                        queue.append((stream, entry_id, part, value))
            if used < len(entries):
                leftover.append((stream, entries[used:]))
            taken += messages
            self._entry_messages = max(1.0, (self._entry_messages + messages / used) / 2)
            last_id = entries[used - 1][0]
            self._positions[stream] = last_id
            before = consumed.get(stream)
            consumed[stream] = (last_id, (before[1] if before else 0) + messages)
        self._prefetched = leftover
        self._check_replay_done()

    def _read_count(self) -> int:
        """Entries to read per stream: `batch_size` at most, fewer when entries carry many messages."""
        app = self.app
        return max(1, min(app.batch_size, int(app.batch_messages / self._entry_messages)))

    async def _catch_up(self) -> None:
        """Apply the committed input straight to the state (bulk reads, the agent's `replay`, no outputs)."""
        from pipeline.snapshots.catchup import catch_up

        replay = self.agent.replay
        assert replay is not None
        state = self.state
        (topic,) = self.agent.topics
        for stream, limit in list(self._replay_until.items()):
            done = await catch_up(self.app.transport, stream, self._positions[stream], limit, topic.value_type,
                                  lambda values: replay(state, values),
                                  interrupted=lambda: self.app.stopping or self.lost or self.leaving)
            if done.last_id is not None:
                self._positions[stream] = done.last_id
            self.processed += done.messages
            if done.undecodable:
                log.warning("%s:%d: %d undecodable messages skipped while catching up (dead-lettered when first"
                            " read)", self.agent.name, self.partition, done.undecodable)
            if done.interrupted:
                return  # still recovering: stopping, or the partition was lost
        self._replay_until = {}
        self.context.replaying = False

    def _check_replay_done(self) -> None:
        if self._replay_until and all(
            id_key(self._positions[s]) >= limit for s, limit in self._replay_until.items()
        ):
            self._replay_until = {}

    def _locks_needed(self) -> list[asyncio.Lock]:
        return [self.app.table_lock(table, self.partition) for table in self.agent.tables]

    def _release_locks(self) -> None:
        while self._locks:
            self._locks.pop().release()

    # -- committing ------------------------------------------------------------

    async def _commit(self) -> None:
        context = self.context
        if context.replaying:
            context.clear()
            self._consumed.clear()
            context.replaying = bool(self._replay_until)
            return
        if not self._consumed and not context.outputs and not context.writes:
            return
        outputs = context.outputs
        for table in self.agent.tables:
            outputs.extend(table.changelog_entries(context))
        lease = (self.agent.lease_key(self.partition), self.lease_value) if self.lease_value else None
        grouped = group(outputs)
        commit = Commit(
            self.agent.name, dict(self._consumed), [(stream, pack(parts)) for stream, parts in grouped.items()],
            lease, list(context.writes), messages={stream: len(parts) for stream, parts in grouped.items()},
        )
        if self._commit_read is not None and not self._replay_until:
            # commit and fetch what is already waiting in one round trip (read after the commit
            # applied, from the positions this batch reached)
            self._prefetched = await self._commit_read(commit, self._positions, self._read_count())
        else:
            await self.app.transport.commit(commit)
        started, self._batch_started = self._batch_started, 0.0
        self.app.metrics.record_commit(self.agent.name, sum(n for _, n in self._consumed.values()), len(outputs),
                                       time.perf_counter() - started if started else None)
        context.clear()
        self._consumed.clear()

    # -- failures ---------------------------------------------------------------

    def _dead_letter(self, stream: str, entry_id: str, raw: bytes, error: str) -> None:
        log.warning("%s: dead-lettering %s %s: %s", self.agent.name, stream, entry_id, error)
        self.app.metrics.record_dead_letter(self.agent.name)
        if self.context.replaying:
            return
        letter = DeadLetter(self.agent.name, stream, entry_id, error[:2000], raw, self.app.clock())
        self.context.outputs.append((DLQ_STREAM, DEAD_LETTER_CODEC.encode(letter)))

    def _infrastructure(self, exc: Exception) -> Exception:
        """Remember that `exc` came from the runtime (reading, committing), not from the agent's code."""
        self.failure = exc
        return exc

    def handle_error(self, exc: BaseException) -> None:
        """Roll back the failing span; dead-letter it if it is one event, else retry it event by event."""
        self.context.rollback(self._savepoint)
        span = self._unit[self._done : self._span_end]
        rest = self._unit[self._span_end :]
        self._unit = self._unit[: self._done]
        if len(span) == 1:
            stream, entry_id, raw, value = span[0]
            if raw is None:
                raw = self._codecs[stream].encode(value)
            self._dead_letter(stream, entry_id, raw, f"{type(exc).__name__}: {exc}")
            self._queue.extendleft(reversed(rest))
        else:
            self._queue.extendleft(reversed(span + rest))
            self._single = len(span)
        self._done = self._span_end = 0

    async def run(self) -> None:
        """Run the agent function until stopped, restarting it after each poison event."""
        set_context(self.context)
        failed = True
        try:
            while True:
                try:
                    await self.agent.fn(AgentStream(self))
                except Exception as exc:
                    if exc is self.failure:
                        raise  # reading or committing failed: the supervisor rebuilds this partition
                    # the agent's own bug or poison input
                    log.exception("%s:%d raised; the event goes to %s", self.agent.name, self.partition,
                                  DLQ_STREAM)
                    self.handle_error(exc)
                    continue
                if self.app.stopping or self.lost or self.leaving:
                    failed = self.lost
                    break
                log.warning("%s returned before shutdown; starting it again", self.agent.name)
        finally:
            self.leave_tables(failed)
            self._release_locks()
            set_context(None)
