"""The API's Redis client on one server or on a Valkey/Redis Cluster: the few calls that differ.

On a cluster (`redis.asyncio.cluster.RedisCluster`, from a ``redis+cluster://`` URL):

- stream keys carry their partition's hash tag (`pipeline.transport.slots`): `stream_key`;
- a MULTI/EXEC may only touch keys of one slot; the API's multi-key writes span slots
  (``apikey:*`` and ``acct:*:keys``, two listen-key entries), so `multi` gives a plain,
  non-transactional pipeline there; each call site says why that is still correct;
- MGET may only touch one slot: `mget` splits it per slot (`mget_nonatomic`: the values
  are independent read-model entries, none needs to be read at the same instant as another).

A market's read-model keys carry its symbol as a hash tag, on one server too
(``depth:{BTCUSDT}:bids|asks|id``, ``bbo:{BTCUSDT}``, ``ticker:{BTCUSDT}``,
``candles:{BTCUSDT}:<interval>``; names from `pipeline.agents.publish.readmodel`): they
share one slot, so the depth read (`api.public.read_book`) is a real MULTI/EXEC on a
cluster as on one server. Other read-model keys (``order:*``, ``orders:open:*``,
``balances:*``, accounts, API keys) keep their names and live wherever the cluster hashes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster

from pipeline.transport import slots


def is_cluster(client: Any) -> bool:
    """Whether `client` talks to a cluster."""
    return isinstance(client, RedisCluster)


def stream_key(client: Any, stream: str) -> str:
    """The key of a logical stream name (``user.events:0``) for `client`."""
    return slots.physical(stream) if is_cluster(client) else stream


def multi(client: Any) -> Any:
    """A MULTI/EXEC pipeline on one server; on a cluster a plain pipeline (the keys span slots)."""
    return client.pipeline(transaction=not is_cluster(client))


async def mget(client: Any, keys: Sequence[str]) -> list[Any]:
    """MGET on one server; per slot on a cluster (independent values, not one snapshot)."""
    if not keys:
        return []
    if is_cluster(client):
        return list(await client.mget_nonatomic(list(keys)))
    return list(await client.mget(list(keys)))
