"""The root error type of the project and the runtime's infrastructure errors.

Rejections of user input are data (events with reason codes), never exceptions:
exceptions are for bugs and infrastructure only.
"""

from __future__ import annotations


class ExchangeError(Exception):
    """Root of every exception the project raises on purpose."""


class FencedError(ExchangeError):
    """A commit was refused because this worker no longer owns the partition's lease."""


class BackpressureError(ExchangeError):
    """A topic holds more unprocessed entries than its limit; the producer must back off."""

    def __init__(self, stream: str, pending: int, limit: int) -> None:
        super().__init__(f"{stream}: {pending} unprocessed entries (limit {limit})")
        self.stream = stream
        self.pending = pending
        self.limit = limit


class TransportError(ExchangeError):
    """The stream store failed or answered something unexpected."""
