"""The transport contract on a 3-master Valkey Cluster, plus what only a cluster has: the outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis

from infra.services.cluster import ValkeyCluster
from pipeline.app import wait_for_condition
from pipeline.errors import FencedError
from pipeline.transport import slots
from pipeline.transport.base import START, Commit, Position, Transport
from pipeline.transport.cluster import ClusterTransport, _Outbound
from pipeline.transport.redis import RedisTransport
from tests.cluster.conftest import SettledClusterTransport
from tests.runtime.test_transport_contract import *  # noqa: F403  (the same contract, on the cluster)


def test_partitions_spread_over_the_masters_and_keys_share_their_slot(cluster: ValkeyCluster) -> None:
    tags = {slots.tag_slot(f"{{p{p}}}") for p in range(12)}
    assert len(tags) == 12
    client = redis.Redis(port=cluster.ports[0], decode_responses=True)
    try:
        nodes = {client.execute_command("CLUSTER", "KEYSLOT", f"{{p{p}}}x") for p in range(12)}
    finally:
        client.close()
    assert {int(n) for n in nodes} == tags
    for p in (0, 7):
        keys = [slots.physical(f"orders.in:{p}"), slots.physical(f"changelog.balances:{p}"),
                slots.physical(f"lease:risk:{p}"), f"{slots.tag(f'orders.in:{p}')}pos:risk"]
        assert len({slots.slot(k) for k in keys}) == 1
    assert slots.logical(slots.physical("orders.in:3")) == "orders.in:3"
    assert slots.logical(slots.physical("dlq")) == "dlq"


async def test_other_partitions_outputs_arrive_through_the_outbox_once(cluster_transport: ClusterTransport) -> None:
    transport = cluster_transport
    (entry_id,) = await transport.produce("in:0", [b"x"])
    lease = await transport.acquire_lease("lease:a:0", "me", 10_000)
    assert lease is not None
    await transport.commit(Commit("a", {"in:0": (entry_id, 1)}, [("out:0", b"y"), ("out:1", b"z"), ("out:2", b"w")],
                                  ("lease:a:0", lease), writes=[("SET", "readmodel:x", "1")]))
    assert [d for _, d in await transport.read_range("out:0", START, 10)] == [b"y"]  # same slot: with the commit
    positions = await transport.positions("a")
    assert (positions["in:0"].last_id, positions["in:0"].consumed) == (entry_id, 1)

    async def delivered() -> bool:
        return (await transport.undelivered() == 0 and await transport.get("readmodel:x") == b"1"
                and len(await transport.read_range("out:2", START, 10)) == 1)

    await wait_for_condition(delivered, 10, "the outbox to be forwarded")
    assert [d for _, d in await transport.read_range("out:1", START, 10)] == [b"z"]
    infos = {i.stream: i for i in await transport.streams()}
    assert infos["out:1"].added == 1 and infos["out:2"].added == 1


async def test_forwarding_an_entry_again_applies_nothing(cluster_transport: ClusterTransport) -> None:
    """A forwarder that died after applying but before deleting: the next one skips what was applied."""
    transport = cluster_transport
    lease = await transport.acquire_lease("lease:a:0", "me", 10_000)
    assert lease is not None
    outbox = slots.physical("outbox:0")
    await transport.commit(Commit("a", {}, [("out:1", b"one")], ("lease:a:0", lease)))
    await wait_for_condition(lambda: _empty(transport), 10, "the outbox to be forwarded")
    destination = slots.tag("out:1") + "fwd"
    applied_id = (await transport.client.hget(destination, outbox)).decode()
    again = _Outbound()
    again.stream("out:1", [b"one"], 1)
    await transport.forward_entries(outbox, [(applied_id, again.encode(destination))])
    assert [d for _, d in await transport.read_range("out:1", START, 10)] == [b"one"]
    assert {i.stream: i.added for i in await transport.streams()}["out:1"] == 1


async def _empty(transport: ClusterTransport) -> bool:
    return await transport.undelivered() == 0


async def test_stale_owner_cannot_write_to_the_outbox(cluster_transport: ClusterTransport) -> None:
    mine = await cluster_transport.acquire_lease("lease:a:3", "me", 10_000)
    assert mine is not None
    with pytest.raises(FencedError):
        await cluster_transport.commit(Commit("a", {}, [("out:1", b"y")], ("lease:a:3", "stale#0")))
    assert await cluster_transport.undelivered() == 0


@pytest.fixture(params=["redis", "cluster"])
async def either(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    """A flushed `RedisTransport` on one Valkey, then a `ClusterTransport` on the flushed cluster."""
    if request.param == "redis":
        opened: Transport = RedisTransport(request.getfixturevalue("redis_flush"))
    else:
        opened = SettledClusterTransport(request.getfixturevalue("cluster_url"))
    yield opened
    await opened.close()


async def test_a_commit_applied_twice_changes_nothing_the_second_time(either: Transport) -> None:
    """redis-py re-sends a command whose reply was lost: the second copy of a commit is a no-op."""
    ids = await either.produce("in:0", [b"a", b"b"])
    first = Commit("a", {"in:0": (ids[0], 1)}, [("out:0", b"x"), ("out:1", b"y")], writes=[("SET", "k:1", "1")])
    await either.commit(first)
    await either.commit(first)
    assert [d for _, d in await either.read_range("out:0", START, 10)] == [b"x"]
    assert [d for _, d in await either.read_range("out:1", START, 10)] == [b"y"]
    assert (await either.positions("a"))["in:0"].consumed == 1
    await either.commit(Commit("a", {"in:0": (ids[1], 1)}, [("out:0", b"z")]))
    await either.commit(first)  # an old commit after a newer one: still nothing
    assert [d for _, d in await either.read_range("out:0", START, 10)] == [b"x", b"z"]
    assert (await either.positions("a"))["in:0"] == Position(ids[1], 2)
