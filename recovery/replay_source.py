"""Where replayed messages come from: a stream's range, read from the PostgreSQL archive and Redis.

A message is addressed by its stream entry id plus its index in the entry (an entry
carries a batch of messages): ``1764547200123-0#2``, as `exchange topics tail` shows it.

    start, end = parse_bound("1764547200123-0", "from"), parse_bound("2026-11-30T23:50Z", "to")
    async for message_id, raw in read_range(redis_client, "orders.in:0", start, end, database_url):
        ...   # raw: the message's msgpack bytes, in stream order

Entries still in Redis are read from Redis; older ones (trimmed from Redis once archived
and covered by a snapshot) from the persister's ``event_archive``. A range that needs
entries found in neither is refused with `ReplayError`, never silently shortened.

Streams are named by their logical names (``orders.in:0``) everywhere here; on a Valkey
Cluster (`open_client` of a ``redis+cluster://`` URL gives a `RedisCluster`) the Redis
commands go to the partition's tagged key (``{p0}orders.in:0``, `pipeline.transport.slots`),
and the archive keeps the logical names on both.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from pipeline.errors import ExchangeError
from pipeline.transport import slots
from pipeline.transport.cluster import CLUSTER_SCHEME, cluster_url
from recovery.rows import split_entry

MAX_SEQ: Final = (1 << 64) - 1
MessageKey = tuple[int, int, int]
"""(entry ms, entry seq, index in the entry): the order of messages in a stream."""

_ENTRY_RE: Final = re.compile(r"^(\d+)(?:-(\d+))?(?:#(\d+))?$")
_RELATIVE_RE: Final = re.compile(r"^(?:now)?-(\d+(?:\.\d+)?)(ms|s|m|h|d)$|^(\d+(?:\.\d+)?)(ms|s|m|h|d) ?ago$")
_UNITS_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_ENTRIES_PER_READ: Final = 1000
_ARCHIVE_ROWS_PER_READ: Final = 5000


class ReplayError(ExchangeError):
    """A replay that cannot be done as asked: unknown topic, malformed or unreadable range."""


def open_client(url: str) -> Any:
    """A plain client for `url`: `RedisCluster` for ``redis+cluster://``, else `redis.asyncio.Redis` (bytes)."""
    if url.startswith(CLUSTER_SCHEME):
        return RedisCluster.from_url(cluster_url(url), decode_responses=False)
    return aioredis.Redis.from_url(url, decode_responses=False)


def stream_key(client: Any, stream: str) -> str:
    """The Redis key of a logical stream name for `client` (its partition's tagged key on a cluster)."""
    return slots.physical(stream) if isinstance(client, RedisCluster) else stream


def meta_key(client: Any, stream: str) -> str:
    """The key of a stream's counters (``meta:<stream>``; in the stream's slot on a cluster)."""
    return f"{slots.tag(stream)}meta:{stream}" if isinstance(client, RedisCluster) else f"meta:{stream}"


async def stream_names(client: Any) -> list[str]:
    """The logical names of the partitioned streams (``topic:N``) in Redis, sorted."""
    if isinstance(client, RedisCluster):
        keys = {_text(k) async for k in client.scan_iter(match="*", count=1000, _type="stream")}
        names = {slots.logical(k) for k in keys}
        return sorted(n for n in names if ":" in n and slots.physical(n) in keys)
    return sorted({_text(k) async for k in client.scan_iter(match="*:*", _type="stream")})


@dataclass(frozen=True, slots=True)
class MessageId:
    """One message of a stream: its entry id and index inside the entry.

    `partition` is set for a message of a topic read with all its partitions merged
    (`recovery.replay_topic`): it is then printed ``MS-SEQ#INDEX@pN``, since each partition
    has its own entry ids.
    """

    entry_id: str
    index: int
    partition: int | None = None

    @property
    def key(self) -> MessageKey:
        ms, _, seq = self.entry_id.partition("-")
        return int(ms), int(seq or 0), self.index

    def __str__(self) -> str:
        return f"{self.entry_id}#{self.index}" + ("" if self.partition is None else f"@p{self.partition}")


def entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def parse_bound(text: str, side: str, now_ms: Callable[[], int] | None = None) -> MessageKey | None:
    """The first (``side="from"``) or last (``"to"``) message key a bound names; None for the stream's edge.

    Accepted: ``start`` / ``end`` (the edges); an offset ``MS-SEQ`` or ``MS-SEQ#INDEX``
    (a bare ``MS`` is an entry id without sequence, as Redis reads it); a time in ISO
    8601 (``2026-11-30T23:50:00Z``, ``2026-11-30 23:50``; no zone means UTC); a time
    relative to now (``now-90s``, ``now-5m``, ``now-2h``, ``now-1d``; also ``-5m``, ``5m ago``); ``now``.
    """
    if side not in ("from", "to"):
        raise ValueError(side)
    value = text.strip()
    low = value.lower()
    if low in ("start", "begin", "beginning", "0", "0-0", "-") and side == "from":
        return None
    if low in ("end", "$", "+") and side == "to":
        return None
    if low in ("start", "end", "$", "+", "-"):
        raise ReplayError(f"--{side} {value!r}: {low} is only meaningful as the other bound")
    match = _ENTRY_RE.match(value)
    if match:
        ms, seq, index = match.group(1), match.group(2), match.group(3)
        seq_value = int(seq) if seq is not None else (0 if side == "from" else MAX_SEQ)
        index_value = int(index) if index is not None else (0 if side == "from" else MAX_SEQ)
        return int(ms), seq_value, index_value
    clock = now_ms or (lambda: time.time_ns() // 1_000_000)
    if low == "now":
        at = clock()
    else:
        relative = _RELATIVE_RE.match(low)
        if relative:
            amount, unit = (relative.group(1), relative.group(2)) if relative.group(1) else (
                relative.group(3), relative.group(4))
            at = clock() - int(float(amount) * _UNITS_MS[unit])
        else:
            at = _iso_ms(value, side)
    return (at, 0, 0) if side == "from" else (at, MAX_SEQ, MAX_SEQ)


def _iso_ms(value: str, side: str) -> int:
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ReplayError(
            f"--{side} {value!r} is neither an offset (MS-SEQ or MS-SEQ#INDEX, as `exchange topics tail` shows),"
            " a time (ISO 8601 such as 2026-11-30T23:50:00Z, or relative: now-90s, now-5m, now-2h, now-1d),"
            " start/end nor now"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def just_before(key: MessageKey) -> MessageKey:
    """The greatest message key below `key` (an inclusive end for "everything before `key`")."""
    ms, seq, index = key
    if index > 0:
        return ms, seq, index - 1
    if seq > 0:
        return ms, seq - 1, MAX_SEQ
    return ms - 1, MAX_SEQ, MAX_SEQ


def format_key(key: MessageKey | None) -> str:
    """A bound as an operator reads it."""
    if key is None:
        return "the edge"
    ms, seq, index = key
    when = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if seq == MAX_SEQ:
        return f"{when} UTC"
    return f"{ms}-{seq}" + ("" if index in (0, MAX_SEQ) else f"#{index}") + f" ({when} UTC)"


@dataclass(frozen=True, slots=True)
class StreamExtent:
    """What Redis still holds of a stream."""

    first: tuple[int, int] | None
    last: tuple[int, int] | None
    removed: int
    """Entries appended but no longer in Redis (trimmed from the front once archived)."""


async def stream_extent(client: Any, stream: str) -> StreamExtent:
    """First and last entry ids in Redis and how many entries were trimmed (XINFO STREAM)."""
    key = stream_key(client, stream)
    if not await client.exists(key):
        return StreamExtent(None, None, 0)
    info = {_text(k): v for k, v in (await client.xinfo_stream(key)).items()}
    first, last = info.get("first-entry"), info.get("last-entry")
    added = int(info.get("entries-added") or 0)
    return StreamExtent(
        entry_key(_text(first[0])) if first else None,
        entry_key(_text(last[0])) if last else None,
        max(added - int(info.get("length") or 0), 0),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _in_range(key: MessageKey, start: MessageKey | None, end: MessageKey | None) -> bool:
    return (start is None or key >= start) and (end is None or key <= end)


async def _redis_messages(client: Any, stream: str, start: MessageKey | None, end: MessageKey | None,
                          ) -> AsyncIterator[tuple[MessageId, bytes]]:
    low = "-" if start is None else f"{start[0]}-{start[1]}"
    high = "+" if end is None else f"{end[0]}-{min(end[1], MAX_SEQ)}"
    key = stream_key(client, stream)
    while True:
        entries = await client.xrange(key, min=low, max=high, count=_ENTRIES_PER_READ)
        if not entries:
            return
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            data = fields.get(b"d") if b"d" in fields else fields.get("d")
            if data is None:
                continue
            for index, part in enumerate(split_entry(data)):
                message_id = MessageId(entry_id, index)
                if _in_range(message_id.key, start, end):
                    yield message_id, part
        last = _text(entries[-1][0])
        low = f"({last}"
        if len(entries) < _ENTRIES_PER_READ:
            return


_ENCODE: Final = msgspec.msgpack.Encoder().encode
_JSON: Final = msgspec.json.Decoder().decode


async def _archive_messages(database_url: str, stream: str, start: MessageKey | None, below: tuple[int, int],
                            end: MessageKey | None) -> AsyncIterator[tuple[MessageId, bytes]]:
    """Archived messages of `stream` from `start` to `end`, strictly below entry `below`."""
    import asyncpg

    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        order_key = "split_part(entry_id, '-', 1)::bigint, split_part(entry_id, '-', 2)::numeric, idx"
        after: MessageKey = (-1, 0, 0) if start is None else (start[0], start[1], start[2] - 1)
        while True:
            rows = await conn.fetch(
                f"SELECT entry_id, idx, payload::text AS payload FROM event_archive WHERE stream = $1"
                f" AND ({order_key}) > ($2::bigint, $3::numeric, $4::int) ORDER BY {order_key} LIMIT $5",
                stream, after[0], after[1], after[2], _ARCHIVE_ROWS_PER_READ)
            if not rows:
                return
            for row in rows:
                message_id = MessageId(row["entry_id"], row["idx"])
                key = message_id.key
                if key[:2] >= below or (end is not None and key > end):
                    return
                # the archive keeps each message as JSON of its msgpack map: back to msgpack bytes
                yield message_id, _ENCODE(_JSON(row["payload"]))
            after = MessageId(rows[-1]["entry_id"], rows[-1]["idx"]).key
    finally:
        await conn.close()


async def archive_reach(database_url: str, stream: str) -> tuple[tuple[int, int], int] | None:
    """(last entry id, entries) of `stream` in the archive, or None if nothing is archived."""
    import asyncpg

    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        row = await conn.fetchrow("SELECT last_id, entries FROM archive_positions WHERE stream = $1", stream)
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()
    return (entry_key(row["last_id"]), int(row["entries"])) if row else None


async def read_range(client: Any, stream: str, start: MessageKey | None, end: MessageKey | None,
                     database_url: str | None = None) -> AsyncIterator[tuple[MessageId, bytes]]:
    """Every message of `stream` from `start` to `end` (inclusive, None = the edge), in stream order.

    `stream` is a logical name; `client` a plain client or a `RedisCluster` (see `open_client`).

    Reads the archive for what Redis no longer holds; raises `ReplayError` if part of
    the range is in neither.
    """
    if start is not None and end is not None and start > end:
        raise ReplayError(f"the range is empty: --from {format_key(start)} is after --to {format_key(end)}")
    extent = await stream_extent(client, stream)
    first = extent.first
    # Trimming removes a prefix: whatever the range wants below Redis's first entry is in the archive.
    wants_older = extent.removed > 0 and (start is None or first is None or start[:2] < first)
    if wants_older or (first is None and database_url is not None):
        if database_url is None:
            now = "empty" if first is None else f"starting at {first[0]}-{first[1]}"
            raise ReplayError(
                f"{stream} was trimmed in Redis ({extent.removed} entries, now {now})"
                " and the range starts before that: the older part is only in the PostgreSQL archive"
                " (set DATABASE_URL or start the embedded PostgreSQL with `exchange services up`)")
        reach = await archive_reach(database_url, stream)
        if reach is None:
            if wants_older:
                raise ReplayError(f"{stream} was trimmed in Redis but the archive holds none of it")
            return
        # the persister archives in order from the start: it covers the trimmed prefix if it reached
        # Redis's first entry, or archived at least as many entries as were trimmed
        if wants_older and first is not None and reach[0] < first and reach[1] < extent.removed:
            raise ReplayError(
                f"{stream}: {extent.removed} entries were trimmed from Redis but the archive holds {reach[1]}"
                f" (up to {reach[0][0]}-{reach[0][1]}): part of the range is lost")
        async for item in _archive_messages(database_url, stream, start, first or (MAX_SEQ, 0), end):
            yield item
        if first is None:
            return
        start = (first[0], first[1], 0) if start is None or start[:2] < first else start
    async for item in _redis_messages(client, stream, start, end):
        yield item
