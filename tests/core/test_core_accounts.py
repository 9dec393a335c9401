"""Accounts: holds per order type, settlement with fees, release, withdrawals, no negatives.

Test market TSTUSD: 1 tick = 1 USD, 1 lot = 1 TST (0 decimals), maker fee 0.1%, taker fee 0.2%.
"""

from __future__ import annotations

import pytest
from core_helpers import SYMBOL, market_order, order
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.accounts import Accounts, max_notional_within
from pipeline.core.errors import StateError
from pipeline.core.markets import Market, worst_case_fee
from pipeline.core.messages import (
    Deposit,
    FeeCharged,
    FundsSettled,
    HoldReleased,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    TradeExecuted,
    TransferRejected,
    Withdraw,
)

FEE_ACCOUNT = 0


@pytest.fixture
def accounts(markets: dict[str, Market]) -> Accounts:
    accounts = Accounts(markets, FEE_ACCOUNT)
    for account in (1, 2):
        accounts.deposit(Deposit(ts=0, account_id=account, asset="USD", amount=100_000))
        accounts.deposit(Deposit(ts=0, account_id=account, asset="TST", amount=1_000))
    return accounts


def held(accounts: Accounts, o: PlaceOrder) -> PlaceOrder:
    placed, events = accounts.take_hold(o)
    assert placed is not None, events
    return placed


def trade(trade_id: int, price: int, qty: int, taker: PlaceOrder, maker: PlaceOrder) -> TradeExecuted:
    return TradeExecuted(ts=9, symbol=SYMBOL, trade_id=trade_id, price_ticks=price, qty_lots=qty,
                         quote_amount=price * qty, taker_side=taker.side, maker_order_id=maker.order_id,
                         maker_account_id=maker.account_id, taker_order_id=taker.order_id,
                         taker_account_id=taker.account_id)


def test_limit_buy_holds_notional_plus_worst_case_taker_fee(accounts: Accounts) -> None:
    placed = held(accounts, order(1, "BUY", 101, 7))  # 707 + ceil(707 * 0.2%) = 707 + 2
    assert placed.hold == 709
    assert accounts.balance(1, "USD") == (100_000 - 709, 709)


def test_limit_maker_buy_holds_only_the_maker_fee(accounts: Accounts) -> None:
    assert held(accounts, order(1, "BUY", 1000, 10, order_type="LIMIT_MAKER")).hold == 10_000 + 10


def test_sell_holds_the_base_quantity(accounts: Accounts) -> None:
    assert held(accounts, order(1, "SELL", 50, 30)).hold == 30
    assert accounts.balance(1, "TST") == (970, 30)


def test_market_buy_by_quote_holds_quote_plus_fee_and_budgets_the_quote(accounts: Accounts) -> None:
    placed = held(accounts, market_order(1, "BUY", quote=5_000))
    assert (placed.hold, placed.quote_budget) == (5_010, 5_000)


def test_market_buy_by_quantity_holds_all_available_quote(accounts: Accounts) -> None:
    placed = held(accounts, market_order(1, "BUY", 10))
    assert placed.hold == 100_000
    assert placed.quote_budget + worst_case_fee(placed.quote_budget, 2000) <= 100_000
    assert accounts.balance(1, "USD") == (0, 100_000)


def test_market_sell_by_quote_holds_all_base_in_whole_lots(accounts: Accounts) -> None:
    placed = held(accounts, market_order(1, "SELL", quote=500))
    assert (placed.hold, placed.base_budget_lots) == (1_000, 1_000)


def test_insufficient_funds_are_rejected_and_nothing_is_held(accounts: Accounts) -> None:
    placed, events = accounts.take_hold(order(1, "SELL", 50, 1_001))
    assert placed is None and isinstance(events[0], OrderRejected)
    assert events[0].reason == "INSUFFICIENT_FUNDS"
    assert accounts.balance(1, "TST") == (1_000, 0)


def test_trade_settles_both_sides_and_pays_fees_to_the_fee_account(accounts: Accounts) -> None:
    maker = held(accounts, order(1, "SELL", 100, 10, account=1))
    taker = held(accounts, order(2, "BUY", 105, 4, account=2))  # holds 420 + 1
    events = accounts.settle_trade(trade(1, 100, 4, taker, maker))
    settled = events[0]
    assert isinstance(settled, FundsSettled)
    # buyer (taker) fee ceil(400 * 0.2%) = 1; seller (maker) fee ceil(400 * 0.1%) = 1
    assert (settled.buyer_fee, settled.seller_fee) == (1, 1)
    assert [e.amount for e in events if isinstance(e, FeeCharged)] == [1, 1]
    assert accounts.balance(2, "TST") == (1_004, 0)
    assert accounts.balance(2, "USD") == (100_000 - 421, 421 - 401)
    assert accounts.balance(1, "USD") == (100_000 + 399, 0)
    assert accounts.balance(1, "TST") == (990, 6)
    assert accounts.balance(FEE_ACCOUNT, "USD") == (2, 0)
    # the taker ends: what its hold no longer needs (the better price) comes back
    released = accounts.settle(OrderFilled(ts=10, symbol=SYMBOL, order_id=2, client_order_id="c2",
                                           account_id=2, side="BUY", filled_lots=4, filled_quote=400))
    assert isinstance(released[0], HoldReleased) and released[0].amount == 20
    assert accounts.balance(2, "USD") == (100_000 - 401, 0)
    accounts.validate_internal_state()


def test_fees_are_rounded_up_once_per_order_not_per_fill(accounts: Accounts) -> None:
    maker = held(accounts, order(1, "SELL", 10, 100, account=1))
    taker = held(accounts, order(2, "BUY", 10, 100, account=2))  # holds 1000 + 2
    fees = []
    for i in range(100):  # 100 fills of 10 USD: per-fill rounding would charge 100
        events = accounts.settle_trade(trade(i + 1, 10, 1, taker, maker))
        fees.append(sum(e.amount for e in events if isinstance(e, FeeCharged) and e.account_id == 2))
    assert sum(fees) == 2 == worst_case_fee(1000, 2000)
    assert accounts.hold_of(SYMBOL, 2) == 0
    accounts.validate_internal_state()


def test_cancel_releases_the_whole_hold(accounts: Accounts) -> None:
    held(accounts, order(1, "BUY", 100, 10))
    accounts.settle(OrderCanceled(ts=2, symbol=SYMBOL, order_id=1, client_order_id="c1", account_id=1,
                                  side="BUY", filled_lots=0, filled_quote=0))
    assert accounts.balance(1, "USD") == (100_000, 0)
    assert accounts.hold_of(SYMBOL, 1) is None


def test_withdraw_only_from_available(accounts: Accounts) -> None:
    held(accounts, order(1, "SELL", 100, 600))
    events = accounts.withdraw(Withdraw(ts=1, account_id=1, asset="TST", amount=401))
    assert isinstance(events[0], TransferRejected) and events[0].reason == "INSUFFICIENT_FUNDS"
    accounts.withdraw(Withdraw(ts=1, account_id=1, asset="TST", amount=400))
    assert accounts.balance(1, "TST") == (0, 600)


def test_deposit_of_unknown_asset_or_bad_amount_is_rejected(accounts: Accounts) -> None:
    for cmd in (Deposit(ts=1, account_id=1, asset="XYZ", amount=5),
                Deposit(ts=1, account_id=1, asset="USD", amount=0),
                Deposit(ts=1, account_id=1, asset="USD", amount=-5)):
        assert isinstance(accounts.deposit(cmd)[0], TransferRejected)
    assert accounts.balance(1, "USD") == (100_000, 0)


def test_a_trade_beyond_the_hold_is_a_bug_and_raises(accounts: Accounts) -> None:
    maker = held(accounts, order(1, "SELL", 100, 1, account=1))
    taker = held(accounts, order(2, "BUY", 100, 1, account=2))
    with pytest.raises(StateError):
        accounts.settle_trade(trade(1, 100, 2, taker, maker))


def test_conservation_and_snapshot_restore(accounts: Accounts, markets: dict[str, Market]) -> None:
    before = accounts.total_by_asset()
    maker = held(accounts, order(1, "SELL", 100, 10, account=1))
    taker = held(accounts, order(2, "BUY", 105, 4, account=2))
    accounts.settle_trade(trade(1, 100, 4, taker, maker))
    assert accounts.total_by_asset() == before
    restored = Accounts.restore(markets, accounts.snapshot())
    assert restored.state_hash() == accounts.state_hash()
    restored.validate_internal_state()


@given(funds=st.integers(0, 10**15), fee_ppm=st.integers(0, 999_999))
def test_max_notional_within_is_the_largest_that_fits(funds: int, fee_ppm: int) -> None:
    n = max_notional_within(funds, fee_ppm)
    assert n + worst_case_fee(n, fee_ppm) <= funds
    assert n + 1 + worst_case_fee(n + 1, fee_ppm) > funds
