"""Re-deliver a range of a topic to a downstream consumer group (analytics backfills).

    target, entries, messages = await deliver_to_group(client, "orders.events:0", "backfill", start, end)
    target, entries, messages = await deliver_to_group(client, source, "backfill", start, end)  # a TopicSource

The range's messages are appended, in order and unchanged, to a stream of their own,
``replay.<group>.<stream>`` (e.g. ``replay.backfill.orders.events:0``), on which a Redis
consumer group named `group` is created (from its beginning) if it does not exist yet.
The group then reads exactly the range with ``XREADGROUP GROUP <group> <consumer> STREAMS
<target> >``, acknowledging as it goes; the live stream and its consumers are not touched.
Each appended entry has the runtime's layout (field ``d``: a msgpack array of messages,
see `pipeline.batching`) plus ``src``: the entry id it came from, so a consumer can tell
where each message was originally. Entries trimmed from Redis come from the archive.

A topic with several partitions (a bare name, `recovery.replay_topic`) is delivered as one
sequence merged by entry id into ``replay.<group>.<topic>``; each entry then also has ``p``,
the partition its ``src`` id belongs to.

On a Valkey Cluster (a `RedisCluster` client) the replay stream and its counters carry the
source partition's hash tag (``{p0}replay.backfill.orders.events:0``, ``{p0}meta:replay...``),
so each flush is still one MULTI/EXEC in one slot; the returned name is then that key.
"""

from __future__ import annotations

import re
from typing import Any, Final

from pipeline.batching import pack
from recovery.replay_source import MessageId, ReplayError, meta_key, stream_key
from recovery.replay_topic import MergedKey, TopicSource, resolve_topic

_GROUP_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_FLUSH_ENTRIES: Final = 500


def replay_stream(group: str, stream: str) -> str:
    """The stream a group's re-delivered range of `stream` is appended to."""
    return f"replay.{group}.{stream}"


async def deliver_to_group(client: Any, source: TopicSource | str, group: str, start: MergedKey | None,
                           end: MergedKey | None, database_url: str | None = None) -> tuple[str, int, int]:
    """Append the range of `source` (a `TopicSource` or a stream name) to the group's replay stream.

    Returns (the replay stream's key, entries, messages).
    """
    if not _GROUP_RE.match(group):
        raise ReplayError(f"group name {group!r}: use 1-64 letters, digits, '_', '-' or '.'")
    if isinstance(source, str):
        source = await resolve_topic(client, source, database_url)
    logical = replay_stream(group, source.name)
    target, counters = stream_key(client, logical), meta_key(client, logical)
    try:
        await client.xgroup_create(target, group, id="0", mkstream=True)
    except Exception as exc:  # BUSYGROUP: the group exists and keeps its position
        if "BUSYGROUP" not in str(exc):
            raise
    entries = messages = 0
    pending: list[tuple[MessageId, list[bytes]]] = []

    async def flush() -> None:
        nonlocal entries, messages
        if not pending:
            return
        async with client.pipeline(transaction=True) as pipe:
            for source_id, parts in pending:
                fields: dict[str, Any] = {"d": pack(parts), "src": source_id.entry_id}
                if source_id.partition is not None:
                    fields["p"] = source_id.partition
                pipe.xadd(target, fields)
            pipe.hincrby(counters, "added", sum(len(parts) for _, parts in pending))
            await pipe.execute()
        entries += len(pending)
        messages += sum(len(parts) for _, parts in pending)
        pending.clear()

    async for message_id, raw in source.read(client, start, end, database_url):
        if pending and (pending[-1][0].entry_id, pending[-1][0].partition) == (message_id.entry_id,
                                                                                message_id.partition):
            pending[-1][1].append(raw)
            continue
        if len(pending) >= _FLUSH_ENTRIES:
            await flush()
        pending.append((message_id, [raw]))
    await flush()
    return target, entries, messages
