"""The same-run reference: a plain redis-py hop (DESIGN's baseline) on the server under test.

XREAD 500 from a pre-filled stream, decode and re-encode each message, pipelined XADD to
a second stream plus an HSET of the offset: one round trip per batch, one message per
entry. Uses its own keys (``bench:baseline:*``, deleted afterwards), so it can run against
a live exchange; its events/s is the yardstick the run's figures are compared with.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from bench.runtime_hop import CODEC, prefill

SOURCE = "bench:baseline:a"
TARGET = "bench:baseline:b"
OFFSETS = "bench:baseline:offsets"


async def plain_hop_rate(url: str, events: int = 50_000) -> float:
    """Events/s of one plain redis-py hop over `events` messages."""
    client = aioredis.Redis.from_url(url)
    try:
        await client.delete(SOURCE, TARGET, OFFSETS, f"meta:{SOURCE}")
        await prefill(client, SOURCE, events)
        start, last, done = time.perf_counter(), "0-0", 0
        while done < events:
            reply: Any = await client.xread({SOURCE: last}, count=500, block=100)
            for _, entries in reply:
                async with client.pipeline(transaction=False) as pipe:
                    for _entry_id, fields in entries:
                        pipe.xadd(TARGET, {"d": CODEC.encode(CODEC.decode(fields[b"d"]))})
                    last = entries[-1][0].decode()
                    pipe.hset(OFFSETS, SOURCE, last)
                    await pipe.execute()
                done += len(entries)
        return events / (time.perf_counter() - start)
    finally:
        await client.delete(SOURCE, TARGET, OFFSETS, f"meta:{SOURCE}")
        await client.aclose()
