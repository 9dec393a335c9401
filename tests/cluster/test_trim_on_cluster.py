"""The stream trimmer on a Valkey Cluster: planned by logical names, XTRIM on the tagged keys."""

from __future__ import annotations

from pipeline.snapshots.manager import TRIMMED_KEY
from pipeline.transport import slots
from pipeline.transport.base import Commit
from pipeline.transport.cluster import ClusterTransport
from recovery.trim import TrimRule, apply_trim, plan_trim


async def test_trimming_addresses_each_partitions_tagged_stream(cluster_transport: ClusterTransport) -> None:
    transport, client = cluster_transport, cluster_transport.client
    stream = "market.trades:2"
    ids = [(await transport.produce(stream, [f"t{i}".encode()]))[0] for i in range(10)]
    await transport.register_consumer(stream, "reader")
    await transport.commit(Commit("reader", offsets={stream: (ids[6], 7)}))
    await client.xgroup_create(slots.physical(stream), "analytics", id=ids[8])

    # archived up to entry 4, the consumer at 6, the group at 8: the bound is the archive's
    plan = await plan_trim(transport, {stream: ids[4]}, {}, TrimRule({}, {}), keep_seconds=0, client=client)
    assert plan == {stream: ids[4]}
    assert await apply_trim(client, plan) == {stream: 4}
    assert [entry_id for entry_id, _ in await transport.read_range(stream, "0-0", 100)] == ids[4:]
    assert await client.hget(TRIMMED_KEY, stream) == ids[4].encode()  # recovery looks it up by logical name

    # a group behind everything else holds the bound back
    await client.xgroup_setid(slots.physical(stream), "analytics", id=ids[3])
    plan = await plan_trim(transport, {stream: ids[9]}, {}, TrimRule({}, {}), keep_seconds=0, client=client)
    assert plan == {stream: ids[3]}
    assert await apply_trim(client, plan) == {}  # already trimmed past it: nothing removed
    assert await apply_trim(client, {stream: ids[5]}) == {stream: 1}
