"""`OrderBook.drain_changes()`: the level changes the match agent turns into BookChanged events.

Applying every drain's (is_buy, price, total) to an initially empty {price: total} map per side
(total 0 = the level is gone) must reproduce the whole book's depth exactly, over long random
flows with every order type, STP, cancel-all, cancel-replace and halts, whether the changes are
drained after every command (as the match agent does) or only now and then (levels emptied and
re-created in between).
"""

from __future__ import annotations

import random

import pytest
from core_helpers import sample_markets
from test_core_differential import POLICY, SYMBOLS, Flow

from pipeline.core.book import OrderBook, RestingOrder
from pipeline.core.engine import MatchingEngine
from pipeline.core.messages import CancelAll, CancelOrder, CancelReplace, PlaceOrder, SetMarketStatus

ENGINE_COMMANDS = (PlaceOrder, CancelOrder, CancelAll, CancelReplace, SetMarketStatus)


def apply_drain(book: OrderBook, sides: dict[bool, dict[int, int]]) -> None:
    changes = book.drain_changes()
    keys = [(is_buy, price) for is_buy, price, _ in changes]
    assert len(keys) == len(set(keys)), f"a level reported twice in one drain: {changes}"
    for is_buy, price, total in changes:
        assert total >= 0
        if total:
            sides[is_buy][price] = total
        else:
            sides[is_buy].pop(price, None)
    assert book.drain_changes() == []  # drained means empty


def depth_of(book: OrderBook) -> dict[bool, dict[int, int]]:
    bids, asks = book.depth(len(book.bids) + len(book.asks) + 1)
    return {True: dict(bids), False: dict(asks)}


@pytest.mark.parametrize(("seed", "drain_probability"), [(1, 1.0), (2, 1.0), (3, 0.3), (4, 0.05)])
def test_drained_changes_rebuild_the_depth_exactly(seed: int, drain_probability: float) -> None:
    markets = sample_markets()
    engine = MatchingEngine(markets, POLICY)
    mirrors = {symbol: {True: {}, False: {}} for symbol in SYMBOLS}
    rng = random.Random(seed)
    commands = [c for c in Flow(seed, 100, 1 + seed % 6).commands(6_000) if isinstance(c, ENGINE_COMMANDS)]
    changed_levels = 0
    for command in commands:
        engine.process(command)
        if rng.random() < drain_probability:
            for symbol in SYMBOLS:
                changed_levels += len(engine.book(symbol).changed)
                apply_drain(engine.book(symbol), mirrors[symbol])
                assert mirrors[symbol] == depth_of(engine.book(symbol))
    for symbol in SYMBOLS:
        apply_drain(engine.book(symbol), mirrors[symbol])
        assert mirrors[symbol] == depth_of(engine.book(symbol))
    assert changed_levels > 1_000


def test_a_level_emptied_and_recreated_before_a_drain_is_reported_once() -> None:
    book = OrderBook("X")
    first = RestingOrder(1, 1, "a", True, 100, 5, 5, 0, 0)
    book.add(first)
    book.remove(first)
    book.add(RestingOrder(2, 1, "b", True, 100, 3, 3, 0, 0))
    book.add(RestingOrder(3, 1, "c", False, 101, 2, 2, 0, 0))
    assert book.drain_changes() == [(True, 100, 3), (False, 101, 2)]
    book.remove(book.orders[3])
    assert book.drain_changes() == [(False, 101, 0)]


def test_rest_builds_the_same_order_as_add() -> None:
    """The engine's `OrderBook.rest` sets every field `RestingOrder.__init__` sets."""
    a, b = OrderBook("X"), OrderBook("X")
    fields = (7, 3, "c7", False, 120, 9, 4, 1_000, 55)
    a.add(RestingOrder(*fields))
    b.rest(*fields)
    slots = [s for s in RestingOrder.__slots__ if s not in ("level", "prev", "next")]
    assert [getattr(a.orders[7], s) for s in slots] == [getattr(b.orders[7], s) for s in slots]
    assert b.orders[7].prev is None and b.orders[7].next is None and b.orders[7].level is b.asks[120]
    assert a.open_orders() == b.open_orders() and a.state_hash() == b.state_hash()
    assert a.drain_changes() == b.drain_changes() == [(False, 120, 4)]
    b.validate_internal_state()


def test_changes_stay_bounded_when_nobody_drains() -> None:
    book = OrderBook("X")
    for i in range(20_000):  # a level emptied and re-created over and over, never drained
        order = RestingOrder(i, 1, f"c{i}", i % 2 == 0, 100 + i % 7, 1, 1, 0, i)
        book.add(order)
        if i % 3:
            book.remove(order)
    assert len(book.changed) < 10_000
    sides: dict[bool, dict[int, int]] = {True: {}, False: {}}
    apply_drain(book, sides)
    assert sides == depth_of(book)


@pytest.mark.parametrize("every", [1, 7])
def test_drain_sides_reports_what_drain_changes_does(every: int) -> None:
    """The match agent's `drain_sides` = `drain_changes` split by side, order kept."""
    markets = sample_markets()
    engines = (MatchingEngine(markets, POLICY), MatchingEngine(markets, POLICY))
    for step, command in enumerate(Flow(seed=3, mid=100, spread=6).commands(3000)):
        if not isinstance(command, ENGINE_COMMANDS):
            continue
        for engine in engines:
            engine.process(command)
        if step % every:
            continue
        for symbol in SYMBOLS:
            changes = engines[0].book(symbol).drain_changes()
            sides = engines[1].book(symbol).drain_sides()
            bids = [(price, total) for is_buy, price, total in changes if is_buy]
            asks = [(price, total) for is_buy, price, total in changes if not is_buy]
            assert sides == ((bids, asks) if changes else None)
