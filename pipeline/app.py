"""The App: topics, tables, agents and timers wired together, started and stopped as one service.

    app = App("exchange", transport)
    orders = app.topic("orders.in", value_type=PlaceOrder, partitions=4)
    valid = app.topic("orders.valid", value_type=PlaceOrder, partitions=4)

    @app.agent(orders)
    async def validate(stream):
        async for order in stream:
            valid.emit(order, key=order.symbol)

    await app.start()   # or app.run() in the foreground, stopping on SIGINT/SIGTERM

Each (agent, partition) runs as one asyncio task that first takes the partition's
lease (a key in Redis with a fencing token: a stale owner's commit is refused),
rebuilds its state, then processes batches until the app stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.agent import Agent, AgentStream, PartitionRunner, Recovery
from pipeline.errors import FencedError
from pipeline.metrics import Metrics
from pipeline.tables.table import Table as TableType
from pipeline.topics import KeyToPartition, Topic, default_partitioner
from pipeline.transport.base import Commit, Transport

if TYPE_CHECKING:
    from pipeline.snapshots.manager import SnapshotManager

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[None]])


class App:
    """A stream-processing application over one transport."""

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        clock: Callable[[], int] = time.time_ns,
        batch_size: int = 500,
        batch_messages: int = 5_000,
        block_ms: int = 100,
        lease_ttl_ms: int = 10_000,
        owner: str | None = None,
    ) -> None:
        self.name = name
        self.transport = transport
        self.clock = clock
        self.batch_size = batch_size
        self.batch_messages = batch_messages
        """Messages an agent aims to take in one unit: entries are record batches, so the entries read
        at once shrink as entries grow (a backlog of big entries must not make a unit outlive its lease)."""
        self.block_ms = block_ms
        self.lease_ttl_ms = lease_ttl_ms
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.metrics = Metrics()
        self.topics: dict[str, Topic[Any]] = {}
        self.tables: dict[str, TableType[Any, Any]] = {}
        self.agents: dict[str, Agent[Any]] = {}
        self.timers: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self.runners: dict[tuple[str, int], PartitionRunner] = {}
        self.stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._table_locks: dict[tuple[str, int], asyncio.Lock] = {}
        # (table, partition) -> agents running here that hold it loaded
        self.table_holders: dict[tuple[str, int], set[str]] = {}
        self._stop_requested: asyncio.Event | None = None
        # lease key -> (value, agents here running under it): agents with one `lease_name` share a lease
        self._local_leases: dict[str, tuple[str, set[str]]] = {}
        self._lease_lock = asyncio.Lock()  # lease acquisitions here, one at a time (co-owners, max_leases)
        self.standby: set[tuple[str, int]] = set()
        """(agent, partition) started here whose lease another worker holds: retried until it is free."""
        self.max_leases: int | None = None
        """Claim at most this many leases while they are contested, so that several workers share the
        partitions; past it, only a lease nobody took for two lease lifetimes (a dead worker's)."""
        self.snapshots: SnapshotManager | None = None
        """Set (before `start`) to snapshot and restore agent state (see `pipeline.snapshots`)."""
        self.rebalance = False
        """Announce this worker (`workers_key`) and keep at most a fair share of the leases: claim up to
        `fair_share`, give leases above it to the other live workers (set before `start`)."""
        self.rebalance_hold_s: float | None = None
        """A lease is held at least this long before it is given away (default: two lease lifetimes)."""
        self.stop_timeout_s = 60.0
        """`stop` waits this long for every task to finish its batch; then it cancels the rest, naming each
        and where it waited (a shutdown never hangs: a cancelled partition's lease expires, and its
        uncommitted batch is redone by the next owner)."""
        self.live_workers = 1
        """Workers of this app running the same agents (by lease name) seen alive at the last heartbeat,
        this one included: only they can take this worker's leases, so only they share them."""
        self._lease_holders: dict[str, list[tuple[str, int]]] = {}  # lease key -> (agent, partition) started here
        self._acquired_at: dict[str, float] = {}  # lease key held here -> when it was acquired (monotonic)
        self._giving: set[str] = set()  # leases being handed over: finish the batch, then release
        self._seen_held: dict[str, float] = {}  # lease key -> when another worker was last seen holding it

    # -- declaring ---------------------------------------------------------------

    def topic(
        self,
        name: str,
        *,
        value_type: Any,
        partitions: int = 1,
        max_pending: int | None = None,
        key_to_partition: KeyToPartition = default_partitioner,
    ) -> Topic[Any]:
        """Declare (or get) a topic."""
        if name in self.topics:
            return self.topics[name]
        topic: Topic[Any] = Topic(
            self, name, value_type, partitions=partitions, max_pending=max_pending,
            key_to_partition=key_to_partition,
        )
        self.topics[name] = topic
        return topic

    def Table(self, name: str, *, key_type: Any, value_type: Any, partitions: int = 1) -> TableType[Any, Any]:
        """Declare a table (Faust spelling)."""
        if name in self.tables:
            raise ValueError(f"table {name} declared twice")
        table: TableType[Any, Any] = TableType(name, key_type, value_type, partitions=partitions)
        self.tables[name] = table
        return table

    def agent(
        self,
        topics: Topic[Any] | Sequence[Topic[Any]],
        *,
        name: str | None = None,
        tables: Sequence[TableType[Any, Any]] = (),
        recover: Recovery = "changelog",
        state: Callable[[int], Any] | None = None,
        replay: Callable[[Any, list[Any]], None] | None = None,
    ) -> Callable[[F], F]:
        """Declare an agent consuming `topics` (co-partitioned) and owning `tables`.

        `state`, if given, makes a fresh in-memory state object for each partition the
        agent takes (the agent reads it as `stream.state`); with ``recover="replay"`` that
        state is rebuilt by replaying the committed input through the agent, or, given
        `replay(state, values)` (the agent's effect on its state alone, no outputs), by
        reading the committed input in bulk and passing it to `replay` (much faster).
        """
        inputs = [topics] if isinstance(topics, Topic) else list(topics)

        def register(fn: F) -> F:
            agent_name = name or fn.__name__
            if agent_name in self.agents:
                raise ValueError(f"agent {agent_name} declared twice")
            self.agents[agent_name] = Agent(
                self, fn, inputs, name=agent_name, tables=tables, recover=recover, state=state, replay=replay
            )
            return fn

        return register

    def timer(self, seconds: float) -> Callable[[F], F]:
        """Declare a coroutine run every `seconds` while the app runs."""

        def register(fn: F) -> F:
            self.timers.append((seconds, fn))
            return fn

        return register

    def table_lock(self, table: TableType[Any, Any], partition: int) -> asyncio.Lock:
        """The lock that serialises batches of agents sharing a table partition."""
        key = (table.name, partition)
        lock = self._table_locks.get(key)
        if lock is None:
            lock = self._table_locks[key] = asyncio.Lock()
        return lock

    # -- running -------------------------------------------------------------------

    async def start(self, agents: Iterable[str] | None = None, *, with_timers: bool = True) -> None:
        """Start the named agents (default: all) on every partition, plus the timers."""
        self.stopping = False
        self._stop_requested = asyncio.Event()
        self._lease_lock = asyncio.Lock()
        selected = list(self.agents) if agents is None else list(agents)
        unknown = set(selected) - set(self.agents)
        if unknown:
            raise ValueError(f"unknown agents: {', '.join(sorted(unknown))}")
        self._lease_holders = {}
        for agent_name in selected:
            agent = self.agents[agent_name]
            for partition in range(agent.partitions):
                self._lease_holders.setdefault(agent.lease_key(partition), []).append((agent.name, partition))
        if self.rebalance:
            try:  # be counted before claiming, so a late worker claims only its share
                await self._heartbeat()
            except Exception:
                log.exception("announcing this worker failed; retrying")
            self._tasks.append(asyncio.create_task(self._balance_loop(), name="balance"))
        for agent_name in selected:
            agent = self.agents[agent_name]
            for partition in range(agent.partitions):
                self._tasks.append(asyncio.create_task(
                    self._supervise(agent, partition), name=f"agent:{agent.name}:{partition}"
                ))
        if with_timers:
            for seconds, fn in self.timers:
                self._tasks.append(asyncio.create_task(self._run_timer(seconds, fn), name=f"timer:{fn}"))

    async def wait_running(self, timeout: float = 30.0) -> None:
        """Wait until every started (agent, partition) has its lease and its state rebuilt."""
        expected = {
            name for task in self._tasks if (name := task.get_name()).startswith("agent:")
        }

        async def ready() -> bool:
            names = {f"agent:{a}:{p}" for (a, p), r in self.runners.items() if r.ready}
            return expected <= names

        await wait_for_condition(ready, timeout, "agents to start")

    async def wait_claimed(self, timeout: float = 30.0) -> None:
        """Wait until every started (agent, partition) runs here or is on standby (held by another worker)."""
        expected = {
            name for task in self._tasks if (name := task.get_name()).startswith("agent:")
        }

        async def claimed() -> bool:
            names = {f"agent:{a}:{p}" for (a, p), r in self.runners.items() if r.ready}
            names |= {f"agent:{a}:{p}" for a, p in self.standby}
            return expected <= names

        await wait_for_condition(claimed, timeout, "agents to start or stand by")

    async def stop(self) -> None:
        """Finish the batches in hand, commit them, release leases, and stop."""
        self.stopping = True
        if self._stop_requested is not None:
            self._stop_requested.set()
        tasks, self._tasks = self._tasks, []
        timers = [t for t in tasks if t.get_name().startswith("timer:")]
        for task in timers:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.stop_timeout_s)
            for task in pending:
                log.error("%s did not stop within %g s; cancelled while waiting in %s", task.get_name(),
                          self.stop_timeout_s, where_waiting(task))
                task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("%s ended with %r", task.get_name(), result)
        if self.rebalance:
            try:  # leases are released: stop counting in the other workers' fair share
                await self._heartbeat(leaving=True)
            except Exception:
                log.warning("could not withdraw this worker from %s; it expires by itself", self.workers_key)
        if self.snapshots is not None:
            await self.snapshots.close()

    async def _supervise(self, agent: Agent[Any], partition: int) -> None:
        """Own one partition: take its lease, rebuild state, run; rebuild after any infrastructure failure.

        Whatever failed (a lost lease, Redis restarting, a refused commit), the partition's
        in-memory state may include an uncommitted batch, so it is dropped and rebuilt from
        what was committed.
        """
        key = agent.lease_key(partition)
        value: str | None = None
        waiting_since: float | None = None
        while not self.stopping:
            if value is not None and key in self._giving:  # handed over (or failed while being handed over)
                await self._hand_over(agent, partition, key, value)
                value = None
                self.standby.add((agent.name, partition))
                waiting_since = time.monotonic()  # another worker claims it; past two lifetimes, we may again
                await self._pause(self.lease_ttl_ms / 4000)
                continue
            try:
                waited = 0.0 if waiting_since is None else time.monotonic() - waiting_since
                value = await self._take_lease(key, value, agent.name, waited)
            except Exception:
                log.exception("%s:%d cannot reach the stream store; retrying", agent.name, partition)
                value = None
                await self._pause(1.0)
                continue
            if value is None:
                self.standby.add((agent.name, partition))
                waiting_since = time.monotonic() if waiting_since is None else waiting_since
                await self._pause(self.lease_ttl_ms / 4000)
                continue
            self.standby.discard((agent.name, partition))
            waiting_since = None
            runner = PartitionRunner(self, agent, partition, value)
            self.runners[(agent.name, partition)] = runner
            renewal = asyncio.create_task(self._renew(runner, key, value))
            try:
                try:
                    await runner.prepare()
                except BaseException:
                    runner.leave_tables(failed=True)
                    raise
                runner.ready = True
                await runner.run()
            except FencedError as exc:
                log.warning("%s:%d lost its partition (%s); rebuilding", agent.name, partition, exc)
                self._leave_lease(key, value, agent.name)
                value = None
            except Exception:
                log.exception("%s:%d failed; rebuilding from the committed state", agent.name, partition)
                await self._pause(0.5)
            finally:
                renewal.cancel()
                runner.ready = False
        self.standby.discard((agent.name, partition))
        if value is not None and self._leave_lease(key, value, agent.name):
            try:
                await self.transport.release_lease(key, value)
            except Exception:
                log.warning("could not release %s; it expires by itself", key)

    async def _take_lease(self, key: str, held: str | None, holder: str = "", waited: float = 0.0) -> str | None:
        """Keep the lease we still hold (same fencing token), join a co-owner's here, or acquire it anew
        (unless `max_leases` are held here and this partition has waited less than two lease lifetimes,
        or, when rebalancing, this worker holds its fair share and the lease is not orphaned)."""
        if key in self._giving:
            return None  # being handed over: a co-owner here is still finishing its batch
        if held is not None and await self.transport.renew_lease(key, held, self.lease_ttl_ms):
            return held
        async with self._lease_lock:
            shared = self._local_leases.get(key)
            if shared is not None and await self.transport.renew_lease(key, shared[0], self.lease_ttl_ms):
                shared[1].add(holder)
                return shared[0]
            lifetimes = 2 * self.lease_ttl_ms / 1000
            held_here = len(self._local_leases)
            if self.max_leases is not None and held_here >= self.max_leases and waited < lifetimes:
                return None
            if (self.rebalance and held_here >= fair_share(len(self._lease_holders), self.live_workers)
                    and not await self._orphaned(key, waited)):
                return None
            value = await self.transport.acquire_lease(key, self.owner, self.lease_ttl_ms)
            if value is not None:
                self._local_leases[key] = (value, {holder})
                self._acquired_at[key] = time.monotonic()
            return value

    async def _orphaned(self, key: str, waited: float) -> bool:
        """True if the lease has been free for two lease lifetimes (nobody under its share took it):
        a worker at its share takes it anyway, but not one another worker just handed over."""
        now = time.monotonic()
        if await self.transport.get(key) is not None:
            self._seen_held[key] = now
            return False
        return min(waited, now - self._seen_held.get(key, -math.inf)) >= 2 * self.lease_ttl_ms / 1000

    def claim_limit(self) -> int | None:
        """How many leases this worker claims while they are contested: `max_leases` and, when
        rebalancing, its fair share of the leases among the live workers (None: no limit)."""
        limits = [] if self.max_leases is None else [self.max_leases]
        if self.rebalance:
            limits.append(fair_share(len(self._lease_holders), self.live_workers))
        return min(limits) if limits else None

    @property
    def workers_key(self) -> str:
        """The sorted set of live workers, in partition 0's slot: member ``<owner>|<lease names>`` (the
        agents it runs, by lease name: `agent_set`), score its expiry in ms."""
        return f"{{p0}}workers:{self.name}"

    @property
    def agent_set(self) -> str:
        """The lease names of the agents started here, sorted and joined with "+" (``accounts+match``):
        workers with the same set share their leases; a worker running other agents cannot take them."""
        return "+".join(sorted({self.agents[name].lease_name for holders in self._lease_holders.values()
                                for name, _ in holders}))

    async def _heartbeat(self, *, leaving: bool = False) -> None:
        """Announce this worker until one lease lifetime from now (or withdraw it), forget expired
        workers, and count the live ones running the same agents."""
        now = time.time_ns() // 1_000_000
        expiry = 0 if leaving else now + self.lease_ttl_ms
        key, agent_set = self.workers_key, self.agent_set
        await self.transport.commit(Commit("workers", writes=[
            ("ZREMRANGEBYSCORE", key, "-inf", str(now)), ("ZADD", key, str(expiry), f"{self.owner}|{agent_set}"),
        ]))
        if not leaving:
            live = 1
            for member, score in await self.transport.zrange(key):
                owner, _, their_set = member.decode().rpartition("|")
                live += score > now and owner != self.owner and their_set == agent_set
            self.live_workers = live

    async def _balance_loop(self) -> None:
        """Heartbeat every third of a lease lifetime; hand over leases held above the fair share."""
        while not self.stopping:
            await self._pause(self.lease_ttl_ms / 3000)
            if self.stopping:
                return
            try:
                await self._heartbeat()
            except Exception:
                log.exception("worker heartbeat failed; retrying")
                continue
            for key in self.leases_to_give():
                log.warning("handing %s over to another worker (%d live)", key, self.live_workers)
                self._giving.add(key)
                for name, partition in self._lease_holders[key]:
                    runner = self.runners.get((name, partition))
                    if runner is not None:
                        runner.leaving = True

    def leases_to_give(self) -> list[str]:
        """Leases held here above the fair share, most recently acquired first, each held at least
        `rebalance_hold_s` and fully running; none unless another worker is alive."""
        if self.live_workers < 2:
            return []
        held = [key for key in self._local_leases if key not in self._giving]
        extra = len(held) - fair_share(len(self._lease_holders), self.live_workers)
        if extra <= 0:
            return []
        now = time.monotonic()
        hold = 2 * self.lease_ttl_ms / 1000 if self.rebalance_hold_s is None else self.rebalance_hold_s
        movable = [
            key for key in held
            if now - self._acquired_at.get(key, now) >= hold and all(
                (runner := self.runners.get(holder)) is not None and runner.ready and not runner.recovering
                for holder in self._lease_holders.get(key, ()))
        ]
        movable.sort(key=lambda key: self._acquired_at.get(key, 0.0), reverse=True)
        return movable[:extra]

    async def _hand_over(self, agent: Agent[Any], partition: int, key: str, value: str) -> None:
        """The runner stopped at a batch boundary (committed, snapshot taken): forget its state and,
        once no co-owner here uses the lease, release it so a standby worker takes it at once."""
        holders = self.table_holders
        for table in agent.tables:
            if not holders.get((table.name, partition)):
                table.drop(partition)
        if self._leave_lease(key, value, agent.name):
            try:
                await self.transport.release_lease(key, value)
            except Exception:
                log.warning("could not release %s; it expires by itself", key)

    def _leave_lease(self, key: str, value: str | None, holder: str) -> bool:
        """`holder` stops using the lease; True if no other agent here still does (release it then)."""
        shared = self._local_leases.get(key)
        if shared is None or shared[0] != value:
            return True
        shared[1].discard(holder)
        if shared[1]:
            return False
        del self._local_leases[key]
        self._giving.discard(key)
        self._acquired_at.pop(key, None)
        return True

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the app is asked to stop."""
        if self._stop_requested is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), seconds)

    async def _renew(self, runner: PartitionRunner, key: str, value: str) -> None:
        interval = self.lease_ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                held = await self.transport.renew_lease(key, value, self.lease_ttl_ms)
            except Exception:
                log.exception("renewing %s failed", key)
                continue
            if not held:
                runner.lost = True
                return

    async def _run_timer(self, seconds: float, fn: Callable[[], Awaitable[None]]) -> None:
        while not self.stopping:
            await asyncio.sleep(seconds)
            try:
                await fn()
            except Exception:
                log.exception("timer %s failed", getattr(fn, "__name__", fn))

    async def lag(self) -> dict[tuple[str, str], int]:
        """Unprocessed entries per (agent, stream), from committed positions.

        Every position is read before the streams' counts. All zeros then prove the pipeline idle: each
        agent had committed, when its position was read, everything its inputs held even later, so it
        had nothing in hand and emitted nothing after. Counts read first could miss an output committed
        between the reads (validate's last batch, say) and show its consumer caught up too early."""
        result: dict[tuple[str, str], int] = {}
        positions_of = {agent.name: await self.transport.positions(agent.name) for agent in self.agents.values()}
        infos = {info.stream: info for info in await self.transport.streams()}
        for agent in self.agents.values():
            positions = positions_of[agent.name]
            for topic in agent.topics:
                for stream in topic.streams:
                    info = infos.get(stream)
                    added = info.added if info else 0
                    position = positions.get(stream)
                    result[(agent.name, stream)] = added - (position.consumed if position else 0)
        return result

    async def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Wait until every agent has committed everything added to its inputs."""

        async def caught_up() -> bool:
            return all(v == 0 for v in (await self.lag()).values())

        await wait_for_condition(caught_up, timeout, "agents to catch up")

    def run(self, agents: Iterable[str] | None = None, *, on_ready: Callable[[], None] | None = None) -> None:
        """Run in the foreground until SIGINT or SIGTERM, then shut down gracefully."""

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await self.start(agents)
            await self.wait_running()
            if on_ready is not None:
                on_ready()
            await stop.wait()
            await self.stop()
            await self.transport.close()

        asyncio.run(main())


def where_waiting(task: asyncio.Task[Any]) -> str:
    """Where a suspended task waits: its chain of awaits, outermost first, down to what it awaits (for logs)."""
    parts: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(parts) < 30:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            parts.append(type(awaited).__name__)  # a future, a lock's waiter...
            break
        parts.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " -> ".join(parts) or "(nothing)"


def fair_share(leases: int, workers: int) -> int:
    """The leases one of `workers` live workers keeps: ceil(leases / workers), at least one."""
    return max(1, -(-leases // max(1, workers)))


async def wait_for_condition(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.02
) -> None:
    """Poll `check` until it is true; raise TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


__all__ = ["Agent", "AgentStream", "App", "Topic", "fair_share", "wait_for_condition"]
