"""match: owns the order books in memory and turns order commands into order events and trades.

Its state is the pure `MatchingEngine`, rebuilt after a restart by replaying the
committed input (matching is deterministic: same commands, same books, same events).
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.agent import AgentStream
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
    orders_events: Topic[OrderEvent],
) -> None:
    """Declare the match agent on `app`."""

    @app.agent(orders_accepted, name="match", recover="replay", state=lambda partition: MatchingEngine(markets))
    async def match(stream: AgentStream[MatchCommand]) -> None:
        engine: MatchingEngine = stream.state
        emit = orders_events.emit
        async for batch in stream.batches():
            for command in batch:
                for event in engine.process(command):
                    emit(event, key=event.symbol)  # type: ignore[arg-type,union-attr]
