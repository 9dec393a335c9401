"""match: owns the order books in memory and turns order commands into order events and trades.

With several accounts partitions it also re-keys what settle needs onto
``orders.settle``: each trade to its buyer's and its seller's accounts partition (once
when they share one), each order's end to its account's partition.

Its state is the pure `MatchingEngine`, rebuilt after a restart by replaying the
committed input (matching is deterministic: same commands, same books, same events):
`replay_match` applies it to the engine directly, without encoding the events again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.agent import AgentStream
from pipeline.agents.events import BookChanged
from pipeline.agents.topology import MatchCommand
from pipeline.app import App
from pipeline.core.engine import MatchingEngine
from pipeline.core.markets import Market
from pipeline.core.messages import OrderCanceled, OrderEvent, OrderExpired, OrderFilled, OrderRejected, TradeExecuted
from pipeline.topics import Topic

log = logging.getLogger(__name__)


def register_match(
    app: App,
    markets: Mapping[str, Market],
    orders_accepted: Topic[MatchCommand],
    orders_events: Topic[OrderEvent | BookChanged],
    orders_settle: Topic[Any] | None = None,
) -> None:
    """Declare the match agent on `app`; with `orders_settle`, also re-key trades and order ends by account."""

    @app.agent(orders_accepted, name="match", recover="replay", state=lambda partition: MatchingEngine(markets),
               replay=replay_match)
    async def match(stream: AgentStream[MatchCommand]) -> None:
        engine: MatchingEngine = stream.state
        emit = orders_events.emit
        process = engine.process
        async for batch in stream.batches():
            books = engine.books()
            to_settle = None if orders_settle is None else settle_router(orders_settle)
            for command in batch:
                symbol = command.symbol
                events = process(command)
                for event in events:
                    emit(event, key=symbol)  # type: ignore[arg-type]
                if to_settle is not None:
                    to_settle(events)
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


_ENDS = frozenset([OrderFilled, OrderCanceled, OrderExpired, OrderRejected])


def settle_router(orders_settle: Topic[Any]) -> Callable[[list[Any]], None]:
    """For the batch in hand: send a command's trades and order ends to the accounts partitions settling them."""
    emit = orders_settle.emitter()
    partitions = orders_settle.partitions

    def route(events: list[Any]) -> None:
        for event in events:
            kind = type(event)
            if kind is TradeExecuted:
                maker, taker = event.maker_account_id, event.taker_account_id
                emit(event, maker)
                if (maker - taker) % partitions:  # the other side is settled on another partition
                    emit(event, taker)
            elif kind in _ENDS:
                emit(event, event.account_id)

    return route
