"""An in-process transport with the same contract as Redis Streams, for unit tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.errors import BackpressureError, FencedError
from pipeline.transport.base import Commit, Entry, Position, StreamInfo, id_key


@dataclass(slots=True)
class _Stream:
    entries: list[Entry] = field(default_factory=list)
    keys: list[tuple[int, int]] = field(default_factory=list)
    added: int = 0
    last_ms: int = 0
    last_seq: int = 0


class MemoryTransport:
    """Streams, positions and leases held in dictionaries; one event loop only."""

    def __init__(self, clock_ms: Callable[[], int] | None = None) -> None:
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._streams: dict[str, _Stream] = {}
        self._positions: dict[str, dict[str, Position]] = {}
        self._consumers: dict[str, set[str]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._tokens = itertools.count(1)
        self._changed = asyncio.Condition()
        self._strings: dict[str, bytes] = {}
        self._hashes: dict[str, dict[bytes, bytes]] = {}
        self._zsets: dict[str, dict[bytes, float]] = {}

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream()
        return stream

    def _append(self, name: str, data: bytes, messages: int = 1) -> str:
        stream = self._stream(name)
        ms = max(self._clock_ms(), stream.last_ms)
        seq = stream.last_seq + 1 if ms == stream.last_ms else 0
        stream.last_ms, stream.last_seq = ms, seq
        entry_id = f"{ms}-{seq}"
        stream.entries.append((entry_id, data))
        stream.keys.append((ms, seq))
        stream.added += messages
        return entry_id

    def _after(self, name: str, after: str, count: int) -> list[Entry]:
        stream = self._streams.get(name)
        if stream is None:
            return []
        from bisect import bisect_right

        start = bisect_right(stream.keys, id_key(after))
        return stream.entries[start : start + count]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def read(self, positions: dict[str, str], count: int, block_ms: int) -> list[tuple[str, list[Entry]]]:
        deadline = time.monotonic() + block_ms / 1000
        while True:
            found = [(s, e) for s in positions if (e := self._after(s, positions[s], count))]
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    async def read_range(self, stream: str, after: str, count: int) -> list[Entry]:
        return self._after(stream, after, count)

    async def read_reverse(self, stream: str, count: int) -> list[Entry]:
        entries = self._streams[stream].entries if stream in self._streams else []
        return entries[::-1][:count]

    def _lease_value(self, key: str) -> str | None:
        held = self._leases.get(key)
        if held is None or held[1] <= time.monotonic():
            self._leases.pop(key, None)
            return None
        return held[0]

    async def commit(self, commit: Commit) -> None:
        if commit.lease is not None and self._lease_value(commit.lease[0]) != commit.lease[1]:
            raise FencedError(f"lease {commit.lease[0]} is not held by {commit.lease[1]}")
        counted: set[str] = set()
        for stream, data in commit.outputs:
            if stream in commit.messages:
                self._append(stream, data, 0 if stream in counted else commit.messages[stream])
                counted.add(stream)
            else:
                self._append(stream, data)
        for write in commit.writes:
            self._apply_write(write)
        positions = self._positions.setdefault(commit.consumer, {})
        for stream, (last_id, consumed) in commit.offsets.items():
            before = positions.get(stream, Position("0-0", 0))
            positions[stream] = Position(last_id, before.consumed + consumed)
        await self._notify()

    def _apply_write(self, write: tuple[str | bytes, ...]) -> None:
        command, key, *args = (_text(w) if i < 2 else _bytes(w) for i, w in enumerate(write))
        assert isinstance(command, str) and isinstance(key, str)
        if command == "HSET":
            fields = self._hashes.setdefault(key, {})
            for i in range(0, len(args), 2):
                fields[_bytes(args[i])] = _bytes(args[i + 1])
        elif command == "HDEL":
            fields = self._hashes.get(key, {})
            for name in args:
                fields.pop(_bytes(name), None)
            if not fields:
                self._hashes.pop(key, None)
        elif command == "SET":
            self._strings[key] = _bytes(args[0])
        elif command == "DEL":
            self._strings.pop(key, None)
            self._hashes.pop(key, None)
            self._zsets.pop(key, None)
        elif command == "ZADD":
            members = self._zsets.setdefault(key, {})
            for i in range(0, len(args), 2):
                members[_bytes(args[i + 1])] = float(_bytes(args[i]))
        elif command == "ZREMRANGEBYSCORE":
            members = self._zsets.get(key, {})
            low, high = _bound(args[0]), _bound(args[1])
            for member in [m for m, score in members.items() if _within(score, low, high)]:
                del members[member]
            if not members:
                self._zsets.pop(key, None)
        else:
            raise ValueError(f"unsupported write {command}")

    async def get(self, key: str) -> bytes | None:
        return self._strings.get(key)

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        return dict(self._hashes.get(key, {}))

    async def zrange(self, key: str) -> list[tuple[bytes, float]]:
        return sorted(self._zsets.get(key, {}).items(), key=lambda item: (item[1], item[0]))

    async def produce(
        self, stream: str, payloads: list[bytes], max_pending: int | None = None, messages: int | None = None
    ) -> list[str]:
        if max_pending is not None:
            pending = await self.pending(stream)
            if pending >= max_pending:
                raise BackpressureError(stream, pending, max_pending)
        ids = [self._append(stream, data, 1 if messages is None else 0) for data in payloads]
        if messages is not None:
            self._stream(stream).added += messages
        await self._notify()
        return ids

    async def positions(self, consumer: str) -> dict[str, Position]:
        return dict(self._positions.get(consumer, {}))

    async def register_consumer(self, stream: str, consumer: str) -> None:
        self._consumers.setdefault(stream, set()).add(consumer)

    async def consumers(self, stream: str) -> list[str]:
        return sorted(self._consumers.get(stream, ()))

    async def pending(self, stream: str) -> int:
        added = self._streams[stream].added if stream in self._streams else 0
        consumed = [
            self._positions.get(c, {}).get(stream, Position("0-0", 0)).consumed
            for c in self._consumers.get(stream, ())
        ]
        return added - min(consumed) if consumed else 0

    async def acquire_lease(self, key: str, owner: str, ttl_ms: int) -> str | None:
        if self._lease_value(key) is not None:
            return None
        value = f"{owner}#{next(self._tokens)}"
        self._leases[key] = (value, time.monotonic() + ttl_ms / 1000)
        return value

    async def renew_lease(self, key: str, value: str, ttl_ms: int) -> bool:
        if self._lease_value(key) != value:
            return False
        self._leases[key] = (value, time.monotonic() + ttl_ms / 1000)
        return True

    async def release_lease(self, key: str, value: str) -> None:
        if self._lease_value(key) == value:
            del self._leases[key]

    async def streams(self, prefix: str = "") -> list[StreamInfo]:
        return [
            StreamInfo(name, len(s.entries), s.added, s.entries[-1][0] if s.entries else None)
            for name, s in sorted(self._streams.items())
            if name.startswith(prefix)
        ]

    async def all_consumers(self) -> list[str]:
        return sorted(set().union(*self._consumers.values()))

    async def close(self) -> None:
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: str | bytes | int) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _bound(value: str | bytes) -> tuple[float, bool]:
    """A Redis score bound: (value, exclusive)."""
    text = _text(value)
    exclusive = text.startswith("(")
    return float(text[1:] if exclusive else text), exclusive


def _within(score: float, low: tuple[float, bool], high: tuple[float, bool]) -> bool:
    """Whether `score` lies between two Redis score bounds."""
    above = score > low[0] if low[1] else score >= low[0]
    below = score < high[0] if high[1] else score <= high[0]
    return above and below
