"""Entries that carry many messages: the runtime's record batches.

Each stream entry's ``d`` field is a msgpack *array* of messages (each a msgpack map
tagged by ``type``), like a Kafka record batch: one XADD carries a whole agent
batch's output for that stream, so the server's per-entry cost and the client's
per-command cost are paid once per batch, not once per message. Consumers decode an
entry as a list; a message's identity is its entry id plus its index in the entry.
"""

from __future__ import annotations

import struct
from typing import Any, Generic, TypeVar

import msgspec

M = TypeVar("M")

_MAP_MARKERS = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])


def pack(encoded: list[bytes]) -> bytes:
    """A msgpack array of already-encoded messages (no re-encoding)."""
    n = len(encoded)
    if n < 16:
        header = bytes((0x90 | n,))
    elif n < 0x10000:
        header = b"\xdc" + struct.pack(">H", n)
    else:
        header = b"\xdd" + struct.pack(">I", n)
    return header + b"".join(encoded)


def group(outputs: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    """Encoded messages per stream, in order."""
    grouped: dict[str, list[bytes]] = {}
    last_stream, last_list = "", None
    for stream, data in outputs:
        if stream != last_stream or last_list is None:
            last_list = grouped.get(stream)
            if last_list is None:
                last_list = grouped[stream] = []
            last_stream = stream
        last_list.append(data)
    return grouped


class BatchDecoder(Generic[M]):
    """Decodes entries of one value type; isolates undecodable messages inside an entry."""

    __slots__ = ("_items", "_one", "_raw")

    def __init__(self, value_type: Any) -> None:
        self._items: msgspec.msgpack.Decoder[list[M]] = msgspec.msgpack.Decoder(list[value_type])
        self._one: msgspec.msgpack.Decoder[M] = msgspec.msgpack.Decoder(value_type)
        self._raw = msgspec.msgpack.Decoder(list[msgspec.Raw])

    def decode(self, entry: bytes) -> list[M]:
        """All messages of an entry; raises msgspec errors if any is bad.

        An entry holding one bare message (a msgpack map, as a simple external producer
        would write it) counts as a batch of one.
        """
        if entry and entry[0] in _MAP_MARKERS:
            return [self._one.decode(entry)]
        return self._items.decode(entry)

    def decode_each(self, entry: bytes) -> list[tuple[bytes, M | None, str]]:
        """Slow path: (raw bytes, message or None, error) per message; the whole entry if not an array."""
        try:
            parts = [msgspec.Raw(entry)] if entry and entry[0] in _MAP_MARKERS else self._raw.decode(entry)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return [(entry, None, f"cannot decode: {exc}")]
        out: list[tuple[bytes, M | None, str]] = []
        for part in parts:
            raw = bytes(part)
            try:
                out.append((raw, self._one.decode(raw), ""))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                out.append((raw, None, f"cannot decode: {exc}"))
        return out
