"""Tables: dict-like agent state, partitioned like the agent's input, with a changelog stream.

Writes happen only inside an agent batch. Each batch's final value of every key it
wrote goes to the table's changelog stream (``changelog.<table>:<partition>``) in the
same atomic commit as the agent's outputs and offsets, so after a crash the table
is rebuilt from its changelog to exactly the state of the last committed batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from pipeline.context import MISSING, BatchContext, _current, current_context

if TYPE_CHECKING:
    from pipeline.transport.base import Transport

K = TypeVar("K")
V = TypeVar("V")


class Change(msgspec.Struct, Generic[K, V], array_like=True, frozen=True):
    """One changelog entry: a key's new value, or its deletion."""

    key: K
    value: V | None = None
    deleted: bool = False


class Table(Generic[K, V]):
    """A typed, partitioned mapping owned by the agents that declare it."""

    def __init__(self, name: str, key_type: Any, value_type: Any, *, partitions: int = 1) -> None:
        self.name = name
        self.key_type = key_type
        self.value_type = value_type
        self.partitions = partitions
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[list[Change[K, V]]] = msgspec.msgpack.Decoder(
            list[Change[key_type, value_type]]
        )
        self._parts: dict[int, dict[K, V]] = {}

    def __repr__(self) -> str:
        return f"Table({self.name!r}, partitions={self.partitions})"

    def changelog_stream(self, partition: int) -> str:
        """The changelog stream key of one partition."""
        return f"changelog.{self.name}:{partition}"

    # -- partition management (runtime only) ---------------------------------

    async def restore(self, transport: Transport, partition: int, batch: int = 5000, *,
                      base: dict[K, V] | None = None, after: str = "0-0") -> int:
        """Rebuild one partition from its changelog; returns the number of entries applied.

        With `base` (a snapshot's contents) and `after` (the changelog entry it reflects),
        only the changelog's tail after that entry is applied on top of `base`.
        """
        data: dict[K, V] = {} if base is None else base
        stream, applied = self.changelog_stream(partition), 0
        while entries := await transport.read_range(stream, after, batch):
            for _, raw in entries:
                changes = self._decoder.decode(raw)
                for change in changes:
                    if change.deleted:
                        data.pop(change.key, None)
                    else:
                        data[change.key] = change.value  # type: ignore[assignment]
                applied += len(changes)
            after = entries[-1][0]
        self._parts[partition] = data
        return applied

    def encode_items(self, items: Iterable[tuple[K, V]]) -> bytes:
        """Keys and values as one msgpack array of changelog entries (for snapshots)."""
        return self._encoder.encode([Change(key, value) for key, value in items])

    def decode_items(self, raw: bytes) -> dict[K, V]:
        """The inverse of `encode_items`, typed by the table's key and value types."""
        return {c.key: c.value for c in self._decoder.decode(raw) if not c.deleted}  # type: ignore[misc]

    def drop(self, partition: int) -> None:
        """Forget a partition this worker no longer owns."""
        self._parts.pop(partition, None)

    def attach(self, partition: int) -> None:
        """Start an empty partition (no changelog to restore from)."""
        self._parts.setdefault(partition, {})

    def changelog_entries(self, context: BatchContext) -> list[tuple[str, bytes]]:
        """The changelog outputs for every key this table's partitions wrote in `context`."""
        out: list[tuple[str, bytes]] = []
        for (name, partition), keys in context.dirty.items():
            if name != self.name:
                continue
            data = self._parts[partition]
            stream = self.changelog_stream(partition)
            for key in keys:
                value = data.get(key, MISSING)
                change = Change(key, None, True) if value is MISSING else Change(key, value)
                out.append((stream, self._encoder.encode(change)))
        return out

    # -- the mapping ----------------------------------------------------------

    def _data(self) -> dict[K, V]:
        context = current_context()
        if context is not None:
            try:
                return self._parts[context.partition]
            except KeyError:
                raise RuntimeError(f"table {self.name} is not declared by this agent") from None
        if len(self._parts) == 1:
            return next(iter(self._parts.values()))
        raise RuntimeError(f"table {self.name}: outside an agent, use table.partition(p)")

    def partition(self, partition: int) -> dict[K, V]:
        """Read-only use: the data of one partition (do not write to it)."""
        return self._parts[partition]

    def __getitem__(self, key: K) -> V:
        return self._data()[key]

    def get(self, key: K, default: V | None = None) -> V | None:
        return self._data().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data()

    def __len__(self) -> int:
        return len(self._data())

    def __iter__(self) -> Iterator[K]:
        return iter(self._data())

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(self._data().items())

    def values(self) -> Iterator[V]:
        return iter(self._data().values())

    def _write(self, key: K, value: Any) -> None:
        self.write_many(((key, value),))

    def write_many(self, items: Iterable[tuple[K, Any]]) -> None:
        """Set (or, with value `MISSING`, delete) several keys: one context lookup for all."""
        context = _current.get()
        if context is None:
            raise RuntimeError(f"table {self.name}: writes are only allowed inside an agent")
        partition = context.partition
        data = self._parts[partition]
        dirty = context.dirty.get((self.name, partition))
        if dirty is None:
            dirty = context.dirty[(self.name, partition)] = {}
        undo = context.undo.append
        get = data.get
        for key, value in items:
            undo((data, key, get(key, MISSING), dirty, key in dirty))
            dirty[key] = None
            if value is MISSING:
                data.pop(key, None)
            else:
                data[key] = value

    def __setitem__(self, key: K, value: V) -> None:
        self._write(key, value)

    def __delitem__(self, key: K) -> None:
        if key not in self._data():
            raise KeyError(key)
        self._write(key, MISSING)

    def state_hash(self) -> str:
        """A stable hash of every loaded partition's contents."""
        digest = hashlib.blake2b(digest_size=16)
        for partition in sorted(self._parts):
            data = self._parts[partition]
            for key in sorted(data, key=repr):
                digest.update(self._encoder.encode(Change(key, data[key])))
        return digest.hexdigest()
