"""match: owns the order books in memory and turns order commands into order events and trades.

Its state is the pure `MatchingEngine`, rebuilt after a restart by replaying the
committed input (matching is deterministic: same commands, same books, same events):
`replay_match` applies it to the engine directly, without encoding the events again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pipeline.agent import AgentStream
from pipeline.agents.events import BookChanged
from pipeline.agents.topology import MatchCommand
from pipeline.app import App
from pipeline.core.engine import MatchingEngine
from pipeline.core.markets import Market
from pipeline.core.messages import OrderEvent
from pipeline.topics import Topic

log = logging.getLogger(__name__)


def register_match(
    app: App,
    markets: Mapping[str, Market],
    orders_accepted: Topic[MatchCommand],
    orders_events: Topic[OrderEvent | BookChanged],
) -> None:
    """Declare the match agent on `app`."""

    @app.agent(orders_accepted, name="match", recover="replay", state=lambda partition: MatchingEngine(markets),
               replay=replay_match)
    async def match(stream: AgentStream[MatchCommand]) -> None:
        engine: MatchingEngine = stream.state
        emit = orders_events.emit
        process = engine.process
        async for batch in stream.batches():
            books = engine.books()
            for command in batch:
                symbol = command.symbol
                for event in process(command):
                    emit(event, key=symbol)  # type: ignore[arg-type]
                book = books.get(symbol)
                sides = None if book is None else book.drain_sides()
                if sides is not None:
                    emit(BookChanged(command.ts, symbol, sides[0], sides[1]), key=symbol)


def replay_match(engine: MatchingEngine, commands: list[MatchCommand]) -> None:
    """Apply commands the agent already committed (recovery): the same engine changes, no events kept.

    A command that raises is skipped as the live agent dead-lettered it; the books' changed
    levels are drained and dropped, as the live agent drained them into `BookChanged`.
    """
    process = engine.process
    for command in commands:
        try:
            process(command)
        except Exception:
            log.exception("match: replaying %s raised (dead-lettered when it was first processed)", command)
    for book in engine.books().values():
        book.drain_sides()


def book_change(engine: MatchingEngine, ts: int, symbol: str) -> BookChanged | None:
    """What the last command did to the book of `symbol`, if anything."""
    try:
        book = engine.book(symbol)
    except KeyError:
        return None
    sides = book.drain_sides()
    return None if sides is None else BookChanged(ts, symbol, sides[0], sides[1])
