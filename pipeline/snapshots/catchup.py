"""Catching up on committed input after a restore: read it in bulk, decode it in bulk, apply it to the state.

A replay agent (``recover="replay"``) rebuilds its state by re-running the input it had
already committed, from the positions of the snapshot it restored (or from the start).
Through the live path each replayed batch costs what a live one does (the agent function,
its outputs encoded and then dropped, per-batch bookkeeping), although none of its effects
but the state's are kept. An agent that declares a ``replay`` function (its state and a
list of input values; e.g. match: ``engine.process`` of each command) is caught up here
instead:

- ranges of thousands of entries are read with one XRANGE each, the next one requested
  before the current one is applied (the server works while the state does);
- the record batches of a range are decoded with one msgspec call (their msgpack arrays
  merged into one), falling back to entry by entry only when something does not decode
  (the bad messages are skipped, as the live path dead-lettered them when first read);
- the values go straight to the replay function: no outputs, metrics or commits.

The result is the same state (the replay function applies the same values in the same
order as the agent did), as the recovery tests check with `state_hash()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from pipeline.batching import BatchDecoder
from pipeline.transport.base import Entry, Transport, id_key

TARGET_MESSAGES = 20_000
"""Messages per range read (about 50-150 ms of matching): bounds memory and how long the loop is held."""
MIN_ENTRIES, MAX_ENTRIES = 16, 20_000

_FIXARRAY = range(0x90, 0xA0)
_MAP_MARKERS = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + _U16.pack(n)
    return b"\xdd" + _U32.pack(n)


def merge_entries(entries: list[Entry]) -> bytes | None:
    """The messages of record-batch entries as one msgpack array (None if an entry is neither array nor map)."""
    parts: list[bytes | memoryview] = []
    total = 0
    for _, raw in entries:
        if not raw:
            return None
        first = raw[0]
        if first in _FIXARRAY:
            total += first & 0x0F
            parts.append(memoryview(raw)[1:])
        elif first == 0xDC:
            total += _U16.unpack_from(raw, 1)[0]
            parts.append(memoryview(raw)[3:])
        elif first == 0xDD:
            total += _U32.unpack_from(raw, 1)[0]
            parts.append(memoryview(raw)[5:])
        elif first in _MAP_MARKERS:  # one bare message
            total += 1
            parts.append(raw)
        else:
            return None
    return _array_header(total) + b"".join(parts)


class BulkDecoder:
    """Decodes the messages of many entries of one value type at once."""

    def __init__(self, value_type: Any) -> None:
        self._all: msgspec.msgpack.Decoder[list[Any]] = msgspec.msgpack.Decoder(list[value_type])
        self._batch: BatchDecoder[Any] = BatchDecoder(value_type)

    def decode(self, entries: list[Entry]) -> tuple[list[Any], int]:
        """(every decodable message in order, how many were not decodable)."""
        merged = merge_entries(entries)
        if merged is not None:
            try:
                return self._all.decode(merged), 0
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
        values: list[Any] = []
        bad = 0
        for _, raw in entries:  # the slow path, as the live runtime reads them
            try:
                values.extend(self._batch.decode(raw))
                continue
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
            for _, value, _ in self._batch.decode_each(raw):
                if value is None:
                    bad += 1
                else:
                    values.append(value)
        return values, bad


@dataclass
class CatchUpResult:
    """What one catch-up applied."""

    messages: int = 0
    entries: int = 0
    undecodable: int = 0
    last_id: str | None = None
    interrupted: bool = False
    """Stopped early because `interrupted()` said so (the state is partly caught up)."""


async def catch_up(
    transport: Transport, stream: str, after: str, until: tuple[int, int], value_type: Any,
    apply: Callable[[list[Any]], None], *, target_messages: int = TARGET_MESSAGES,
    interrupted: Callable[[], bool] = lambda: False,
) -> CatchUpResult:
    """Apply every message of `stream` after entry `after` up to entry key `until` (inclusive).

    `interrupted` is asked between ranges (the app stopping, the partition lost): if it says
    so, the catch-up ends early with `interrupted` set.
    """
    with _gc_for_bulk_work():
        return await _catch_up(transport, stream, after, until, value_type, apply, target_messages, interrupted)


@contextlib.contextmanager
def _gc_for_bulk_work() -> Iterator[None]:
    """Freeze what exists (the restored state) before, and the caught-up state after: both are long-lived.

    (A larger young-generation threshold while catching up was tried: no consistent gain in
    bench/snapshot_bench.py, so the agents' thresholds stay as they are.)
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.freeze()


async def _catch_up(
    transport: Transport, stream: str, after: str, until: tuple[int, int], value_type: Any,
    apply: Callable[[list[Any]], None], target_messages: int, interrupted: Callable[[], bool],
) -> CatchUpResult:
    decoder = BulkDecoder(value_type)
    result = CatchUpResult()
    count = MIN_ENTRIES  # then sized by the messages per entry seen
    pending: asyncio.Future[list[Entry]] | None = asyncio.ensure_future(transport.read_range(stream, after, count))
    try:
        while pending is not None:
            entries = await pending
            pending = None
            if not entries:
                break
            if id_key(entries[-1][0]) > until:
                entries = [e for e in entries if id_key(e[0]) <= until]
                done = True
            else:
                done = id_key(entries[-1][0]) == until
            if not entries:
                break
            last_id = entries[-1][0]
            values, bad = decoder.decode(entries)
            per_entry = max(1.0, len(values) / len(entries))
            count = max(MIN_ENTRIES, min(MAX_ENTRIES, int(target_messages / per_entry)))
            if not done:  # the server reads the next range while this one is applied
                pending = asyncio.ensure_future(transport.read_range(stream, last_id, count))
            apply(values)
            result.messages += len(values)
            result.entries += len(entries)
            result.undecodable += bad
            result.last_id = last_id
            await asyncio.sleep(0)  # let lease renewals and the rest of the loop run
            if pending is not None and interrupted():
                result.interrupted = True
                break
    finally:
        if pending is not None:
            pending.cancel()
    return result
