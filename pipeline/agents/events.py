"""Events the agents add to the core's: what market data is built from."""

from __future__ import annotations

from pipeline.messages import Message


class BookChanged(Message, frozen=True, gc=False):
    """The levels of one market's book that one command changed, with their new totals.

    `bids` and `asks` hold (price ticks, total lots now) pairs; a total of 0 means the
    level is gone. Emitted by match after every command that changed the book, in the
    same stream and order as the command's order events.
    """

    ts: int
    symbol: str
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


class ClockTick(Message, frozen=True, gc=False):
    """The time now, sent to publish by its timer so that rolling windows (the 24h
    tickers) move when no trade happens. On its own topic ``publish.clock``."""

    ts: int
