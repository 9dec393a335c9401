"""What a replay reads: one partition's stream (``orders.in:2``), or every partition of a topic merged.

    source = await resolve_topic(client, "orders.accepted", database_url)   # all its partitions
    end = source.bound("1764547200123-0#2@p1", "to")
    async for message_id, raw in source.read(client, None, end, database_url):
        ...   # every partition's messages as one sequence, in entry-id order

A bare topic name means every partition of the topic: the streams ``TOPIC:0`` ..
``TOPIC:N-1`` found in Redis (on a cluster, the ``{pN}`` tagged keys, `pipeline.transport.slots`)
or in the PostgreSQL archive. They are read as one sequence **merged by entry id**. An entry
id is the server's clock in milliseconds plus a sequence number, so on one server this is the
order the entries were appended, except that entries of two partitions in the same
millisecond are ordered by partition number (the server keeps no order between streams
finer than that). On a Valkey Cluster each partition's ids come from the clock of the node
that holds it: the merge is by each node's entry time.

Positions in a merged sequence: a message is ``MS-SEQ#INDEX@pN`` (its partition, since every
partition has its own ids), ordered by (MS, SEQ, N, INDEX). As a bound, ``MS-SEQ#INDEX@pN`` is
that exact message; ``MS-SEQ`` without ``#INDEX`` means that entry id in every partition
(``--from``: from the first such entry, ``--to``: through the last); a time applies to every
partition. ``#INDEX`` without ``@pN`` is refused on a merged topic (it would be ambiguous).
With ``TOPIC:N`` (one partition), or a topic that has one partition, positions are printed
and read as before (``MS-SEQ#INDEX``).

What the merge means for a core: markets are independent, so merged ``orders.accepted`` (keyed
by market) gives every live book. ``orders.in`` keyed by account over several partitions is
merged in time order, which can differ from the order match received two accounts' commands
that arrived within milliseconds of each other (match's order is ``orders.accepted``'s).
"""

from __future__ import annotations

import heapq
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio.cluster import RedisCluster

from pipeline.transport import slots
from recovery.replay_source import (
    MAX_SEQ,
    MessageId,
    MessageKey,
    ReplayError,
    format_key,
    parse_bound,
    read_range,
    stream_key,
)

log = logging.getLogger(__name__)

MergedKey = tuple[int, int, int, int]
"""(entry ms, entry seq, partition, index in the entry): the order of a merged topic's messages."""

_AT_PARTITION: Final = re.compile(r"^(\d+(?:-\d+)?(?:#\d+)?)@p?(\d+)$")
_SCAN_COUNT: Final = 5000


def split_name(name: str) -> tuple[str, int | None]:
    """``orders.in`` -> (``orders.in``, None); ``orders.in:2`` -> (``orders.in``, 2)."""
    topic, sep, partition = name.partition(":")
    if sep and not partition.isdigit():
        raise ReplayError(f"{name!r}: a stream is TOPIC:PARTITION, e.g. orders.in:0")
    return topic, int(partition) if sep else None


def split_partition(text: str) -> tuple[str, int | None]:
    """An offset with its partition (``1764547200123-0#2@p1`` -> (``1764547200123-0#2``, 1)); others unchanged."""
    match = _AT_PARTITION.match(text.strip())
    return (match.group(1), int(match.group(2))) if match else (text, None)


def merged_before(key: MergedKey) -> MergedKey:
    """The greatest merged key below `key` (an inclusive end for "everything before `key`")."""
    ms, seq, partition, index = key
    if index > 0:
        return ms, seq, partition, index - 1
    if partition > 0:
        return ms, seq, partition - 1, MAX_SEQ
    if seq > 0:
        return ms, seq - 1, MAX_SEQ, MAX_SEQ
    return ms - 1, MAX_SEQ, MAX_SEQ, MAX_SEQ


def format_position(key: MergedKey | None, merged: bool = True) -> str:
    """A merged bound as an operator reads it."""
    if key is None:
        return "the edge"
    ms, seq, partition, index = key
    text = format_key((ms, seq, index))
    if merged and seq != MAX_SEQ and partition != MAX_SEQ:
        text = text.replace(" (", f"@p{partition} (", 1)
    return text


async def topic_partitions(client: Any, topic: str, database_url: str | None = None) -> list[int]:
    """The partitions of `topic` whose streams exist in Redis or in the archive, sorted."""
    pattern = re.compile(re.escape(topic) + r":(\d+)$")
    found: set[int] = set()
    glob = re.sub(r"([*?\[\]\\])", r"\\\1", topic) + ":*"
    if isinstance(client, RedisCluster):
        async for raw in client.scan_iter(match="{p*}" + glob, count=_SCAN_COUNT, _type="stream"):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            name = slots.logical(key)
            match = pattern.fullmatch(name)
            if match and slots.physical(name) == key:
                found.add(int(match.group(1)))
    else:
        async for raw in client.scan_iter(match=glob, count=_SCAN_COUNT, _type="stream"):
            match = pattern.fullmatch(raw.decode() if isinstance(raw, bytes) else str(raw))
            if match:
                found.add(int(match.group(1)))
    if database_url is not None:
        found |= await _archived_partitions(database_url, pattern)
    return sorted(found)


async def _archived_partitions(database_url: str, pattern: re.Pattern[str]) -> set[int]:
    """Partitions the persister archived (their Redis streams may be gone); none if it cannot be read."""
    import asyncpg

    try:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            rows = await conn.fetch("SELECT stream FROM archive_positions")
        finally:
            await conn.close()
    except asyncpg.UndefinedTableError:
        return set()
    except (OSError, asyncpg.PostgresError) as exc:  # TimeoutError is an OSError
        log.warning("partitions from Redis only: the archive could not be read (%s)", type(exc).__name__)
        return set()
    return {int(m.group(1)) for row in rows if (m := pattern.fullmatch(row["stream"]))}


@dataclass(frozen=True, slots=True)
class TopicSource:
    """The streams a replay reads: `partitions` of `topic`; `named` is the partition a ``TOPIC:N`` named."""

    topic: str
    partitions: tuple[int, ...]
    named: int | None = None

    @property
    def merged(self) -> bool:
        """Several partitions read as one sequence (positions then carry ``@pN``)."""
        return len(self.partitions) > 1

    @property
    def streams(self) -> list[str]:
        return [f"{self.topic}:{p}" for p in self.partitions]

    @property
    def name(self) -> str:
        """``orders.in:0`` for one stream; the topic's name when its partitions are merged."""
        return self.topic if self.merged else self.streams[0]

    def describe(self) -> str:
        """What is read, for the operator (``orders.accepted (partitions 0, 1, 2 merged by entry id)``)."""
        if not self.merged:
            return self.name
        return f"{self.topic} (partitions {', '.join(map(str, self.partitions))} merged by entry id)"

    def bound(self, text: str, side: str, now_ms: Callable[[], int] | None = None) -> MergedKey | None:
        """A ``--from`` / ``--to`` / ``--at`` bound (see the module docstring); None for the edge."""
        offset, partition = split_partition(text)
        return self.position(parse_bound(offset, side, now_ms), side, partition, text)

    def position(self, key: MessageKey | None, side: str, partition: int | None = None,
                 text: str | None = None) -> MergedKey | None:
        """A per-stream key (`parse_bound`'s) as a bound in this source's order."""
        if key is None:
            return None
        ms, seq, index = key
        shown = text or format_key(key)
        if partition is not None:
            if self.named is not None and partition != self.named:
                raise ReplayError(f"{shown!r} is in partition {partition}, not in {self.name}")
            return ms, seq, partition, index
        if not self.merged:
            return ms, seq, self.partitions[0], index
        if side == "from" and index == 0:
            return ms, seq, 0, 0
        if side == "to" and index == MAX_SEQ:
            return ms, seq, MAX_SEQ, MAX_SEQ
        raise ReplayError(f"{shown!r}: {self.topic} has {len(self.partitions)} partitions, each with its own"
                          f" entry ids: name the message's partition, e.g. {shown}@p{self.partitions[0]}"
                          " (as a merged replay prints it), or a stream TOPIC:N")

    async def exists(self, client: Any) -> bool:
        """Whether Redis holds at least one of the streams."""
        for stream in self.streams:
            if await client.exists(stream_key(client, stream)):
                return True
        return False

    async def read(self, client: Any, start: MergedKey | None, end: MergedKey | None,
                   database_url: str | None = None) -> AsyncIterator[tuple[MessageId, bytes]]:
        """Every message from `start` to `end` (inclusive; None = the edge) of every partition, merged.

        Reads the archive for what Redis no longer holds (`read_range`, per partition).
        """
        if start is not None and end is not None and start > end:
            raise ReplayError(f"the range is empty: --from {format_position(start, self.merged)} is after"
                              f" --to {format_position(end, self.merged)}")
        low = None if start is None else (start[0], start[1], 0)  # whole entries; exact below
        high = None if end is None else (end[0], end[1], MAX_SEQ)
        merged = self.merged
        iterators = [self._partition(client, p, low, high, database_url, merged) for p in self.partitions]
        try:
            if len(iterators) == 1:  # one stream: nothing to merge
                async for key, message_id, raw in iterators[0]:
                    if end is not None and key > end:
                        return
                    if start is None or key >= start:
                        yield message_id, raw
                return
            heap: list[tuple[MergedKey, int, MessageId, bytes]] = []
            for i, iterator in enumerate(iterators):
                first = await anext(iterator, None)
                if first is not None:
                    heap.append((first[0], i, first[1], first[2]))
            heapq.heapify(heap)
            while heap:
                key, i, message_id, raw = heap[0]
                if end is not None and key > end:
                    return  # every later message of every partition is past the end too
                if start is None or key >= start:
                    yield message_id, raw
                following = await anext(iterators[i], None)
                if following is None:
                    heapq.heappop(heap)
                else:
                    heapq.heapreplace(heap, (following[0], i, following[1], following[2]))
        finally:
            for iterator in iterators:
                await iterator.aclose()

    async def _partition(self, client: Any, partition: int, low: MessageKey | None, high: MessageKey | None,
                         database_url: str | None, merged: bool,
                         ) -> AsyncGenerator[tuple[MergedKey, MessageId, bytes], None]:
        async for message_id, raw in read_range(client, f"{self.topic}:{partition}", low, high, database_url):
            ms, seq, index = message_id.key
            if merged:
                message_id = MessageId(message_id.entry_id, index, partition)
            yield (ms, seq, partition, index), message_id, raw


async def resolve_topic(client: Any, name: str, database_url: str | None = None) -> TopicSource:
    """The source `name` names: ``TOPIC:N`` one stream; ``TOPIC`` every partition found (partition 0 if none)."""
    topic, named = split_name(name)
    if named is not None:
        return TopicSource(topic, (named,), named)
    return TopicSource(topic, tuple(await topic_partitions(client, topic, database_url) or [0]))
