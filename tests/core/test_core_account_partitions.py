"""Accounts split over partitions settle trades leg by leg; merged, they equal one `Accounts`.

Pure core: the routing below is what the pipeline does with topics (risk on the
account's partition, match's trades to the buyer's and the seller's partitions, order
ends to the account's, the fees each partition charged to the fee account's partition).
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.flows import funding, order_flow
from pipeline.core.accounts import Accounts, AccountsSnapshot, BalanceState, merge_snapshots
from pipeline.core.engine import MatchingEngine
from pipeline.core.errors import StateError
from pipeline.core.markets import Market
from pipeline.core.messages import (
    CancelReplace,
    Deposit,
    FeeCharged,
    FeesTransferred,
    LegSettled,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    TradeExecuted,
    Withdraw,
)
from tests.core.core_helpers import order, sample_markets

ENDS = (OrderFilled, OrderCanceled, OrderExpired, OrderRejected)


def run_partitioned(markets: dict[str, Market], commands: list[Any],
                    partitions: int) -> tuple[list[Accounts], list[Any]]:
    """The commands through `partitions` accounts partitions and one engine; the partitions and their events."""
    parts = [Accounts(markets, partition=p, partitions=partitions) for p in range(partitions)]
    engine = MatchingEngine(markets)
    events: list[Any] = []

    def part(account_id: int) -> Accounts:
        return parts[account_id % partitions]

    for command in commands:
        if isinstance(command, Deposit):
            events += part(command.account_id).deposit(command)
            continue
        if isinstance(command, Withdraw):
            events += part(command.account_id).withdraw(command)
            continue
        if isinstance(command, PlaceOrder | CancelReplace):
            accounts = part(command.account_id)
            held, taken = (accounts.take_hold(command) if isinstance(command, PlaceOrder)
                           else accounts.take_replace_hold(command))
            events += taken
            if held is None:
                continue
            command = held
        for event in engine.process(command):
            if type(event) is TradeExecuted:
                for p in sorted({event.maker_account_id % partitions, event.taker_account_id % partitions}):
                    events += parts[p].settle_legs(event)
            elif isinstance(event, ENDS):
                events += part(event.account_id).release(event.ts, event.symbol, event.order_id)
        fee_part = part(parts[0].fee_account_id)
        for p, accounts in enumerate(parts):  # end of a batch: the fees go to the fee account's partition
            for asset, amount in accounts.take_fees_due():
                events += fee_part.credit_fees(FeesTransferred(command.ts, accounts.fee_account_id, asset, amount, p))
    return parts, events


def run_whole(markets: dict[str, Market], commands: list[Any]) -> Accounts:
    accounts, engine = Accounts(markets), MatchingEngine(markets)
    for command in commands:
        if isinstance(command, Deposit | Withdraw):
            accounts.deposit(command) if isinstance(command, Deposit) else accounts.withdraw(command)
            continue
        if isinstance(command, PlaceOrder | CancelReplace):
            held, _ = (accounts.take_hold(command) if isinstance(command, PlaceOrder)
                       else accounts.take_replace_hold(command))
            if held is None:
                continue
            command = held
        for event in engine.process(command):
            accounts.settle(event)
    return accounts


@pytest.mark.parametrize(("partitions", "seed"), [(2, 1), (3, 2), (4, 3), (7, 4)])
def test_partitions_merged_equal_one_accounts(partitions: int, seed: int) -> None:
    markets = sample_markets()
    commands: list[Any] = [*funding(markets, range(1, 9)), *order_flow(markets, 3000, seed=seed)]
    parts, events = run_partitioned(markets, commands, partitions)
    whole = run_whole(markets, commands)
    for accounts in parts:
        accounts.validate_internal_state()
        assert {b.account_id % partitions for b in accounts.snapshot().balances} <= {accounts.partition}
    merged = Accounts.restore(markets, merge_snapshots([a.snapshot() for a in parts]))
    assert merged.state_hash() == whole.state_hash()
    assert merged.total_by_asset() == whole.total_by_asset()
    legs = [e for e in events if type(e) is LegSettled]
    assert len(legs) > 300 and len({(e.symbol, e.trade_id, e.side) for e in legs}) == len(legs)
    charged = sum(e.amount for e in events if type(e) is FeeCharged)
    assert charged > 0
    assert sum(e.amount for e in events if type(e) is FeesTransferred) == charged
    fee_balances = [b for b in merged.snapshot().balances if b.account_id == whole.fee_account_id]
    assert sum(b.available for b in fee_balances) == charged and all(b.locked == 0 for b in fee_balances)


def test_a_leg_settles_only_the_sides_its_partition_owns() -> None:
    markets = sample_markets()
    parts = [Accounts(markets, partition=p, partitions=2) for p in range(2)]
    engine = MatchingEngine(markets)
    for account in (1, 2):
        for asset in ("TST", "USD"):
            parts[account % 2].deposit(Deposit(1, account, asset, 10**6, f"{account}-{asset}"))
    trades: list[TradeExecuted] = []
    for placed in (order(1, "SELL", 100, 5, account=1), order(2, "BUY", 100, 5, account=2)):
        held, _ = parts[placed.account_id % 2].take_hold(placed)
        assert held is not None
        trades += [e for e in engine.process(held) if type(e) is TradeExecuted]
    (trade,) = trades
    seller_side = parts[1].settle_legs(trade)
    assert [e.side for e in seller_side if type(e) is LegSettled] == ["SELL"]
    assert {getattr(e, "account_id", 1) for e in seller_side} == {1}
    assert parts[1].balance(1, "USD") == (10**6 + 500 - 1, 0)  # maker fee 0.1% of 500, rounded up
    buyer_side = parts[0].settle_legs(trade)
    assert [e.side for e in buyer_side if type(e) is LegSettled] == ["BUY"]
    assert {getattr(e, "account_id", 2) for e in buyer_side} == {2}
    assert parts[0].balance(2, "TST") == (10**6 + 5, 0)
    assert parts[0].take_fees_due() == [("USD", 1)] and parts[1].take_fees_due() == [("USD", 1)]
    assert parts[0].take_fees_due() == []


def test_fees_for_the_fee_account_are_refused_on_another_partition() -> None:
    markets = sample_markets()
    other = Accounts(markets, partition=1, partitions=2)
    with pytest.raises(StateError):
        other.credit_fees(FeesTransferred(1, 0, "USD", 5, 1))
    home = Accounts(markets, partition=0, partitions=2)
    with pytest.raises(StateError):
        home.credit_fees(FeesTransferred(1, 0, "USD", 0, 1))
    with pytest.raises(ValueError, match="partition 2"):
        Accounts(markets, partition=2, partitions=2)


def test_merging_refuses_a_balance_in_two_partitions() -> None:
    twice = AccountsSnapshot(0, [BalanceState(1, "USDT", 5, 0)], [])
    with pytest.raises(StateError):
        merge_snapshots([twice, twice])
