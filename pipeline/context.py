"""The batch context: what one agent batch has produced so far, and how to undo part of it.

An agent partition task sets its context in a context variable; `Topic.emit` and
table writes record into it; the runtime commits it atomically with the input
offsets. Savepoints let the runtime roll back the effects of one failing event
(poison input) without losing the rest of the batch.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

MISSING: Any = object()
"""Marks a table key that did not exist before a write."""

UndoRecord = tuple[dict[Any, Any], Any, Any, dict[Any, None], bool]
Savepoint = tuple[int, int, int]
"""(outputs, undo records, read-model writes) recorded so far."""


class BatchContext:
    """Outputs, table changes and undo log of the batch an agent is processing."""

    __slots__ = ("dirty", "outputs", "partition", "replaying", "undo", "writes")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.replaying = False
        self.outputs: list[tuple[str, bytes]] = []
        # read-model updates (see `pipeline.transport.base.Commit.writes`), committed with the batch
        self.writes: list[tuple[str | bytes, ...]] = []
        self.undo: list[UndoRecord] = []
        # (table name, partition) -> ordered set of keys written in this batch
        self.dirty: dict[tuple[str, int], dict[Any, None]] = {}

    def savepoint(self) -> Savepoint:
        """A point the batch can be rolled back to."""
        return len(self.outputs), len(self.undo), len(self.writes)

    def rollback(self, savepoint: Savepoint) -> None:
        """Undo every output, read-model write and table write made after `savepoint`."""
        n_outputs, n_undo, n_writes = savepoint
        del self.outputs[n_outputs:]
        del self.writes[n_writes:]
        undo = self.undo
        while len(undo) > n_undo:
            data, key, old, dirty, was_dirty = undo.pop()
            if old is MISSING:
                data.pop(key, None)
            else:
                data[key] = old
            if not was_dirty:
                dirty.pop(key, None)

    def clear(self) -> None:
        """Forget everything (after a commit, or when a replayed batch is discarded)."""
        self.outputs.clear()
        self.writes.clear()
        self.undo.clear()
        self.dirty.clear()


_current: ContextVar[BatchContext | None] = ContextVar("exchange_batch_context", default=None)


def current_context() -> BatchContext | None:
    """The batch context of the agent task running now, if any."""
    return _current.get()


def set_context(context: BatchContext | None) -> None:
    """Install `context` for the current task (agent partition tasks only)."""
    _current.set(context)
