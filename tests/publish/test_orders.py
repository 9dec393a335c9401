"""Order reports: statuses, cumulative fills and per-fill commission as settle charges it."""

from __future__ import annotations

from pipeline.agents.publish import orders
from pipeline.core.messages import OrderAccepted, OrderCanceled, OrderExpired, OrderFilled, TradeExecuted
from tests.core.core_helpers import sample_markets

MARKET = next(iter(sample_markets().values()))
SYMBOL = MARKET.symbol


def accept(order_id: int, qty: int, side: str = "BUY", quote_qty: int = 0) -> OrderAccepted:
    return OrderAccepted(1, SYMBOL, order_id, f"c{order_id}", 7, side, "MARKET" if quote_qty else "LIMIT",  # type: ignore[arg-type]
                         "GTC", 0 if quote_qty else 100, qty, quote_qty)


def trade(trade_id: int, lots: int, quote: int, maker: int = 1, taker: int = 2) -> TradeExecuted:
    return TradeExecuted(2, SYMBOL, trade_id, 100, lots, quote, "SELL", maker, 7, taker, 8)


def test_new_then_partial_then_filled() -> None:
    view, new = orders.accepted(accept(1, qty=5))
    assert (new.execution_type, new.status, new.qty_lots, new.created_ts) == ("NEW", "NEW", 5, 1)
    view, first = orders.traded(view, trade(1, 2, 2_000_000), True, MARKET)
    assert (first.status, first.last_qty_lots, first.filled_lots, first.filled_quote) == ("PARTIALLY_FILLED", 2, 2,
                                                                                           2_000_000)
    view, second = orders.traded(view, trade(2, 3, 3_000_000), True, MARKET)
    assert (second.status, second.filled_lots, second.trade_id, second.is_maker) == ("FILLED", 5, 2, True)
    view, final = orders.ended(view, OrderFilled(2, SYMBOL, 1, "c1", 7, "BUY", 5, 5_000_000))
    assert final is None and view.status == "FILLED" and not orders.is_live(view)


def test_commission_is_rounded_up_over_the_order_not_per_fill() -> None:
    # 1000 ppm on 1500 units per fill: 1.5 units each; the order owes ceil(1.5)=2, then ceil(3.0)=3
    rate = MARKET.maker_fee_ppm
    quote = 1_500_000 // rate
    view, _ = orders.accepted(accept(1, qty=10))
    view, first = orders.traded(view, trade(1, 1, quote), True, MARKET)
    view, second = orders.traded(view, trade(2, 1, quote), True, MARKET)
    assert (first.commission, second.commission, view.commission) == (2, 1, 3)
    assert first.commission_asset == MARKET.quote_asset.symbol


def test_a_market_order_by_quote_is_filled_only_when_the_matcher_says_so() -> None:
    view, _ = orders.accepted(accept(2, qty=0, quote_qty=10_000))
    view, fill = orders.traded(view, trade(1, 1, 10_000), False, MARKET)
    assert fill.status == "PARTIALLY_FILLED"
    view, report = orders.ended(view, OrderFilled(3, SYMBOL, 2, "c2", 7, "BUY", 1, 10_000))
    assert report is not None and report.status == "FILLED"


def test_cancel_and_expiries() -> None:
    view, _ = orders.accepted(accept(3, qty=4))
    _, report = orders.ended(view, OrderCanceled(5, SYMBOL, 3, "c3", 7, "BUY", 0, 0))
    assert report is not None and (report.execution_type, report.status) == ("CANCELED", "CANCELED")
    _, stp = orders.ended(view, OrderExpired(5, SYMBOL, 3, "c3", 7, "BUY", 0, 0, "EXPIRED_IN_MATCH", "SELF_TRADE"))
    assert stp is not None and (stp.execution_type, stp.status, stp.expire_reason) == (
        "TRADE_PREVENTION", "EXPIRED_IN_MATCH", "SELF_TRADE")
    _, ioc = orders.ended(view, OrderExpired(5, SYMBOL, 3, "c3", 7, "BUY", 0, 0, "EXPIRED", "NOT_FILLED"))
    assert ioc is not None and (ioc.execution_type, ioc.status) == ("EXPIRED", "EXPIRED")
