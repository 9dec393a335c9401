"""publish: the agent that wires `Publisher` to its inputs, outputs, tables and read models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.agent import AgentStream
from pipeline.agents.events import ClockTick
from pipeline.agents.publish.publisher import Publisher
from pipeline.agents.publish.tables import PublishTables, PublishTopics
from pipeline.app import App
from pipeline.core.markets import Market
from pipeline.topics import Topic

CLOCK_TOPIC = "publish.clock"
CLOCK_S = 5.0
"""How often publish's clock ticks (seconds): the 24h tickers' window moves by whole minutes."""


def register_publish(
    app: App,
    markets: Mapping[str, Market],
    inputs: tuple[Topic[Any], Topic[Any], Topic[Any]],
    topics: PublishTopics,
    clock_s: float = CLOCK_S,
) -> PublishTables:
    """Declare the publish agent on `app`, reading (orders.events, orders.rejected, accounts.events).

    Also its clock: every `clock_s` seconds (0: never) the process that runs publish sends a
    `ClockTick` (the app's clock) to ``publish.clock``, publish's fourth input, so that 24h
    tickers drop the minutes that left their window even when no trade happens.
    """
    partitions = inputs[0].partitions
    tables = PublishTables.declare(app, partitions=partitions)
    clock = app.topic(CLOCK_TOPIC, value_type=ClockTick, partitions=partitions)

    if clock_s > 0:
        @app.timer(clock_s)
        async def publish_clock() -> None:
            for (agent, partition), runner in list(app.runners.items()):
                if agent == "publish" and runner.ready:
                    await clock.send(ClockTick(app.clock()), partition=partition)

    @app.agent([*inputs, clock], name="publish", tables=tables.all())
    async def publish(stream: AgentStream[Any]) -> None:
        publisher = Publisher(markets, tables, topics, stream.write, stream.partition)
        # every market's whole read model once, committed before (or with) the first batch: publish
        # otherwise writes only what a batch changed, so renamed or missing keys would stay partial
        stream.write(*publisher.market_read_models())
        async for batch in stream.batches():
            publisher.process(batch)

    return tables
