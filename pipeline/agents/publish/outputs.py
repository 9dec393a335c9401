"""Emitting many messages per batch: `Topic.emit` with the per-call lookups done once per batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.context import current_context
from pipeline.topics import Topic

Emit = Callable[[Any, Any], None]
"""emit(value, key): like ``topic.emit(value, key=key)``."""


def batch_emitter(topic: Topic[Any]) -> Emit:
    """``topic.emit`` bound to the current batch: the same outputs, without per-message lookups.

    Only valid while the batch it was made in is being processed (it appends to that
    batch's outputs).
    """
    context = current_context()
    if context is None:
        raise RuntimeError(f"{topic.name}: emit() is only valid inside an agent; use send()")
    append = context.outputs.append
    encode = topic.codec.encode
    if topic.partitions == 1:
        stream = topic.stream(0)

        def emit_one(value: Any, key: Any) -> None:
            append((stream, encode(value)))

        return emit_one
    streams, partition_for = topic.streams, topic.partition_for

    def emit(value: Any, key: Any) -> None:
        append((streams[partition_for(key)], encode(value)))

    return emit
