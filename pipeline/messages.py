"""Base classes and the one codec for every message on the streams.

Messages are frozen, tagged msgspec Structs. The tag is the class name, so a
topic whose value type is a union of several Structs decodes each entry into
the right class. Every message class carries a schema `version` (a class
attribute, bumped on any incompatible change) which the exported schema lists.

Commands are imperative (`PlaceOrder`), events are past tense (`OrderAccepted`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

import msgspec


class Message(msgspec.Struct, frozen=True, tag=True, array_like=False, omit_defaults=False):
    """Root of all stream messages. Subclasses are frozen and tagged by class name."""

    version: ClassVar[int] = 1


M = TypeVar("M")


class Codec(Generic[M]):
    """Encode/decode one value type (a Struct or a union of Structs) as msgpack bytes."""

    __slots__ = ("decode", "encode", "value_type")

    def __init__(self, value_type: Any) -> None:
        self.value_type = value_type
        decoder: msgspec.msgpack.Decoder[M] = msgspec.msgpack.Decoder(value_type)
        self.encode: Callable[[M], bytes] = msgspec.msgpack.Encoder().encode
        """Encode one value as msgpack bytes."""
        self.decode: Callable[[bytes], M] = decoder.decode
        """Decode one value; raises `msgspec.DecodeError`/`ValidationError` on bad input."""


class DecodeFailed(Exception):
    """Raised by the runtime when an entry cannot be decoded into its topic's value type."""
