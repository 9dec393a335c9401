"""Publisher without the runtime: deterministic, and its state does not depend on how input is batched."""

from __future__ import annotations

from typing import Any

import pytest

from bench.flows import funding, order_flow
from pipeline.agents.publish.publisher import Publisher
from pipeline.context import BatchContext, set_context
from pipeline.exchange import build_exchange
from pipeline.transport.base import Commit
from pipeline.transport.memory import MemoryTransport
from tests.core.core_helpers import sample_markets
from tests.pipeline.oracle import StagedOracle

MARKETS = sample_markets()


@pytest.fixture(scope="module")
def events() -> list[Any]:
    commands = [*funding(MARKETS, range(1, 7)), *order_flow(MARKETS, 1500, seed=21, accounts=range(1, 7))]
    oracle = StagedOracle(MARKETS).run(commands)
    return oracle.orders_events + oracle.orders_rejected + oracle.accounts_events


async def publish_all(events: list[Any], batch: int) -> tuple[list[str], list[tuple[str, bytes]], MemoryTransport]:
    """Table hashes, outputs and read models after publishing `events` in batches of `batch`."""
    exchange = build_exchange(MemoryTransport(), markets=MARKETS)
    tables = exchange.publish_tables.all()
    for table in tables:
        table.attach(0)
    context = BatchContext(0)
    set_context(context)
    read_models = MemoryTransport()
    writes: list[Any] = []
    outputs: list[tuple[str, bytes]] = []
    try:
        publisher = Publisher(MARKETS, exchange.publish_tables, exchange.published, lambda *w: writes.extend(w), 0)
        for start in range(0, len(events), batch):
            publisher.process(events[start:start + batch])
            outputs += context.outputs
            context.clear()
            await read_models.commit(Commit("publish", writes=writes))
            writes.clear()
    finally:
        set_context(None)
    return [table.state_hash() for table in tables], outputs, read_models


async def test_the_same_input_gives_the_same_outputs_tables_and_read_models(events: list[Any]) -> None:
    first = await publish_all(events, 100)
    second = await publish_all(events, 100)
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert first[2]._hashes == second[2]._hashes and first[2]._zsets == second[2]._zsets


async def test_state_and_read_models_do_not_depend_on_batching(events: list[Any]) -> None:
    one_by_one = await publish_all(events, 1)
    large = await publish_all(events, 500)
    assert one_by_one[0] == large[0]
    # (a book ticker says which depth update it reflects: with larger batches that is a later one)
    def without_bbo(hashes: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in hashes.items() if not key.startswith("bbo:")}

    assert without_bbo(one_by_one[2]._hashes) == without_bbo(large[2]._hashes)
    assert one_by_one[2]._strings == large[2]._strings
    assert one_by_one[2]._zsets.keys() == large[2]._zsets.keys()
