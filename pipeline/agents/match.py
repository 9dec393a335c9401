"""match: owns the order books in memory and turns order commands into order events and trades.

Its state is the pure `MatchingEngine`, rebuilt after a restart by replaying the
committed input (matching is deterministic: same commands, same books, same events).
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.agent import AgentStream
from pipeline.agents.events import BookChanged
from pipeline.agents.topology import MatchCommand
from pipeline.app import App
from pipeline.core.engine import MatchingEngine
from pipeline.core.markets import Market
from pipeline.core.messages import OrderEvent
from pipeline.topics import Topic


def register_match(
    app: App,
    markets: Mapping[str, Market],
    orders_accepted: Topic[MatchCommand],
    orders_events: Topic[OrderEvent | BookChanged],
) -> None:
    """Declare the match agent on `app`."""

    @app.agent(orders_accepted, name="match", recover="replay", state=lambda partition: MatchingEngine(markets))
    async def match(stream: AgentStream[MatchCommand]) -> None:
        engine: MatchingEngine = stream.state
        emit = orders_events.emit
        async for batch in stream.batches():
            for command in batch:
                symbol = command.symbol
                for event in engine.process(command):
                    emit(event, key=symbol)  # type: ignore[arg-type]
                change = book_change(engine, command.ts, symbol)
                if change is not None:
                    emit(change, key=symbol)


def book_change(engine: MatchingEngine, ts: int, symbol: str) -> BookChanged | None:
    """What the last command did to the book of `symbol`, if anything."""
    try:
        book = engine.book(symbol)
    except KeyError:
        return None
    changes = book.drain_changes()
    if not changes:
        return None
    return BookChanged(
        ts=ts, symbol=symbol,
        bids=[(price, total) for is_buy, price, total in changes if is_buy],
        asks=[(price, total) for is_buy, price, total in changes if not is_buy],
    )
