"""A small two-hop pipeline used by the runtime tests and the crash worker."""

from __future__ import annotations

import time

from pipeline.agent import AgentStream
from pipeline.app import App
from pipeline.messages import Message
from pipeline.topics import Topic
from pipeline.transport.base import Transport


class Number(Message, frozen=True):
    """A test input: a sequence number."""

    seq: int
    poison: bool = False


class Doubled(Message, frozen=True):
    """A test output."""

    seq: int
    value: int


def build_app(
    transport: Transport,
    *,
    partitions: int = 2,
    lease_ttl_ms: int = 10_000,
    batch_size: int = 500,
    batch_mode: bool = False,
    busy_us: int = 0,
) -> tuple[App, Topic[Number], Topic[Doubled]]:
    """numbers -> double (counts per residue in a table) -> doubled."""
    app = App("test", transport, lease_ttl_ms=lease_ttl_ms, batch_size=batch_size)
    numbers: Topic[Number] = app.topic("numbers", value_type=Number, partitions=partitions)
    doubled: Topic[Doubled] = app.topic("doubled", value_type=Doubled, partitions=partitions)
    counts = app.Table("counts", key_type=int, value_type=int, partitions=partitions)

    def handle(number: Number) -> None:
        if busy_us:  # widen the window in which a crash test can kill us mid-batch
            end = time.perf_counter_ns() + busy_us * 1000
            while time.perf_counter_ns() < end:
                pass
        counts[number.seq % 5] = counts.get(number.seq % 5, 0) + 1
        if number.poison:
            raise ValueError(f"poison {number.seq}")
        doubled.emit(Doubled(number.seq, number.seq * 2), key=number.seq)

    if batch_mode:
        @app.agent(numbers, name="double", tables=[counts])
        async def double_batches(stream: AgentStream[Number]) -> None:
            async for batch in stream.batches():
                for number in batch:
                    handle(number)
    else:
        @app.agent(numbers, name="double", tables=[counts])
        async def double(stream: AgentStream[Number]) -> None:
            async for number in stream:
                handle(number)

    return app, numbers, doubled
