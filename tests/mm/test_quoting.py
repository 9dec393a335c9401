"""The market maker's pure logic: rules, walk, ladder, skew, limits and reconciliation (no I/O)."""

from __future__ import annotations

import itertools
import random
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from infra.mm.config import MarketMakerConfig, QuoteParams
from infra.mm.quoting import (
    BPS,
    Ledger,
    OpenOrder,
    Quote,
    RandomWalk,
    inventory_limits,
    inventory_skew,
    ladder,
    plan_market,
    reconcile,
)
from infra.mm.rules import MarketRules, RulesError


def symbol_info(symbol: str = "BTCUSDT", base: str = "BTC", quote: str = "USDT", tick: str = "0.01",
                step: str = "0.00001", min_notional: str = "5", fee: str = "0.001",
                max_qty: str = "9000") -> dict[str, Any]:
    """An `exchangeInfo` entry shaped like the API's."""
    return {"symbol": symbol, "status": "TRADING", "baseAsset": base, "quoteAsset": quote,
            "baseAssetPrecision": 8, "quoteAssetPrecision": 8, "makerCommission": fee, "takerCommission": fee,
            "filters": [{"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000",
                         "tickSize": tick},
                        {"filterType": "LOT_SIZE", "minQty": step, "maxQty": max_qty, "stepSize": step},
                        {"filterType": "NOTIONAL", "minNotional": min_notional}]}


BTC = MarketRules.from_symbol_info(symbol_info())
DOGE = MarketRules.from_symbol_info(symbol_info("DOGEUSDT", "DOGE", tick="0.00001", step="1",
                                                        max_qty="90000000"))


def test_rules_convert_between_integers_and_decimal_strings() -> None:
    assert BTC.ticks("65000.019") == 6_500_001
    assert BTC.ticks("65000.011", up=True) == 6_500_002
    assert BTC.price_str(6_500_001) == "65000.01"
    assert BTC.qty_str(123) == "0.00123"
    assert BTC.lots("0.000019") == 1
    assert BTC.quote_units(6_500_000, 100) == 65_000 * 10**8 // 1000  # 0.001 BTC at 65000 = 65 USDT
    assert BTC.min_notional_units == 5 * 10**8
    assert BTC.maker_fee_ppm == 1000
    assert BTC.min_lots_at(6_500_000) == 8  # 8 x 0.00001 x 65000 = 5.2 >= 5


def test_rules_refuse_an_inconsistent_market() -> None:
    info = symbol_info()
    info["filters"] = info["filters"][:1]
    with pytest.raises(RulesError):
        MarketRules.from_symbol_info(info)


def test_random_walk_is_seeded_integer_and_bounded() -> None:
    a = RandomWalk(6_500_000, 3, 5_000, random.Random(1))
    b = RandomWalk(6_500_000, 3, 5_000, random.Random(1))
    path_a = [a.step() for _ in range(2_000)]
    assert path_a == [b.step() for _ in range(2_000)]
    assert all(isinstance(p, int) for p in path_a)
    steps = [abs(y - x) for x, y in itertools.pairwise(path_a)]
    assert max(steps) <= 6_500_000 * 4 // BPS  # step (3 bps) plus a small pull
    assert len(set(path_a)) > 100  # it moves
    assert min(path_a) > 6_500_000 * 9 // 10 and max(path_a) < 6_500_000 * 11 // 10  # reversion keeps it near
    tiny = RandomWalk(1, 3, 0, random.Random(2))
    assert all(tiny.step() >= 1 for _ in range(100))


def test_ladder_levels_spreads_and_sizes() -> None:
    params = QuoteParams(bid_spread_bps=10, ask_spread_bps=20, order_levels=3, level_spacing_bps=10,
                         order_notional_multiple=4, level_amount_step_pct=50)
    ref = 6_500_000
    quotes = ladder(BTC, params, ref)
    bids = [q for q in quotes if q.side == "BUY"]
    asks = [q for q in quotes if q.side == "SELL"]
    assert [q.level for q in bids] == [0, 1, 2] and [q.level for q in asks] == [0, 1, 2]
    assert [q.price_ticks for q in bids] == [6_493_500, 6_487_000, 6_480_500]  # 10, 20, 30 bps below
    assert [q.price_ticks for q in asks] == [6_513_000, 6_519_500, 6_526_000]  # 20, 30, 40 bps above
    first = -(-20 * 10**8 // BTC.quote_units(ref, 1))  # 4 x 5 USDT
    assert [q.lots for q in bids] == [first, first * 150 // 100, first * 200 // 100]
    for q in quotes:
        assert BTC.quote_units(q.price_ticks, q.lots) >= BTC.min_notional_units


def test_ladder_on_a_coarse_tick_keeps_levels_apart_and_outside_the_spread() -> None:
    params = QuoteParams(bid_spread_bps=1, ask_spread_bps=1, order_levels=4, level_spacing_bps=1)
    ref = 7  # 0.00007: one tick is far more than 1 bps
    quotes = ladder(DOGE, params, ref)
    bids = [q.price_ticks for q in quotes if q.side == "BUY"]
    asks = [q.price_ticks for q in quotes if q.side == "SELL"]
    assert bids == [6, 5, 4, 3] and asks == [8, 9, 10, 11]
    assert all(DOGE.quote_units(q.price_ticks, q.lots) >= DOGE.min_notional_units for q in quotes)
    small = MarketRules.from_symbol_info(symbol_info("DOGEUSDT", "DOGE", tick="0.00001", step="1", max_qty="9000"))
    assert ladder(small, params, ref) == []  # 5 USDT at 0.00007 needs more than the maximum quantity


def test_skew_values() -> None:
    assert inventory_skew(50, 0, 100, 50) == 0
    assert inventory_skew(100, 0, 100, 50) == 1_000_000
    assert inventory_skew(0, 0, 100, 50) == -1_000_000
    assert inventory_skew(75, 0, 100, 50) == 500_000
    assert inventory_skew(500, 0, 100, 50) == 1_000_000  # clamped
    assert inventory_skew(40, 0, 100, 80) == -500_000
    assert inventory_skew(5, 5, 5, 50) == 0


def test_long_inventory_shifts_prices_down_and_sizes_toward_selling() -> None:
    params = QuoteParams(skew_price_bps=10, order_levels=1)
    ref = 6_500_000
    flat = ladder(BTC, params, ref, 0)
    long = ladder(BTC, params, ref, 500_000)
    bid0, ask0 = flat
    bid1, ask1 = long
    assert bid1.price_ticks < bid0.price_ticks and ask1.price_ticks < ask0.price_ticks
    center = ref - ref * 5 * 10 // (10 * BPS)  # half skew x 10 bps = 5 bps lower
    assert (bid1.price_ticks, ask1.price_ticks) == (center * 9_990 // BPS, -(-center * 10_010 // BPS))
    assert bid1.lots < bid0.lots < ask1.lots
    full = ladder(BTC, params, ref, 1_000_000)
    assert [q.side for q in full] == ["SELL"]  # nothing left to buy with
    off = ladder(BTC, msgspec.structs.replace(params, inventory_skew=False), ref, 1_000_000)
    assert off == flat


def test_ledger_keeps_worst_case_balances_inside_limits() -> None:
    totals = {"BTC": 10**8, "USDT": 100_000 * 10**8}  # 1 BTC, 100k USDT
    limits = inventory_limits(totals, 50)
    assert limits["BTC"] == (5 * 10**7, 15 * 10**7)
    ledger = Ledger(totals, limits)
    buy = Quote("BUY", 0, 6_500_000, 10_000)  # 0.1 BTC
    taken = [ledger.add(BTC, buy) for _ in range(8)]
    assert taken == [True] * 5 + [False] * 3  # 1 + 5 x 0.1 = 1.5 BTC at most
    assert ledger.high["BTC"] <= limits["BTC"][1]
    sell = Quote("SELL", 0, 6_600_000, 20_000)
    assert [ledger.add(BTC, sell) for _ in range(4)] == [True, True, False, False]
    assert ledger.low["BTC"] >= limits["BTC"][0]
    # fees count on the buying side: the quote asset's floor holds with them
    assert ledger.low["USDT"] == totals["USDT"] - 5 * (6_500 * 10**8 + 6_500 * 10**8 // 1000)


def test_reconcile_keeps_close_orders_and_replaces_the_rest() -> None:
    wanted = [Quote("BUY", 0, 1000, 10), Quote("SELL", 0, 1010, 10), Quote("BUY", 1, 990, 15)]
    open_orders = [OpenOrder(1, "BUY", 1001, 10),  # within tolerance: kept
                   OpenOrder(2, "SELL", 1030, 10),  # too far: cancelled
                   OpenOrder(3, "BUY", 990, 4),  # mostly filled: replaced
                   OpenOrder(4, "BUY", 500, 10)]  # stale: cancelled
    plan = reconcile(open_orders, wanted, {1000: 1, 1010: 1, 990: 1})
    assert [o.order_id for o in plan.keep] == [1]
    assert sorted(o.order_id for o in plan.cancel) == [2, 3, 4]
    assert plan.place == [Quote("SELL", 0, 1010, 10), Quote("BUY", 1, 990, 15)]


def test_plan_counts_every_open_order_before_new_ones() -> None:
    params = QuoteParams(order_levels=2)
    ref = 6_500_000
    wanted = ladder(BTC, params, ref)
    bid_lots = sum(q.lots for q in wanted if q.side == "BUY")
    totals = {"BTC": 10**8, "USDT": 10**14}
    # the BTC ceiling leaves room for the stale bids plus only part of the new ones
    stale = [OpenOrder(i, "BUY", ref * 9 // 10, bid_lots) for i in range(1, 3)]
    limits = {"BTC": (0, 10**8 + BTC.base_units(2 * bid_lots + wanted[0].lots))}
    plan = plan_market(BTC, params, ref, stale, Ledger(totals, limits), 0)
    assert {o.order_id for o in plan.cancel} == {1, 2}
    assert [q for q in plan.place if q.side == "BUY"] == [wanted[0]]  # the inner bid fits, the outer not
    assert [q for q in plan.place if q.side == "SELL"] == [q for q in wanted if q.side == "SELL"]


def test_config_overrides_per_market_are_validated() -> None:
    config = MarketMakerConfig(overrides={"BTCUSDT": {"bid_spread_bps": 4, "order_levels": 5}})
    assert config.params_for("BTCUSDT").bid_spread_bps == 4
    assert config.params_for("ETHUSDT") == config.quote
    with pytest.raises(msgspec.ValidationError):
        MarketMakerConfig(overrides={"BTCUSDT": {"order_levels": 0}}).params_for("BTCUSDT")
    with pytest.raises(ValueError):
        QuoteParams(bid_spread_bps=0)
    assert Decimal(QuoteParams().bid_spread_bps) / BPS == Decimal("0.001")
