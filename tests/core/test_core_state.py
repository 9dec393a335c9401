"""Snapshots, restore and the internal state checks of books and engine."""

from __future__ import annotations

import msgspec
import pytest
from core_helpers import SYMBOL, order

from pipeline.core.book import OrderBook
from pipeline.core.engine import EngineSnapshot, MatchingEngine
from pipeline.core.errors import StateError
from pipeline.core.markets import Market
from pipeline.core.messages import CancelOrder


def build(engine: MatchingEngine) -> None:
    for i, (side, price, qty) in enumerate([("BUY", 100, 4), ("BUY", 100, 2), ("BUY", 98, 1),
                                            ("SELL", 103, 5), ("SELL", 104, 1), ("BUY", 103, 2)]):
        engine.process(order(i + 1, side, price, qty, account=i % 3))
    engine.process(CancelOrder(ts=50, account_id=2, symbol=SYMBOL, order_id=3))


def test_snapshot_restore_round_trip_keeps_hash_and_behaviour(markets: dict[str, Market]) -> None:
    engine = MatchingEngine(markets)
    build(engine)
    data = msgspec.msgpack.encode(engine.snapshot())
    restored = MatchingEngine.restore(markets, msgspec.msgpack.decode(data, type=EngineSnapshot))
    assert restored.state_hash() == engine.state_hash()
    restored.validate_internal_state()
    # the same next command gives the same events (ids, trade ids, priority, remembered client ids)
    for cmd in (order(10, "SELL", 99, 7, account=5), order(11, "BUY", 100, 1, client_order_id="c2", account=1)):
        assert restored.process(cmd) == engine.process(cmd)
    assert restored.state_hash() == engine.state_hash()


def test_state_hash_changes_with_priority(markets: dict[str, Market]) -> None:
    a, b = MatchingEngine(markets), MatchingEngine(markets)
    a.process(order(1, "BUY", 100, 1))
    a.process(order(2, "BUY", 100, 1))
    b.process(order(2, "BUY", 100, 1))
    b.process(order(1, "BUY", 100, 1))
    assert a.state_hash() != b.state_hash()


def test_validate_internal_state_detects_corruption(engine: MatchingEngine) -> None:
    build(engine)
    engine.validate_internal_state()
    book = engine.book(SYMBOL)
    level = book.bids[100]
    level.total += 1
    with pytest.raises(StateError, match="totals"):
        engine.validate_internal_state()
    level.total -= 1
    del book.orders[1]
    with pytest.raises(StateError, match="not indexed"):
        book.validate_internal_state()


def test_validate_internal_state_detects_a_crossed_book() -> None:
    book = OrderBook(SYMBOL)
    from pipeline.core.book import RestingOrder

    book.add(RestingOrder(1, 1, "a", True, 101, 1, 1, 0, 0))
    book.add(RestingOrder(2, 2, "b", False, 100, 1, 1, 0, 0))
    with pytest.raises(StateError, match="crossed"):
        book.validate_internal_state()


def test_depth_and_best_prices(engine: MatchingEngine) -> None:
    build(engine)
    book = engine.book(SYMBOL)
    assert (book.best_bid(), book.best_ask()) == (100, 103)
    assert book.depth(5) == ([(100, 6)], [(103, 3), (104, 1)])
