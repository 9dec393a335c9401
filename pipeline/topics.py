"""Topics: named, typed, partitioned streams."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pipeline.batching import BatchDecoder, pack
from pipeline.context import _current, current_context
from pipeline.messages import Codec

if TYPE_CHECKING:
    from pipeline.app import App

V = TypeVar("V")

KeyToPartition = Callable[[Any, int], int]


def default_partitioner(key: Any, partitions: int) -> int:
    """Stable key -> partition rule: ints modulo the count, strings and bytes by CRC-32."""
    if partitions == 1 or key is None:
        return 0
    if isinstance(key, int):
        return key % partitions
    data = key.encode() if isinstance(key, str) else bytes(key)
    return zlib.crc32(data) % partitions


class Topic(Generic[V]):
    """A stream of typed values split into partitions (one Redis stream per partition).

    Inside an agent, `emit` buffers a value into the batch being processed, so it is
    committed atomically with the agent's input offsets. Elsewhere, `send` appends
    it at once (one round trip), subject to the topic's backpressure limit.
    """

    def __init__(
        self,
        app: App,
        name: str,
        value_type: Any,
        *,
        partitions: int = 1,
        max_pending: int | None = None,
        key_to_partition: KeyToPartition = default_partitioner,
    ) -> None:
        if partitions < 1:
            raise ValueError("a topic needs at least one partition")
        self.app = app
        self.name = name
        self.value_type = value_type
        self.partitions = partitions
        self.max_pending = max_pending
        self.key_to_partition = key_to_partition
        self.codec: Codec[V] = Codec(value_type)
        self.batch_decoder: BatchDecoder[V] = BatchDecoder(value_type)
        self._encode = self.codec.encode
        self._streams = [f"{name}:{p}" for p in range(partitions)]

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, partitions={self.partitions})"

    def stream(self, partition: int) -> str:
        """The stream key of one partition."""
        return self._streams[partition]

    @property
    def streams(self) -> list[str]:
        """Every partition's stream key."""
        return list(self._streams)

    def partition_for(self, key: Any) -> int:
        """The partition a key belongs to."""
        return self.key_to_partition(key, self.partitions)

    def emit(self, value: V, *, key: Any = None, partition: int | None = None) -> None:
        """Add `value` to the current agent batch's outputs (committed with its offsets)."""
        context = _current.get()
        if context is None:
            raise RuntimeError(f"{self.name}: emit() is only valid inside an agent; use send()")
        if partition is None:
            partition = 0 if self.partitions == 1 else self.key_to_partition(key, self.partitions)
        context.outputs.append((self._streams[partition], self._encode(value)))

    def emitter(self) -> Callable[[V, Any], None]:
        """`emit(value, key)` bound to the current batch, its lookups done once: for agents that emit
        many messages per batch. Only valid while that batch is being processed."""
        context = _current.get()
        if context is None:
            raise RuntimeError(f"{self.name}: emit() is only valid inside an agent; use send()")
        append, encode = context.outputs.append, self._encode
        if self.partitions == 1:
            stream = self._streams[0]

            def emit_one(value: V, key: Any) -> None:
                append((stream, encode(value)))

            return emit_one
        streams, key_to_partition, partitions = self._streams, self.key_to_partition, self.partitions

        def emit(value: V, key: Any) -> None:
            append((streams[key_to_partition(key, partitions)], encode(value)))

        return emit

    async def send(self, value: V, *, key: Any = None, partition: int | None = None) -> str | None:
        """Emit inside an agent; elsewhere append now and return the entry id."""
        if current_context() is not None:
            self.emit(value, key=key, partition=partition)
            return None
        p = self.key_to_partition(key, self.partitions) if partition is None else partition
        ids = await self.app.transport.produce(
            self._streams[p], [pack([self.codec.encode(value)])], self.max_pending, messages=1
        )
        return ids[0]

    async def send_many(self, items: Iterable[tuple[Any, V]]) -> list[str]:
        """Append many (key, value) pairs as one entry per partition touched; the entry id of each, in order."""
        by_partition: dict[int, list[tuple[int, bytes]]] = {}
        for index, (key, value) in enumerate(items):
            by_partition.setdefault(self.partition_for(key), []).append((index, self.codec.encode(value)))
        ids: dict[int, str] = {}
        for p, encoded in by_partition.items():
            (entry_id,) = await self.app.transport.produce(
                self._streams[p], [pack([data for _, data in encoded])], self.max_pending, messages=len(encoded)
            )
            ids.update((index, entry_id) for index, _ in encoded)
        return [ids[i] for i in range(len(ids))]
