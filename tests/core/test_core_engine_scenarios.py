"""Scenarios of the matching engine, with the book drawn before and after.

Book tables: one row per price level, asks on top; each order as #id:account:remaining.
Test market TSTUSD: tick 1, lot 1, so a trade's quote amount is price x qty.
"""

from __future__ import annotations

from core_helpers import SYMBOL, kinds, market_order, order, render, table

from pipeline.core.engine import MatchingEngine
from pipeline.core.messages import (
    NO_BUDGET,
    CancelAll,
    CancelOrder,
    CancelRejected,
    CancelReplace,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    SetMarketStatus,
    TradeExecuted,
)


def seed(engine: MatchingEngine, *orders: PlaceOrder) -> None:
    for o in orders:
        events = engine.process(o)
        assert kinds(events) == ["OrderAccepted"], events


def standard_book(engine: MatchingEngine) -> None:
    """
    SELL   102 | #4:a2:5
    SELL   101 | #2:a2:3 #3:a3:2
    BUY    100 | #1:a2:4
    BUY     99 | #5:a3:6
    """
    seed(engine, order(1, "BUY", 100, 4, account=2), order(2, "SELL", 101, 3, account=2),
         order(3, "SELL", 101, 2, account=3), order(4, "SELL", 102, 5, account=2),
         order(5, "BUY", 99, 6, account=3))
    assert render(engine) == table(standard_book.__doc__ or "")


def trades(events: list[object]) -> list[tuple[int, int, int, int]]:
    """(trade id, price, qty, maker order id) of each trade."""
    return [(e.trade_id, e.price_ticks, e.qty_lots, e.maker_order_id) for e in events
            if isinstance(e, TradeExecuted)]


def test_limit_gtc_sweeps_levels_in_price_time_order_and_rests_the_rest(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(order(10, "BUY", 102, 12, account=1))
    assert trades(events) == [(1, 101, 3, 2), (2, 101, 2, 3), (3, 102, 5, 4)]
    assert kinds(events) == ["OrderAccepted", "TradeExecuted", "OrderFilled", "TradeExecuted", "OrderFilled",
                             "TradeExecuted", "OrderFilled"]
    assert [e.quote_amount for e in events if isinstance(e, TradeExecuted)] == [303, 202, 510]
    assert render(engine) == table("""
        BUY    102 | #10:a1:2
        BUY    100 | #1:a2:4
        BUY     99 | #5:a3:6
    """)
    resting = engine.open_orders(SYMBOL)[0]
    assert (resting.order_id, resting.remaining_lots, resting.filled_quote) == (10, 2, 1015)


def test_maker_partially_filled_keeps_its_place(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(order(10, "BUY", 101, 1))
    assert trades(events) == [(1, 101, 1, 2)]
    assert kinds(events) == ["OrderAccepted", "TradeExecuted", "OrderFilled"]
    assert isinstance(events[-1], OrderFilled) and events[-1].order_id == 10
    assert render(engine) == table("""
        SELL   102 | #4:a2:5
        SELL   101 | #2:a2:2 #3:a3:2
        BUY    100 | #1:a2:4
        BUY     99 | #5:a3:6
    """)


def test_ioc_expires_what_it_cannot_fill(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(order(10, "SELL", 100, 7, time_in_force="IOC"))
    assert trades(events) == [(1, 100, 4, 1)]
    last = events[-1]
    assert isinstance(last, OrderExpired)
    assert (last.status, last.reason, last.filled_lots, last.filled_quote) == ("EXPIRED", "NOT_FILLED", 4, 400)
    assert render(engine) == table("""
        SELL   102 | #4:a2:5
        SELL   101 | #2:a2:3 #3:a3:2
        BUY     99 | #5:a3:6
    """)


def test_fok_that_cannot_fill_completely_leaves_the_book_untouched(engine: MatchingEngine) -> None:
    standard_book(engine)
    before = engine.state_hash()
    events = engine.process(order(10, "BUY", 101, 6, time_in_force="FOK"))
    assert kinds(events) == ["OrderAccepted", "OrderExpired"]
    assert isinstance(events[1], OrderExpired) and events[1].reason == "FOK_NOT_FILLABLE"
    assert engine.state_hash() != before  # only the client id is remembered
    assert render(engine) == table(standard_book.__doc__ or "")


def test_fok_that_can_fill_fills_completely(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(order(10, "BUY", 102, 10, time_in_force="FOK"))
    assert trades(events) == [(1, 101, 3, 2), (2, 101, 2, 3), (3, 102, 5, 4)]
    assert isinstance(events[-1], OrderFilled) and events[-1].filled_lots == 10
    assert render(engine) == table("""
        BUY    100 | #1:a2:4
        BUY     99 | #5:a3:6
    """)


def test_market_by_quantity_sweeps_and_expires_when_the_book_runs_out(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(market_order(10, "SELL", 20))
    assert trades(events) == [(1, 100, 4, 1), (2, 99, 6, 5)]
    last = events[-1]
    assert isinstance(last, OrderExpired) and (last.filled_lots, last.filled_quote) == (10, 994)
    assert render(engine) == table("""
        SELL   102 | #4:a2:5
        SELL   101 | #2:a2:3 #3:a3:2
    """)


def test_market_buy_by_quote_spends_at_most_the_quote_in_whole_lots(engine: MatchingEngine) -> None:
    standard_book(engine)
    # 700 buys 5 x 101 = 505, then 195 // 102 = 1 lot at 102; 93 left cannot buy a lot: FILLED.
    events = engine.process(market_order(10, "BUY", quote=700))
    assert trades(events) == [(1, 101, 3, 2), (2, 101, 2, 3), (3, 102, 1, 4)]
    last = events[-1]
    assert isinstance(last, OrderFilled) and (last.filled_lots, last.filled_quote) == (6, 607)
    assert render(engine) == table("""
        SELL   102 | #4:a2:4
        BUY    100 | #1:a2:4
        BUY     99 | #5:a3:6
    """)


def test_market_sell_by_quote_receives_at_most_the_quote(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(market_order(10, "SELL", quote=450))
    assert trades(events) == [(1, 100, 4, 1)]  # 50 left < 99: done
    assert isinstance(events[-1], OrderFilled) and events[-1].filled_quote == 400


def test_market_sell_by_quote_stops_at_its_base_budget(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(market_order(10, "SELL", quote=900, base_budget_lots=5))
    assert trades(events) == [(1, 100, 4, 1), (2, 99, 1, 5)]
    last = events[-1]
    assert isinstance(last, OrderExpired) and last.reason == "NO_BUDGET"


def test_market_buy_by_quantity_stops_at_its_quote_budget(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(market_order(10, "BUY", 8, quote_budget=600))
    assert trades(events) == [(1, 101, 3, 2), (2, 101, 2, 3)]  # 95 left < 102
    last = events[-1]
    assert isinstance(last, OrderExpired) and (last.reason, last.filled_lots) == ("NO_BUDGET", 5)
    assert NO_BUDGET == -1


def test_limit_maker_is_rejected_if_it_would_take_and_rests_otherwise(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(order(10, "BUY", 101, 1, order_type="LIMIT_MAKER"))
    assert kinds(events) == ["OrderRejected"]
    assert isinstance(events[0], OrderRejected) and events[0].reason == "WOULD_TAKE"
    assert kinds(engine.process(order(11, "BUY", 100, 1, order_type="LIMIT_MAKER"))) == ["OrderAccepted"]
    assert render(engine) == table("""
        SELL   102 | #4:a2:5
        SELL   101 | #2:a2:3 #3:a3:2
        BUY    100 | #1:a2:4 #11:a1:1
        BUY     99 | #5:a3:6
    """)


def test_stp_none_lets_an_account_trade_with_itself(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(order(10, "BUY", 101, 3, account=2))
    t = events[1]
    assert isinstance(t, TradeExecuted) and t.maker_account_id == t.taker_account_id == 2


def test_stp_expire_taker_ends_the_taker_at_its_own_order(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(order(10, "BUY", 102, 9, account=3, stp_mode="EXPIRE_TAKER"))
    # #2 (a2) trades, then #3 is a3's own: the taker expires, #3 stays.
    assert trades(events) == [(1, 101, 3, 2)]
    last = events[-1]
    assert isinstance(last, OrderExpired)
    assert (last.order_id, last.status, last.filled_lots) == (10, "EXPIRED_IN_MATCH", 3)
    assert render(engine) == table("""
        SELL   102 | #4:a2:5
        SELL   101 | #3:a3:2
        BUY    100 | #1:a2:4
        BUY     99 | #5:a3:6
    """)


def test_stp_expire_maker_removes_own_orders_and_keeps_matching(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(order(10, "BUY", 102, 6, account=3, stp_mode="EXPIRE_MAKER"))
    assert kinds(events) == ["OrderAccepted", "TradeExecuted", "OrderFilled", "OrderExpired", "TradeExecuted",
                             "OrderFilled"]
    expired = events[3]
    assert isinstance(expired, OrderExpired)
    assert (expired.order_id, expired.status, expired.reason) == (3, "EXPIRED_IN_MATCH", "SELF_TRADE")
    assert trades(events) == [(1, 101, 3, 2), (2, 102, 3, 4)]
    assert render(engine) == table("""
        SELL   102 | #4:a2:2
        BUY    100 | #1:a2:4
        BUY     99 | #5:a3:6
    """)


def test_stp_expire_both_ends_maker_and_taker(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(order(10, "BUY", 102, 6, account=3, stp_mode="EXPIRE_BOTH"))
    assert kinds(events) == ["OrderAccepted", "TradeExecuted", "OrderFilled", "OrderExpired", "OrderExpired"]
    assert [(e.order_id, e.status) for e in events if isinstance(e, OrderExpired)] == [
        (3, "EXPIRED_IN_MATCH"), (10, "EXPIRED_IN_MATCH")]
    assert render(engine) == table("""
        SELL   102 | #4:a2:5
        BUY    100 | #1:a2:4
        BUY     99 | #5:a3:6
    """)


def test_fok_with_stp_counts_only_liquidity_it_could_take(engine: MatchingEngine) -> None:
    standard_book(engine)
    # a3 would reach its own #3 after 3 lots: with EXPIRE_TAKER 4 lots cannot fill.
    events = engine.process(order(10, "BUY", 102, 4, account=3, stp_mode="EXPIRE_TAKER", time_in_force="FOK"))
    assert kinds(events) == ["OrderAccepted", "OrderExpired"]
    # With EXPIRE_MAKER #3 is skipped: 3 + 5 = 8 lots can fill 8.
    events = engine.process(order(11, "BUY", 102, 8, account=3, stp_mode="EXPIRE_MAKER", time_in_force="FOK"))
    assert isinstance(events[-1], OrderFilled)


def test_cancel_by_order_id_and_by_client_id(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(CancelOrder(ts=20, account_id=2, symbol=SYMBOL, order_id=2))
    assert isinstance(events[0], OrderCanceled) and events[0].order_id == 2
    events = engine.process(CancelOrder(ts=21, account_id=3, symbol=SYMBOL, client_order_id="c3"))
    assert isinstance(events[0], OrderCanceled) and events[0].order_id == 3
    assert render(engine) == table("""
        SELL   102 | #4:a2:5
        BUY    100 | #1:a2:4
        BUY     99 | #5:a3:6
    """)


def test_cancel_of_unknown_or_foreign_order_is_rejected(engine: MatchingEngine) -> None:
    standard_book(engine)
    for cancel in (CancelOrder(ts=20, account_id=1, symbol=SYMBOL, order_id=2),
                   CancelOrder(ts=20, account_id=2, symbol=SYMBOL, order_id=99),
                   CancelOrder(ts=20, account_id=3, symbol=SYMBOL, client_order_id="c2")):
        events = engine.process(cancel)
        assert isinstance(events[0], CancelRejected) and events[0].reason == "UNKNOWN_ORDER"
    assert render(engine) == table(standard_book.__doc__ or "")


def test_cancel_all_cancels_one_accounts_orders_oldest_first(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(CancelAll(ts=20, account_id=2, symbol=SYMBOL))
    assert [(type(e).__name__, e.order_id) for e in events if isinstance(e, OrderCanceled)] == [
        ("OrderCanceled", 1), ("OrderCanceled", 2), ("OrderCanceled", 4)]
    assert render(engine) == table("""
        SELL   101 | #3:a3:2
        BUY     99 | #5:a3:6
    """)
    assert kinds(engine.process(CancelAll(ts=21, account_id=2, symbol=SYMBOL))) == ["CancelRejected"]


def test_cancel_replace_cancels_and_places_in_one_step(engine: MatchingEngine) -> None:
    standard_book(engine)
    events = engine.process(CancelReplace(ts=20, account_id=2, symbol=SYMBOL, cancel_order_id=1,
                                          new_order=order(10, "BUY", 101, 4, account=3)))
    # new order of another account than the command: rejected, nothing changed
    assert kinds(events) == ["OrderRejected"]
    events = engine.process(CancelReplace(ts=21, account_id=2, symbol=SYMBOL, cancel_order_id=1,
                                          new_order=order(10, "BUY", 101, 4, account=2)))
    assert kinds(events) == ["OrderCanceled", "OrderAccepted", "TradeExecuted", "OrderFilled",
                             "TradeExecuted", "OrderFilled"]
    assert render(engine) == table("""
        SELL   102 | #4:a2:5
        SELL   101 | #3:a3:1
        BUY     99 | #5:a3:6
    """)


def test_cancel_replace_of_unknown_order_changes_nothing(engine: MatchingEngine) -> None:
    standard_book(engine)
    before = engine.state_hash()
    events = engine.process(CancelReplace(ts=20, account_id=2, symbol=SYMBOL, cancel_order_id=3,
                                          new_order=order(10, "BUY", 100, 1, account=2)))
    assert kinds(events) == ["CancelRejected", "OrderRejected"]
    assert isinstance(events[1], OrderRejected) and events[1].reason == "CANCEL_REPLACE_FAILED"
    assert engine.state_hash() == before


def test_client_order_id_is_rejected_while_open_and_while_remembered(markets: dict) -> None:
    from pipeline.core.client_ids import ClientIdPolicy

    engine = MatchingEngine(markets, ClientIdPolicy(window_ns=100, max_ids=10))
    assert kinds(engine.process(order(1, "BUY", 100, 1, client_order_id="x"))) == ["OrderAccepted"]
    dup = engine.process(order(2, "BUY", 100, 1, client_order_id="x"))
    assert isinstance(dup[0], OrderRejected) and dup[0].reason == "DUPLICATE_CLIENT_ORDER_ID"
    # another account may use the same id
    assert kinds(engine.process(order(3, "BUY", 100, 1, account=2, client_order_id="x"))) == ["OrderAccepted"]
    engine.process(CancelOrder(ts=50, account_id=1, symbol=SYMBOL, order_id=1))
    retry = engine.process(order(4, "BUY", 100, 1, client_order_id="x", ts=150))  # 100 ns after the end
    assert isinstance(retry[0], OrderRejected) and retry[0].reason == "DUPLICATE_CLIENT_ORDER_ID"
    later = engine.process(order(5, "BUY", 100, 1, client_order_id="x", ts=151))
    assert kinds(later) == ["OrderAccepted"]


def test_filled_order_ids_are_remembered_so_a_retry_never_executes_twice(engine: MatchingEngine) -> None:
    standard_book(engine)
    first = engine.process(order(10, "BUY", 101, 1, client_order_id="retry-me"))
    assert isinstance(first[-1], OrderFilled)
    again = engine.process(order(11, "BUY", 101, 1, client_order_id="retry-me"))
    assert kinds(again) == ["OrderRejected"]


def test_rejected_orders_do_not_reserve_their_client_id(engine: MatchingEngine) -> None:
    assert kinds(engine.process(order(1, "BUY", 0, 1, client_order_id="x"))) == ["OrderRejected"]
    assert kinds(engine.process(order(2, "BUY", 5, 1, client_order_id="x"))) == ["OrderAccepted"]


def test_duplicate_open_order_id_is_rejected(engine: MatchingEngine) -> None:
    engine.process(order(1, "BUY", 100, 1))
    events = engine.process(order(1, "BUY", 100, 1, client_order_id="other"))
    assert isinstance(events[0], OrderRejected) and events[0].reason == "DUPLICATE_ORDER_ID"


def test_trade_ids_are_sequential_per_market(engine: MatchingEngine) -> None:
    seed(engine, order(1, "SELL", 10, 5), order(2, "SELL", 10, 5, symbol="OTHUSD"))
    ids = []
    for i, symbol in enumerate(["TSTUSD", "OTHUSD", "TSTUSD", "TSTUSD", "OTHUSD"]):
        events = engine.process(order(10 + i, "BUY", 10, 1, account=2, symbol=symbol))
        ids += [(e.symbol, e.trade_id) for e in events if isinstance(e, TradeExecuted)]
    assert ids == [("TSTUSD", 1), ("OTHUSD", 1), ("TSTUSD", 2), ("TSTUSD", 3), ("OTHUSD", 2)]


def test_halted_market_rejects_orders_but_allows_cancels(engine: MatchingEngine) -> None:
    standard_book(engine)
    assert kinds(engine.process(SetMarketStatus(ts=20, symbol=SYMBOL, status="HALT"))) == ["MarketStatusChanged"]
    events = engine.process(order(10, "BUY", 101, 1))
    assert isinstance(events[0], OrderRejected) and events[0].reason == "MARKET_HALTED"
    assert kinds(engine.process(CancelOrder(ts=21, account_id=2, symbol=SYMBOL, order_id=1))) == ["OrderCanceled"]
    engine.process(SetMarketStatus(ts=22, symbol=SYMBOL, status="TRADING"))
    assert isinstance(engine.process(order(11, "BUY", 101, 1))[0], OrderAccepted)


def test_unknown_symbol_is_rejected(engine: MatchingEngine) -> None:
    events = engine.process(order(1, "BUY", 100, 1, symbol="NOPE"))
    assert isinstance(events[0], OrderRejected) and events[0].reason == "UNKNOWN_SYMBOL"
