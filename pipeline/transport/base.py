"""The transport protocol: what the runtime needs from a stream store.

Two implementations share one contract test suite: `RedisTransport` (real
Valkey/Redis Streams) and `MemoryTransport` (in-process, for unit tests).

Vocabulary:
- a *stream* is one partition of a topic, e.g. ``orders.in:0``;
- an *entry* is ``(entry_id, data)``, ids ordered like Redis ids (``"ms-seq"``);
- a *consumer* is an agent name; its committed position per stream lives in the
  store next to its outputs, written by the same atomic commit;
- counters (`added`, `consumed`) count *messages*: the runtime packs several messages
  into one entry (see `pipeline.batching`), and says how many.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

Entry = tuple[str, bytes]
"""One stream entry: its id and its payload."""

START = "0-0"
"""The position before the first entry of any stream."""


@dataclass(slots=True)
class Commit:
    """Everything one agent batch writes, applied atomically or not at all.

    `offsets` maps input stream -> (last entry id consumed, number of entries consumed
    in this batch). `outputs` are (stream, payload) pairs appended in order.
    `lease` is (lease key, expected owner value): if the stored value differs the
    whole commit is refused with `FencedError`. `writes` are plain key/value updates
    of read models, applied in the same atomic step, in order: ``("HSET", key, field,
    value, ...)``, ``("HDEL", key, field, ...)``, ``("SET", key, value)``, ``("DEL", key)``,
    ``("ZADD", key, score, member, ...)`` or ``("ZREMRANGEBYSCORE", key, min, max)``
    (bounds as Redis takes them: numbers, ``-inf``/``+inf``, ``(`` for exclusive).
    """

    consumer: str
    offsets: dict[str, tuple[str, int]] = field(default_factory=dict)
    outputs: list[tuple[str, bytes]] = field(default_factory=list)
    lease: tuple[str, str] | None = None
    writes: list[tuple[str | bytes, ...]] = field(default_factory=list)
    messages: dict[str, int] = field(default_factory=dict)
    """Messages per output stream, where an entry carries several (default: one per entry)."""


WRITE_COMMANDS = frozenset({"HSET", "HDEL", "SET", "DEL", "ZADD", "ZREMRANGEBYSCORE"})
"""The read-model updates a commit may carry."""


@dataclass(frozen=True, slots=True)
class Position:
    """A consumer's committed position in one stream."""

    last_id: str
    consumed: int


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What an operator wants to know about one stream."""

    stream: str
    length: int
    added: int
    last_id: str | None


class Transport(Protocol):
    """A stream store with atomic batch commits, leases and backpressure."""

    async def read(self, positions: dict[str, str], count: int, block_ms: int) -> list[tuple[str, list[Entry]]]:
        """Entries after each position, up to `count` per stream, waiting up to `block_ms` for the first."""
        ...

    async def read_range(self, stream: str, after: str, count: int) -> list[Entry]:
        """Up to `count` entries after `after`, without waiting."""
        ...

    async def read_reverse(self, stream: str, count: int) -> list[Entry]:
        """The last `count` entries, newest first."""
        ...

    async def commit(self, commit: Commit) -> None:
        """Apply a batch atomically; raise `FencedError` if the lease check fails."""
        ...

    async def get(self, key: str) -> bytes | None:
        """A read-model string value."""
        ...

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        """A read-model hash."""
        ...

    async def zrange(self, key: str) -> list[tuple[bytes, float]]:
        """A read-model sorted set: every (member, score), lowest score first."""
        ...

    async def produce(
        self, stream: str, payloads: list[bytes], max_pending: int | None = None, messages: int | None = None
    ) -> list[str]:
        """Append entries; raise `BackpressureError` if the stream's slowest consumer lags over `max_pending`.

        `messages` is how many messages the entries carry (default: one each); lag and
        backpressure count messages.
        """
        ...

    async def positions(self, consumer: str) -> dict[str, Position]:
        """The committed position of `consumer` in every stream it has consumed."""
        ...

    async def register_consumer(self, stream: str, consumer: str) -> None:
        """Declare that `consumer` reads `stream` (counts for lag and backpressure)."""
        ...

    async def consumers(self, stream: str) -> list[str]:
        """Consumers registered on `stream`."""
        ...

    async def pending(self, stream: str) -> int:
        """Entries added to `stream` that its slowest registered consumer has not committed."""
        ...

    async def acquire_lease(self, key: str, owner: str, ttl_ms: int) -> str | None:
        """Take the lease if free; return the fenced owner value (owner + token) or None."""
        ...

    async def renew_lease(self, key: str, value: str, ttl_ms: int) -> bool:
        """Extend the lease if still held with `value`; False if it was lost."""
        ...

    async def release_lease(self, key: str, value: str) -> None:
        """Give the lease up if still held with `value`."""
        ...

    async def streams(self, prefix: str = "") -> list[StreamInfo]:
        """Every stream whose name starts with `prefix`, with its length and counters."""
        ...

    async def all_consumers(self) -> list[str]:
        """Every consumer that has committed positions."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def id_key(entry_id: str) -> tuple[int, int]:
    """Sortable form of a stream entry id."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
