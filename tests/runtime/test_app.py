"""The App runtime on both transports: exactly-once hops, tables, poison input, restarts, fencing."""

from __future__ import annotations

import asyncio
from collections import Counter

import msgspec
import pytest

from pipeline.agent import AgentStream
from pipeline.app import App, wait_for_condition
from pipeline.batching import pack
from pipeline.deadletter import DEAD_LETTER_ENTRIES, DLQ_STREAM, DeadLetter
from pipeline.transport.base import START, Commit, Position, Transport
from pipeline.transport.memory import MemoryTransport
from tests.runtime.pipeline_fixture import Doubled, Number, build_app


async def read_all(transport: Transport, streams: list[str]) -> list[bytes]:
    out: list[bytes] = []
    for stream in streams:
        after = START
        while entries := await transport.read_range(stream, after, 1000):
            out.extend(d for _, d in entries)
            after = entries[-1][0]
    return out


async def outputs(transport: Transport, app: App) -> Counter[int]:
    decoder = app.topics["doubled"].batch_decoder
    entries = await read_all(transport, app.topics["doubled"].streams)
    return Counter(value.seq for entry in entries for value in decoder.decode(entry))


async def dead_letters(transport: Transport) -> list[DeadLetter]:
    return [letter for entry in await read_all(transport, [DLQ_STREAM]) for letter in DEAD_LETTER_ENTRIES.decode(entry)]


def table_counts(app: App) -> Counter[int]:
    total: Counter[int] = Counter()
    table = app.tables["counts"]
    for p in range(table.partitions):
        total.update(table.partition(p))
    return total


async def test_every_input_is_processed_exactly_once(transport: Transport) -> None:
    app, numbers, _ = build_app(transport)
    await app.start()
    await app.wait_running()
    await numbers.send_many((i, Number(i)) for i in range(1000))
    await app.wait_caught_up()
    await app.stop()
    assert await outputs(transport, app) == Counter(range(1000))
    assert table_counts(app) == Counter({r: 200 for r in range(5)})


@pytest.mark.parametrize("batch_mode", [False, True])
async def test_poison_event_goes_to_the_dead_letter_stream_and_its_effects_are_undone(
    transport: Transport, batch_mode: bool
) -> None:
    app, numbers, _ = build_app(transport, batch_mode=batch_mode)
    await app.start()
    await app.wait_running()
    await numbers.send_many((i, Number(i, poison=(i in (7, 300)))) for i in range(600))
    await app.wait_caught_up()
    await app.stop()
    assert await outputs(transport, app) == Counter(i for i in range(600) if i not in (7, 300))
    # the poison events' table writes were rolled back
    expected = Counter(i % 5 for i in range(600) if i not in (7, 300))
    assert table_counts(app) == expected
    letters = await dead_letters(transport)
    assert sorted(msgspec.msgpack.decode(letter.payload, type=Number).seq for letter in letters) == [7, 300]
    assert all("ValueError: poison" in letter.error and letter.agent == "double" for letter in letters)


async def test_undecodable_entry_is_dead_lettered_and_the_agent_goes_on(transport: Transport) -> None:
    app, numbers, _ = build_app(transport, partitions=1)
    await app.start()
    await app.wait_running()
    await numbers.send(Number(1))
    await transport.produce(numbers.stream(0), [b"\xc1 not msgpack"])
    # an entry whose second message is not a Number: only that message is dead-lettered
    await transport.produce(numbers.stream(0), [pack([numbers.codec.encode(Number(3)), b"\x81\xa1x\x01"])],
                            messages=2)
    await numbers.send(Number(2))
    await app.wait_caught_up()
    await app.stop()
    assert await outputs(transport, app) == Counter([1, 2, 3])
    letters = await dead_letters(transport)
    assert [letter.payload for letter in letters] == [b"\xc1 not msgpack", b"\x81\xa1x\x01"]
    assert all(letter.error.startswith("cannot decode") for letter in letters)
    assert (await transport.positions("double"))["numbers:0"].consumed == 5


async def test_restart_resumes_from_the_committed_offset_with_tables_restored(transport: Transport) -> None:
    app, numbers, _ = build_app(transport)
    await app.start()
    await app.wait_running()
    await numbers.send_many((i, Number(i)) for i in range(300))
    await app.wait_caught_up()
    await app.stop()
    before = app.tables["counts"].state_hash()

    again, numbers2, _ = build_app(transport)
    await again.start()
    await again.wait_running()
    assert again.tables["counts"].state_hash() == before
    await numbers2.send_many((i, Number(i)) for i in range(300, 500))
    await again.wait_caught_up()
    await again.stop()
    assert await outputs(transport, again) == Counter(range(500))
    assert table_counts(again) == Counter({r: 100 for r in range(5)})


async def test_replay_recovery_rebuilds_in_memory_state(transport: Transport) -> None:
    def build() -> tuple[App, dict[str, int]]:
        app = App("replay", transport)
        numbers = app.topic("numbers", value_type=Number)
        sums = app.topic("sums", value_type=Doubled)
        state = {"total": 0, "replayed": 0}

        @app.agent(numbers, recover="replay", state=lambda partition: state)
        async def running_sum(stream: AgentStream[Number]) -> None:
            assert stream.state is state
            async for number in stream:
                state["total"] += number.seq
                if stream.replaying:
                    state["replayed"] += 1
                sums.emit(Doubled(number.seq, state["total"]))

        return app, state

    app, state = build()
    await app.start()
    await app.wait_running()
    await app.topics["numbers"].send_many((None, Number(i)) for i in range(100))
    await app.wait_caught_up()
    await app.stop()
    assert state["total"] == sum(range(100))

    again, state2 = build()
    await again.start()
    await again.wait_running()
    await again.topics["numbers"].send(Number(100))
    await again.wait_caught_up()
    await again.stop()
    assert state2 == {"total": sum(range(101)), "replayed": 100}
    sums = [v for d in await read_all(transport, ["sums:0"]) for v in msgspec.msgpack.decode(d, type=list[Doubled])]
    assert len(sums) == 101  # nothing emitted twice by the replay
    assert sums[-1].value == sum(range(101))


async def test_a_stale_owner_cannot_commit_after_a_new_owner_took_over(transport: Transport) -> None:
    old, numbers, _ = build_app(transport, partitions=1, lease_ttl_ms=60_000)
    await old.start()
    await old.wait_running()
    await numbers.send_many((i, Number(i)) for i in range(10))
    await old.wait_caught_up()

    # The old owner pauses (we hold its batch before commit) while its lease is taken over.
    runner = old.runners[("double", 0)]
    gate, holding = asyncio.Event(), asyncio.Event()
    original_commit = runner._commit

    async def paused_commit() -> None:
        if runner._consumed:
            holding.set()
            await gate.wait()
        await original_commit()

    runner._commit = paused_commit  # type: ignore[method-assign]
    await numbers.send(Number(10))
    await asyncio.wait_for(holding.wait(), 5)
    await transport.release_lease("lease:double:0", runner.lease_value or "")  # the lease "expired"
    new, _, _ = build_app(transport, partitions=1, lease_ttl_ms=60_000)
    await new.start()
    await new.wait_running()
    await new.wait_caught_up()
    gate.set()  # the stale owner wakes up and tries to commit
    await wait_for_condition(lambda: _not_ready(old), 5, "the stale owner to be fenced off")
    await old.stop()
    await new.stop()
    assert await outputs(transport, new) == Counter(range(11))


async def _not_ready(app: App) -> bool:
    runner = app.runners.get(("double", 0))
    return runner is None or not runner.ready


async def test_graceful_stop_commits_the_batch_in_hand(transport: Transport) -> None:
    app, numbers, _ = build_app(transport, partitions=1, batch_size=50)
    await app.start()
    await app.wait_running()
    await numbers.send_many((i, Number(i)) for i in range(200))
    await wait_for_condition(lambda: _processed_some(app), 10, "some progress")
    await app.stop()
    done = await outputs(transport, app)
    position = (await transport.positions("double"))["numbers:0"]
    assert sum(done.values()) == position.consumed  # outputs exactly match what was committed
    assert set(done.values()) == {1}


async def _processed_some(app: App) -> bool:
    runner = app.runners.get(("double", 0))
    return runner is not None and runner.processed > 0


async def test_doubled_values_are_correct(transport: Transport) -> None:
    app, numbers, doubled = build_app(transport, partitions=1)
    await app.start()
    await app.wait_running()
    await numbers.send_many((i, Number(i)) for i in range(5))
    await app.wait_caught_up()
    await app.stop()
    values = [v for d in await read_all(transport, doubled.streams) for v in doubled.batch_decoder.decode(d)]
    assert values == [Doubled(i, 2 * i) for i in range(5)]


async def test_agent_read_model_writes_commit_with_the_batch_and_roll_back_with_a_poison_event(
    transport: Transport,
) -> None:
    app = App("writes", transport)
    numbers = app.topic("numbers", value_type=Number)

    @app.agent(numbers, name="writer")
    async def writer(stream: AgentStream[Number]) -> None:
        async for batch in stream.batches():
            for number in batch:
                stream.write(("HSET", "seen", str(number.seq), b"1"), ("SET", "last", str(number.seq)))
                if number.poison:
                    raise ValueError("poison")

    await app.start()
    await app.wait_running()
    await numbers.send_many((None, Number(i, poison=(i == 3))) for i in range(6))
    await app.wait_caught_up()
    await app.stop()
    assert await transport.hgetall("seen") == {str(i).encode(): b"1" for i in range(6) if i != 3}
    assert await transport.get("last") == b"5"
    assert [msgspec.msgpack.decode(letter.payload, type=Number).seq for letter in await dead_letters(transport)] == [3]


async def test_an_unsupported_read_model_write_is_refused(transport: Transport) -> None:
    app = App("writes", transport)
    numbers = app.topic("numbers", value_type=Number)

    @app.agent(numbers, name="writer")
    async def writer(stream: AgentStream[Number]) -> None:
        async for number in stream:
            stream.write(("FLUSHALL", "x"))
            stream.write(("SET", "ok", str(number.seq)))

    await app.start()
    await app.wait_running()
    await numbers.send(Number(1))
    await app.wait_caught_up()
    await app.stop()
    assert await transport.get("ok") is None
    assert len(await dead_letters(transport)) == 1


async def test_an_entry_holding_one_bare_message_is_read_as_a_batch_of_one(transport: Transport) -> None:
    app, numbers, _ = build_app(transport, partitions=1)
    await app.start()
    await app.wait_running()
    await transport.produce(numbers.stream(0), [numbers.codec.encode(Number(41))])  # not wrapped in an array
    await numbers.send(Number(42))
    await app.wait_caught_up()
    await app.stop()
    assert await outputs(transport, app) == Counter([41, 42])
    assert await dead_letters(transport) == []


async def test_timers_run_periodically_until_the_app_stops(transport: Transport) -> None:
    app = App("timers", transport)
    ticks: list[int] = []
    failures = 0

    @app.timer(0.01)
    async def tick() -> None:
        ticks.append(len(ticks))

    @app.timer(0.01)
    async def broken() -> None:
        nonlocal failures
        failures += 1
        raise RuntimeError("a failing timer is logged and runs again")

    await app.start()

    async def enough() -> bool:
        return len(ticks) >= 3 and failures >= 3

    await wait_for_condition(enough, 5, "three ticks of each timer")
    timer_tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("timer:")]
    assert len(timer_tasks) == 2
    await app.stop()
    assert all(task.done() for task in timer_tasks)  # no tick can come after stop


async def test_a_backlog_of_big_entries_is_taken_in_units_of_about_batch_messages(transport: Transport) -> None:
    """Entries are record batches: 500 entries of 1000 messages must not become one unit of 500k."""
    app, numbers, _ = build_app(transport, partitions=1)
    app.batch_messages = 2_500
    for start in range(0, 20_000, 1_000):  # 20 entries of 1000 messages, waiting before the agent starts
        await numbers.send_many((i, Number(i)) for i in range(start, start + 1_000))
    await app.start()
    await app.wait_running()
    await app.wait_caught_up()
    await app.stop()
    assert await outputs(transport, app) == Counter(range(20_000))
    counters = app.metrics.agent("double")
    assert counters.events_in == 20_000
    at_most = dict(counters.batch_sizes.cumulative())
    assert at_most[5000] == counters.batch_sizes.count >= 7, counters.batch_sizes  # no unit above 5000


async def test_lag_never_shows_caught_up_while_a_commit_is_still_travelling_down_the_pipeline() -> None:
    """`App.lag` (and so `wait_caught_up`) reads every position before the streams' counts: a commit
    landing between its reads (here: `first` taking its last input and emitting to `second`) shows
    as `second`'s lag. Read the other way round, both lags were zero while `second` had work."""

    class CommitDuringRead(MemoryTransport):
        pending: Commit | None = None

        async def positions(self, consumer: str) -> dict[str, Position]:
            if consumer == "first" and self.pending is not None:
                commit, self.pending = self.pending, None
                await self.commit(commit)  # lands just before first's position is read
            return await super().positions(consumer)

    transport = CommitDuringRead()
    app = App("test", transport)
    a, b = app.topic("a", value_type=Number), app.topic("b", value_type=Number)

    @app.agent(a, name="first")
    async def first(stream: AgentStream[Number]) -> None:
        async for _ in stream:
            pass

    @app.agent(b, name="second")
    async def second(stream: AgentStream[Number]) -> None:
        async for _ in stream:
            pass

    payload = msgspec.msgpack.encode(Number(1))
    [one] = await transport.produce("a:0", [payload])
    await transport.commit(Commit("first", offsets={"a:0": (one, 1)}, outputs=[("b:0", payload)]))
    [consumed] = [entry_id for entry_id, _ in await transport.read_range("b:0", START, 10)]
    await transport.commit(Commit("second", offsets={"b:0": (consumed, 1)}))
    assert set((await app.lag()).values()) == {0}

    [two] = await transport.produce("a:0", [payload])  # first takes it while lag() is reading
    transport.pending = Commit("first", offsets={"a:0": (two, 1)}, outputs=[("b:0", payload)])
    lag = await app.lag()
    assert transport.pending is None, "the commit was made during the read"
    assert lag == {("first", "a:0"): 0, ("second", "b:0"): 1}


async def test_stop_cancels_a_task_that_does_not_finish_and_says_where_it_waited(
        caplog: pytest.LogCaptureFixture) -> None:
    """A shutdown never hangs: past `stop_timeout_s` the tasks still running are cancelled, each named
    in the log with the chain of awaits it was stuck in."""
    transport = MemoryTransport()
    app = App("test", transport)
    numbers = app.topic("numbers", value_type=Number)
    inside, never = asyncio.Event(), asyncio.Event()

    @app.agent(numbers, name="stuck")
    async def stuck(stream: AgentStream[Number]) -> None:
        async for _ in stream:
            inside.set()
            await never.wait()  # a batch that never ends (a lost reply, a deadlock)

    await app.start()
    await app.wait_running()
    await numbers.send(Number(1))
    await asyncio.wait_for(inside.wait(), 10)  # the agent is inside its batch
    app.stop_timeout_s = 0.5
    await asyncio.wait_for(app.stop(), 10)
    [record] = [r for r in caplog.records if "did not stop within 0.5 s" in r.getMessage()]
    assert record.getMessage().startswith("agent:stuck:0 did not stop")
    assert "-> stuck (test_app.py:" in record.getMessage() and "-> wait (locks.py:" in record.getMessage(), \
        record.getMessage()  # the agent's own frame, and the Event it waits on
