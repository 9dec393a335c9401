"""The transport contract: every transport behaves like Redis Streams with atomic commits."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.errors import BackpressureError, FencedError
from pipeline.transport.base import START, Commit, Transport, id_key


async def test_produced_entries_are_read_back_in_order(transport: Transport) -> None:
    ids = await transport.produce("s:0", [b"a", b"b", b"c"])
    assert [id_key(i) for i in ids] == sorted(id_key(i) for i in ids)
    reply = await transport.read({"s:0": START}, count=10, block_ms=0)
    assert reply == [("s:0", list(zip(ids, [b"a", b"b", b"c"], strict=True)))]
    assert await transport.read_range("s:0", ids[0], 10) == [(ids[1], b"b"), (ids[2], b"c")]
    assert await transport.read_range("s:0", ids[0], 1) == [(ids[1], b"b")]
    assert await transport.read_reverse("s:0", 2) == [(ids[2], b"c"), (ids[1], b"b")]


async def test_read_returns_at_most_count_and_nothing_past_the_end(transport: Transport) -> None:
    ids = await transport.produce("s:0", [bytes([i]) for i in range(7)])
    first = await transport.read({"s:0": START}, count=5, block_ms=0)
    assert [e[0] for e in first[0][1]] == ids[:5]
    assert await transport.read({"s:0": ids[-1]}, count=5, block_ms=10) == []


async def test_blocked_read_wakes_when_an_entry_arrives(transport: Transport) -> None:
    reader = asyncio.create_task(transport.read({"s:0": START}, count=10, block_ms=5000))
    await asyncio.sleep(0)
    await transport.produce("s:0", [b"x"])
    reply = await asyncio.wait_for(reader, 5)
    assert reply[0][1][0][1] == b"x"


async def test_commit_applies_outputs_and_positions_together(transport: Transport) -> None:
    (entry_id,) = await transport.produce("in:0", [b"x"])
    await transport.commit(Commit("agent", {"in:0": (entry_id, 1)}, [("out:0", b"y"), ("out:1", b"z")]))
    positions = await transport.positions("agent")
    assert positions["in:0"].last_id == entry_id
    assert positions["in:0"].consumed == 1
    assert [d for _, d in await transport.read_range("out:0", START, 10)] == [b"y"]
    assert [d for _, d in await transport.read_range("out:1", START, 10)] == [b"z"]


async def test_registered_consumers_are_listed(transport: Transport) -> None:
    assert await transport.all_consumers() == []
    await transport.register_consumer("in:0", "agent")
    await transport.register_consumer("in:1", "other")
    assert await transport.all_consumers() == ["agent", "other"]


async def test_fenced_commit_changes_nothing(transport: Transport) -> None:
    (entry_id,) = await transport.produce("in:0", [b"x"])
    mine = await transport.acquire_lease("lease:a:0", "me", 10_000)
    assert mine is not None
    with pytest.raises(FencedError):
        await transport.commit(Commit("a", {"in:0": (entry_id, 1)}, [("out:0", b"y")], ("lease:a:0", "stale#0")))
    assert await transport.positions("a") == {}
    assert await transport.read_range("out:0", START, 10) == []
    await transport.commit(Commit("a", {"in:0": (entry_id, 1)}, [("out:0", b"y")], ("lease:a:0", mine)))
    assert len(await transport.read_range("out:0", START, 10)) == 1


async def test_lease_is_exclusive_and_fenced_by_token(transport: Transport) -> None:
    first = await transport.acquire_lease("lease:x", "w1", 10_000)
    assert first is not None
    assert await transport.acquire_lease("lease:x", "w2", 10_000) is None
    assert await transport.renew_lease("lease:x", first, 10_000)
    await transport.release_lease("lease:x", "someone-else#9")
    assert await transport.acquire_lease("lease:x", "w2", 10_000) is None
    await transport.release_lease("lease:x", first)
    second = await transport.acquire_lease("lease:x", "w1", 10_000)
    assert second is not None and second != first  # same owner name, new token
    assert not await transport.renew_lease("lease:x", first, 10_000)


async def test_lease_expires(transport: Transport) -> None:
    first = await transport.acquire_lease("lease:y", "w1", 50)
    assert first is not None
    deadline = asyncio.get_running_loop().time() + 5
    second = None
    while second is None and asyncio.get_running_loop().time() < deadline:
        second = await transport.acquire_lease("lease:y", "w2", 10_000)
        await asyncio.sleep(0.01)
    assert second is not None
    assert not await transport.renew_lease("lease:y", first, 10_000)


async def test_backpressure_counts_what_the_slowest_consumer_has_not_committed(transport: Transport) -> None:
    await transport.register_consumer("q:0", "slow")
    await transport.register_consumer("q:0", "fast")
    ids = await transport.produce("q:0", [b"1", b"2", b"3"], max_pending=3)
    assert await transport.pending("q:0") == 3
    with pytest.raises(BackpressureError) as raised:
        await transport.produce("q:0", [b"4"], max_pending=3)
    assert raised.value.pending == 3
    await transport.commit(Commit("fast", {"q:0": (ids[2], 3)}))
    assert await transport.pending("q:0") == 3  # "slow" still has all three
    await transport.commit(Commit("slow", {"q:0": (ids[0], 1)}))
    assert await transport.pending("q:0") == 2
    await transport.produce("q:0", [b"4"], max_pending=3)
    assert await transport.pending("q:0") == 3
    assert sorted(await transport.consumers("q:0")) == ["fast", "slow"]


async def test_streams_lists_length_and_added(transport: Transport) -> None:
    await transport.produce("a:0", [b"1", b"2"])
    await transport.produce("b:0", [b"1"])
    infos = {i.stream: i for i in await transport.streams()}
    assert infos["a:0"].length == 2 and infos["a:0"].added == 2
    assert infos["b:0"].length == 1 and infos["b:0"].last_id is not None
    assert [i.stream for i in await transport.streams("a")] == ["a:0"]


async def test_commit_applies_read_model_writes_atomically(transport: Transport) -> None:
    (entry_id,) = await transport.produce("in:0", [b"x"])
    await transport.commit(Commit("a", {"in:0": (entry_id, 1)}, [], None, [
        ("HSET", "depth:X", "100", "5", "101", "7"), ("SET", "last:X", b"42"), ("HDEL", "depth:X", "101"),
    ]))
    assert await transport.hgetall("depth:X") == {b"100": b"5"}
    assert await transport.get("last:X") == b"42"
    lease = await transport.acquire_lease("lease:a:0", "me", 10_000)
    assert lease is not None
    with pytest.raises(FencedError):
        await transport.commit(Commit("a", {}, [], ("lease:a:0", "old#1"), [("SET", "last:X", b"43")]))
    assert await transport.get("last:X") == b"42"
    await transport.commit(Commit("a", {}, [], None, [("DEL", "depth:X")]))
    assert await transport.hgetall("depth:X") == {}


async def test_counters_count_messages_when_entries_carry_several(transport: Transport) -> None:
    await transport.register_consumer("m:0", "agent")
    ids = await transport.produce("m:0", [b"three", b"two"], messages=5)
    assert await transport.pending("m:0") == 5
    await transport.commit(Commit("agent", {"m:0": (ids[0], 3)}, [("out:0", b"a"), ("out:0", b"b")],
                                  messages={"out:0": 7}))
    assert await transport.pending("m:0") == 2
    infos = {i.stream: i for i in await transport.streams()}
    assert infos["out:0"].length == 2 and infos["out:0"].added == 7
    assert infos["m:0"].added == 5


async def test_commit_applies_sorted_set_writes(transport: Transport) -> None:
    await transport.commit(Commit("a", {}, [], None, [
        ("ZADD", "candles:X", 1000, b"a", 2000, b"b", 3000, b"c"),
        ("ZREMRANGEBYSCORE", "candles:X", 2000, 2000), ("ZADD", "candles:X", 2000, b"b2"),
        ("ZREMRANGEBYSCORE", "candles:X", "-inf", "(2000"),
    ]))
    assert await transport.zrange("candles:X") == [(b"b2", 2000.0), (b"c", 3000.0)]
    await transport.commit(Commit("a", {}, [], None, [("ZREMRANGEBYSCORE", "candles:X", "(2000", "+inf")]))
    assert await transport.zrange("candles:X") == [(b"b2", 2000.0)]
    await transport.commit(Commit("a", {}, [], None, [("DEL", "candles:X")]))
    assert await transport.zrange("candles:X") == []
