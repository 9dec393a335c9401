"""DepthBook: update ids, levels, best bid/offer, what the read model is written from."""

from __future__ import annotations

from pipeline.agents.events import BookChanged
from pipeline.agents.publish.depth import DepthBook


def change(bids: list[tuple[int, int]] = [], asks: list[tuple[int, int]] = [], ts: int = 1) -> BookChanged:  # noqa: B006
    return BookChanged(ts=ts, symbol="BTCUSDT", bids=bids, asks=asks)


def test_update_ids_grow_by_one_per_level_change() -> None:
    book = DepthBook("BTCUSDT")
    first = book.apply(change(bids=[(100, 5), (99, 3)], asks=[(101, 2)]))
    second = book.apply(change(asks=[(101, 0)]))
    third = book.apply(change(bids=[(100, 7)], asks=[(102, 1)]))
    assert (first.first_update_id, first.last_update_id) == (1, 3)
    assert (second.first_update_id, second.last_update_id) == (4, 4)
    assert (third.first_update_id, third.last_update_id) == (5, 6)
    assert book.update_id == 6


def test_a_restored_book_continues_its_sequence() -> None:
    book = DepthBook("BTCUSDT", update_id=41, levels=[(True, 100, 5), (False, 101, 2)])
    update = book.apply(change(bids=[(100, 0)]))
    assert (update.first_update_id, update.last_update_id) == (42, 42)


def test_levels_and_top_of_book() -> None:
    #   bids        asks
    #   100 x 5     101 x 2
    #    99 x 3     103 x 4
    book = DepthBook("BTCUSDT")
    book.apply(change(bids=[(100, 5), (99, 3)], asks=[(103, 4), (101, 2)]))
    assert book.top() == (100, 5, 101, 2)
    assert book.levels(True) == [(100, 5), (99, 3)]
    assert book.levels(False) == [(101, 2), (103, 4)]
    # the best ask trades away, the best bid shrinks
    book.apply(change(bids=[(100, 1)], asks=[(101, 0)]))
    assert book.top() == (100, 1, 103, 4)
    book.apply(change(bids=[(100, 0), (99, 0)], asks=[(103, 0)]))
    assert book.top() == (0, 0, 0, 0)


def test_drain_coalesces_the_changes_of_a_batch() -> None:
    book = DepthBook("BTCUSDT")
    book.apply(change(bids=[(100, 5)], asks=[(101, 2)]))
    book.apply(change(bids=[(100, 0), (98, 1)]))
    assert book.drain() == {(True, 100): 0, (False, 101): 2, (True, 98): 1}
    assert book.drain() == {}


def test_book_ticker_carries_the_update_id() -> None:
    book = DepthBook("BTCUSDT")
    book.apply(change(bids=[(100, 5)], asks=[(101, 2)], ts=7))
    ticker = book.book_ticker(7)
    assert (ticker.update_id, ticker.bid_price_ticks, ticker.ask_qty_lots, ticker.ts) == (2, 100, 2, 7)
