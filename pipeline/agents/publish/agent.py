"""publish: the agent that wires `Publisher` to its inputs, outputs, tables and read models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.agent import AgentStream
from pipeline.agents.publish.publisher import Publisher
from pipeline.agents.publish.tables import PublishTables, PublishTopics
from pipeline.app import App
from pipeline.core.markets import Market
from pipeline.topics import Topic


def register_publish(
    app: App,
    markets: Mapping[str, Market],
    inputs: tuple[Topic[Any], Topic[Any], Topic[Any]],
    topics: PublishTopics,
) -> PublishTables:
    """Declare the publish agent on `app`, reading (orders.events, orders.rejected, accounts.events)."""
    tables = PublishTables.declare(app, partitions=inputs[0].partitions)

    @app.agent(list(inputs), name="publish", tables=tables.all())
    async def publish(stream: AgentStream[Any]) -> None:
        publisher = Publisher(markets, tables, topics, stream.write, stream.partition)
        async for batch in stream.batches():
            publisher.process(batch)

    return tables
