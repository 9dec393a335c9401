"""Cancel-replace funded by the old order's hold, and idempotent deposits/withdrawals by request id.

Market OTHUSD: 1 tick = 1 USD, 1 lot = 1 OTH, no fees (so holds are exactly price x qty).
"""

from __future__ import annotations

import msgspec
import pytest
from core_helpers import order

from pipeline.core.accounts import Accounts
from pipeline.core.engine import MatchingEngine
from pipeline.core.exchange import ExchangeCore
from pipeline.core.markets import Market
from pipeline.core.messages import (
    BalanceChanged,
    CancelReplace,
    Deposit,
    HoldReleased,
    HoldTaken,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    TransferRejected,
    Withdraw,
)
from pipeline.core.reference import ReferenceMatcher

SYMBOL = "OTHUSD"


def oth(order_id: int, side: str, price: int, qty: int, account: int = 1) -> object:
    return order(order_id, side, price, qty, account=account, symbol=SYMBOL)


def replace(old_id: int, new_id: int, price: int, qty: int, side: str = "BUY") -> CancelReplace:
    return CancelReplace(ts=new_id, account_id=1, symbol=SYMBOL,
                         new_order=order(new_id, side, price, qty, symbol=SYMBOL), cancel_order_id=old_id)


@pytest.fixture
def core(markets: dict[str, Market]) -> ExchangeCore:
    core = ExchangeCore(markets)
    core.process(Deposit(ts=0, account_id=1, asset="USD", amount=1_000))
    core.process(Deposit(ts=0, account_id=2, asset="OTH", amount=1_000))
    assert isinstance(core.process(oth(1, "BUY", 100, 10))[-1], OrderAccepted)  # holds all 1000 USD
    return core


def test_replace_is_funded_by_the_old_orders_hold(core: ExchangeCore) -> None:
    # Before: account 1 has 0 USD available, 1000 held by #1 (BUY 10 @ 100).
    # Replace #1 by BUY 10 @ 99 (990): only the old hold can pay for it.
    events = core.process(replace(1, 2, 99, 10))
    kinds = [type(e) for e in events]
    assert kinds[:2] == [HoldTaken, BalanceChanged] and events[0].amount == 0  # nothing from available
    assert OrderCanceled in kinds and OrderAccepted in kinds
    released = next(e for e in events if isinstance(e, HoldReleased))
    moved = [e for e in events if isinstance(e, HoldTaken)][-1]
    assert (released.order_id, released.amount) == (1, 1000)
    assert (moved.order_id, moved.amount) == (2, 990)
    # After: #2 holds 990, the 10 left over are available again; #1 holds nothing.
    assert core.accounts.balance(1, "USD") == (10, 990)
    assert core.accounts.hold_of(SYMBOL, 2) == 990 and core.accounts.hold_of(SYMBOL, 1) is None
    assert [o.order_id for o in core.matcher.open_orders(SYMBOL)] == [2]
    core.accounts.validate_internal_state()


def test_replace_uses_available_first_and_the_old_hold_only_for_the_rest(core: ExchangeCore) -> None:
    core.process(Deposit(ts=0, account_id=1, asset="USD", amount=500))
    events = core.process(replace(1, 2, 120, 10))  # needs 1200: 500 available + 700 of the old 1000
    assert events[0] == HoldTaken(ts=2, account_id=1, symbol=SYMBOL, order_id=2, asset="USD", amount=500)
    assert core.accounts.balance(1, "USD") == (300, 1200)
    assert core.accounts.hold_of(SYMBOL, 2) == 1200
    core.accounts.validate_internal_state()


def test_replace_that_the_old_hold_cannot_cover_changes_nothing(core: ExchangeCore) -> None:
    before = core.accounts.state_hash()
    events = core.process(replace(1, 2, 101, 10))  # 1010 > 1000
    assert events == [OrderRejected(ts=2, symbol=SYMBOL, order_id=2, client_order_id="c2", account_id=1,
                                    reason="INSUFFICIENT_FUNDS")]
    assert core.accounts.state_hash() == before
    assert [o.order_id for o in core.matcher.open_orders(SYMBOL)] == [1]


def test_the_old_hold_of_another_asset_does_not_count(core: ExchangeCore) -> None:
    events = core.process(replace(1, 2, 100, 1, side="SELL"))  # needs OTH; #1 holds USD
    assert isinstance(events[-1], OrderRejected) and events[-1].reason == "INSUFFICIENT_FUNDS"


@pytest.mark.parametrize("matcher", [MatchingEngine, ReferenceMatcher])
def test_old_order_traded_after_the_pledge_refuses_the_replace(markets: dict[str, Market], matcher: type) -> None:
    """Pipelined: risk pledged #1's hold, then a fill of #1 reached the matcher first."""
    engine = matcher(markets)
    accounts = Accounts(markets)
    accounts.deposit(Deposit(ts=0, account_id=1, asset="USD", amount=1_000))
    first, _ = accounts.take_hold(oth(1, "BUY", 100, 10))  # type: ignore[arg-type]
    assert first is not None
    engine.process(first)
    command, _ = accounts.take_replace_hold(replace(1, 2, 99, 10))
    assert command is not None and command.old_hold_used == 990 and command.old_filled_lots == 0
    engine.process(oth(3, "SELL", 100, 4, account=2))  # #1 trades 4 lots before the replace arrives
    events = engine.process(command)
    assert events == [OrderRejected(ts=2, symbol=SYMBOL, order_id=2, client_order_id="c2", account_id=1,
                                    reason="INSUFFICIENT_FUNDS")]
    assert [(o.order_id, o.remaining_lots) for o in engine.open_orders(SYMBOL)] == [(1, 6)]
    # the same command, had #1 not traded since, replaces it
    untouched = msgspec.structs.replace(command, old_filled_lots=4)
    assert isinstance(engine.process(untouched)[0], OrderCanceled)


# ------------------------------------------------------------------ request ids


def test_a_repeated_deposit_request_is_applied_once(markets: dict[str, Market]) -> None:
    accounts = Accounts(markets)
    deposit = Deposit(ts=0, account_id=1, asset="USD", amount=100, request_id="r1")
    assert isinstance(accounts.deposit(deposit)[0], BalanceChanged)
    again = accounts.deposit(msgspec.structs.replace(deposit, ts=5))
    assert again == [TransferRejected(ts=5, account_id=1, asset="USD", amount=100, request_id="r1",
                                      reason="DUPLICATE_REQUEST_ID")]
    assert accounts.balance(1, "USD") == (100, 0)
    # a withdrawal cannot reuse the id either; without an id nothing is remembered
    withdraw = Withdraw(ts=6, account_id=1, asset="USD", amount=10, request_id="r1")
    assert isinstance(accounts.withdraw(withdraw)[0], TransferRejected)
    plain = Deposit(ts=7, account_id=1, asset="USD", amount=1)
    assert isinstance(accounts.deposit(plain)[0], BalanceChanged)
    assert isinstance(accounts.deposit(plain)[0], BalanceChanged)
    assert accounts.balance(1, "USD") == (102, 0)


def test_refused_transfers_do_not_reserve_their_id_and_ids_survive_restore(markets: dict[str, Market]) -> None:
    accounts = Accounts(markets)
    withdraw = Withdraw(ts=0, account_id=1, asset="USD", amount=50, request_id="w1")
    assert accounts.withdraw(withdraw)[0].reason == "INSUFFICIENT_FUNDS"  # type: ignore[union-attr]
    accounts.deposit(Deposit(ts=1, account_id=1, asset="USD", amount=100, request_id="d1"))
    assert isinstance(accounts.withdraw(withdraw)[0], BalanceChanged)  # now it applies
    restored = Accounts.restore(markets, accounts.snapshot())
    assert restored.state_hash() == accounts.state_hash()
    assert restored.withdraw(withdraw)[0].reason == "DUPLICATE_REQUEST_ID"  # type: ignore[union-attr]
    assert restored.balance(1, "USD") == (50, 0)
