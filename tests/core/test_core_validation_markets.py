"""Market configuration and the order filters."""

from __future__ import annotations

from decimal import Decimal

import pytest
from core_helpers import TEST_MARKETS, market_order, order

from pipeline.core.markets import MarketConfigError, load_markets, markets_from_dict
from pipeline.core.messages import BINANCE_ERRORS, RejectReason
from pipeline.core.validation import check_order


def test_default_markets_load_with_integer_units() -> None:
    markets = load_markets()
    assert len(markets) == 10 and {"BTCUSDT", "ETHUSDT", "ETHBTC"} <= set(markets)
    btc = markets["BTCUSDT"]
    assert btc.price_to_ticks(Decimal("60000.01")) == 6_000_001
    assert btc.price_to_ticks(Decimal("60000.001")) is None
    assert btc.qty_to_lots(Decimal("0.5")) == 50_000
    assert btc.qty_to_lots(Decimal("0.000001")) is None
    # 0.5 BTC at 60000.01 USDT = 30000.005 USDT = 3_000_000_500_000 units of 1e-8
    assert btc.quote_amount(6_000_001, 50_000) == 3_000_000_500_000
    assert btc.base_amount(50_000) == 50_000_000
    assert btc.ticks_to_price(6_000_001) == Decimal("60000.01")
    assert btc.min_notional_quote == 500_000_000


def test_overrides_replace_fields() -> None:
    markets = load_markets(overrides={"BTCUSDT": {"status": "HALT"}})
    assert markets["BTCUSDT"].status == "HALT" and markets["ETHUSDT"].status == "TRADING"
    with pytest.raises(MarketConfigError):
        load_markets(overrides={"NOPE": {"status": "HALT"}})


@pytest.mark.parametrize("field, value", [
    ("lot_size", "0.5"),  # half a minimal unit of a 0-decimal asset
    ("tick_size", "0.1"),  # tick x lot not whole quote units
    ("maker_fee_ppm", 3000),  # maker above taker
    ("min_qty", "0"),
    ("base", "NOPE"),
])
def test_inconsistent_markets_are_refused(field: str, value: object) -> None:
    raw = {"assets": TEST_MARKETS["assets"], "markets": [{**TEST_MARKETS["markets"][0], field: value}]}
    with pytest.raises(MarketConfigError):
        markets_from_dict(raw)


@pytest.mark.parametrize("o, reason", [
    (order(1, "BUY", 100, 1), None),
    (order(1, "BUY", 0, 1), "PRICE_FILTER"),
    (order(1, "BUY", 100, 0), "LOT_SIZE"),
    (order(1, "BUY", 100, 1_000_001), "LOT_SIZE"),
    (order(1, "BUY", 100, 1, client_order_id=""), "INVALID_CLIENT_ORDER_ID"),
    (order(1, "BUY", 100, 1, client_order_id="x" * 37), "INVALID_CLIENT_ORDER_ID"),
    (order(1, "BUY", 100, 1, quote_qty=5), "INVALID_ORDER"),
    (order(1, "BUY", 100, 1, order_type="LIMIT_MAKER", time_in_force="IOC"), "INVALID_ORDER"),
    (order(0, "BUY", 100, 1), "INVALID_ORDER"),
    (market_order(1, "BUY", 5), None),
    (market_order(1, "BUY", quote=50), None),
    (market_order(1, "BUY"), "INVALID_ORDER"),
    (market_order(1, "BUY", 5, quote=50), "INVALID_ORDER"),
    (market_order(1, "BUY", 5, price_ticks=100), "INVALID_ORDER"),
])
def test_order_filters(markets: dict, o: object, reason: RejectReason | None) -> None:
    assert check_order(o, markets["TSTUSD"]) == reason  # type: ignore[arg-type]


def test_min_notional_and_halt() -> None:
    raw = {"assets": TEST_MARKETS["assets"],
           "markets": [{**TEST_MARKETS["markets"][0], "min_notional": "100"}]}
    market = markets_from_dict(raw)["TSTUSD"]
    assert check_order(order(1, "BUY", 99, 1), market) == "MIN_NOTIONAL"
    assert check_order(order(1, "BUY", 50, 2), market) is None
    assert check_order(market_order(1, "BUY", quote=99), market) == "MIN_NOTIONAL"
    assert check_order(order(1, "BUY", 50, 2), market.with_status("HALT")) == "MARKET_HALTED"


def test_every_reject_reason_has_a_binance_code() -> None:
    from typing import get_args

    assert set(get_args(RejectReason)) == set(BINANCE_ERRORS)
