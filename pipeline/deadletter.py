"""Dead letters: input an agent could not decode or that made it raise."""

from __future__ import annotations

from pipeline.batching import BatchDecoder
from pipeline.messages import Codec, Message

DLQ_STREAM = "dlq"
"""The one dead-letter stream every agent writes to."""


class DeadLetter(Message, frozen=True):
    """An input entry moved aside, with the error and where it came from."""

    agent: str
    stream: str
    entry_id: str
    error: str
    payload: bytes
    ts: int


DEAD_LETTER_CODEC: Codec[DeadLetter] = Codec(DeadLetter)

DEAD_LETTER_ENTRIES: BatchDecoder[DeadLetter] = BatchDecoder(DeadLetter)
"""Decodes an entry of the dead-letter stream (a batch of `DeadLetter`s)."""
