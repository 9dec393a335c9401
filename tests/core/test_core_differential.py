"""Differential property tests: the fast engine and the naive reference, driven through
validation, holds, matching and settlement with the same random order flow, must emit
identical events and books; invariants are checked after every command.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from core_helpers import sample_markets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.client_ids import ClientIdPolicy
from pipeline.core.engine import MatchingEngine
from pipeline.core.exchange import ExchangeCore
from pipeline.core.messages import (
    CancelAll,
    CancelOrder,
    CancelReplace,
    Command,
    Deposit,
    Event,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    PlaceOrder,
    SetMarketStatus,
    TradeExecuted,
    TransferRejected,
    Withdraw,
)
from pipeline.core.reference import ReferenceMatcher

SYMBOLS = ("TSTUSD", "OTHUSD")
ACCOUNTS = (1, 2, 3, 4)
POLICY = ClientIdPolicy(window_ns=3_000, max_ids=40)


class Flow:
    """A random but realistic order flow; remembers the ids it used so cancels can hit."""

    def __init__(self, seed: int, mid: int, spread: int) -> None:
        self.rng = random.Random(seed)
        self.mid, self.spread = mid, spread
        self.ts = 0
        self.next_id = 0
        self.placed: list[tuple[int, str, int, str]] = []  # (account, symbol, order id, client id)

    def commands(self, n: int) -> Iterator[Command]:
        rng = self.rng
        for asset in ("USD", "TST", "OTH"):
            for account in ACCOUNTS:
                yield Deposit(ts=0, account_id=account, asset=asset, amount=rng.randint(500, 20_000))
        for _ in range(n):
            self.ts += rng.randint(1, 40)
            yield self.command()

    def order(self, account: int, symbol: str) -> PlaceOrder:
        rng = self.rng
        self.next_id += 1
        roll = rng.random()
        side = rng.choice(("BUY", "SELL"))
        coid = f"c{self.next_id}"
        if self.placed and rng.random() < 0.05:  # reuse a client id: duplicate or expired
            coid = rng.choice(self.placed[-20:])[3]
        fields: dict[str, Any] = dict(ts=self.ts, account_id=account, symbol=symbol, order_id=self.next_id,
                                      client_order_id=coid, side=side,
                                      stp_mode=rng.choice(("NONE", "NONE", "EXPIRE_TAKER", "EXPIRE_MAKER",
                                                           "EXPIRE_BOTH")))
        away = rng.randint(1, self.spread + 1) if rng.random() < 0.8 else -rng.randint(0, self.spread)
        price = max(1, self.mid - away if side == "BUY" else self.mid + away)
        if roll < 0.75:
            fields.update(price_ticks=price, qty_lots=rng.randint(1, 12),
                          time_in_force=rng.choice(("GTC", "GTC", "GTC", "IOC", "FOK")))
        elif roll < 0.85:
            fields.update(order_type="LIMIT_MAKER", price_ticks=price, qty_lots=rng.randint(1, 12))
        elif roll < 0.93:
            fields.update(order_type="MARKET", qty_lots=rng.randint(1, 15))
        else:
            fields.update(order_type="MARKET", quote_qty=rng.randint(1, 1500))
        if rng.random() < 0.01:
            fields.update(qty_lots=0)  # invalid: rejected by validation
        order = PlaceOrder(**fields)
        self.placed.append((account, symbol, order.order_id, coid))
        return order

    def command(self) -> Command:
        rng = self.rng
        account = rng.choice(ACCOUNTS)
        symbol = rng.choice(SYMBOLS)
        roll = rng.random()
        if roll < 0.62 or not self.placed:
            return self.order(account, symbol)
        target = rng.choice(self.placed[-30:])
        if roll < 0.84:
            if rng.random() < 0.5:
                return CancelOrder(ts=self.ts, account_id=target[0], symbol=target[1], order_id=target[2])
            return CancelOrder(ts=self.ts, account_id=target[0], symbol=target[1], client_order_id=target[3])
        if roll < 0.86:
            return CancelAll(ts=self.ts, account_id=account, symbol=symbol)
        if roll < 0.93:
            new = self.order(target[0], target[1])
            return CancelReplace(ts=self.ts, account_id=target[0], symbol=target[1], new_order=new,
                                 cancel_order_id=target[2] if rng.random() < 0.7 else 0,
                                 cancel_client_order_id=target[3])
        # some transfers carry a request id from a small pool: repeats are refused (applied once)
        request = f"r{rng.randrange(40)}" if rng.random() < 0.3 else ""
        if roll < 0.96:
            return Deposit(ts=self.ts, account_id=account, asset=rng.choice(("USD", "TST", "OTH")),
                           amount=rng.randint(1, 5_000), request_id=request)
        if roll < 0.995:
            return Withdraw(ts=self.ts, account_id=account, asset=rng.choice(("USD", "TST", "OTH")),
                            amount=rng.randint(1, 5_000), request_id=request)
        return SetMarketStatus(ts=self.ts, symbol=symbol, status="HALT" if rng.random() < 0.1 else "TRADING")


class QuantityLedger:
    """Checks from the events alone that no lot is created or lost per order."""

    def __init__(self) -> None:
        self.qty: dict[tuple[str, int], int] = {}
        self.traded: dict[tuple[str, int], int] = {}
        self.traded_quote: dict[tuple[str, int], int] = {}

    def apply(self, events: list[Event]) -> None:
        for e in events:
            if isinstance(e, OrderAccepted):
                key = (e.symbol, e.order_id)
                assert key not in self.qty, f"order {key} accepted twice"
                self.qty[key] = e.qty_lots
                self.traded[key] = self.traded_quote[key] = 0
            elif isinstance(e, TradeExecuted):
                assert e.qty_lots > 0 and e.quote_amount > 0
                for order_id in (e.maker_order_id, e.taker_order_id):
                    key = (e.symbol, order_id)
                    self.traded[key] += e.qty_lots
                    self.traded_quote[key] += e.quote_amount
                    assert self.qty[key] == 0 or self.traded[key] <= self.qty[key], f"overfill of {key}"
            elif isinstance(e, OrderFilled | OrderCanceled | OrderExpired):
                key = (e.symbol, e.order_id)
                assert (e.filled_lots, e.filled_quote) == (self.traded[key], self.traded_quote[key])
                if isinstance(e, OrderFilled) and self.qty[key]:
                    assert e.filled_lots == self.qty[key]
                del self.qty[key]

    def check_open(self, core: ExchangeCore) -> None:
        open_keys = set()
        for symbol in SYMBOLS:
            for o in core.matcher.open_orders(symbol):
                key = (symbol, o.order_id)
                open_keys.add(key)
                assert o.qty_lots == self.qty[key]
                assert o.remaining_lots == o.qty_lots - self.traded[key]
                assert o.filled_quote == self.traded_quote[key]
                hold = core.accounts.hold_of(symbol, o.order_id)
                assert hold is not None and hold >= 0
        assert open_keys == set(self.qty), "an order neither open nor ended"


def run_differential(seed: int, n: int, mid: int = 100, spread: int = 6) -> int:
    markets = sample_markets()
    fast = ExchangeCore(markets, MatchingEngine(markets, POLICY))
    slow = ExchangeCore(markets, ReferenceMatcher(markets, POLICY))
    ledger = QuantityLedger()
    expected_totals = dict.fromkeys(fast.accounts.total_by_asset(), 0)
    trades = 0
    for step, command in enumerate(Flow(seed, mid, spread).commands(n)):
        events = fast.process(command)
        reference_events = slow.process(command)
        assert events == reference_events, f"seed {seed} step {step}: {command}"
        ledger.apply(events)
        trades += sum(isinstance(e, TradeExecuted) for e in events)
        if isinstance(command, Deposit | Withdraw) and not isinstance(events[0], TransferRejected):
            expected_totals[command.asset] += command.amount if isinstance(command, Deposit) else -command.amount
        for core in (fast, slow):
            core.matcher.validate_internal_state()  # never crossed, levels consistent
            core.accounts.validate_internal_state()  # never negative, locked == holds
            assert core.accounts.total_by_asset() == expected_totals  # fees included
        symbol = getattr(command, "symbol", None)
        if symbol is not None:
            assert fast.matcher.open_orders(symbol) == slow.matcher.open_orders(symbol)
        if step % 50 == 0:
            ledger.check_open(fast)
    ledger.check_open(fast)
    assert fast.accounts.state_hash() == slow.accounts.state_hash()
    return trades


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), spread=st.integers(1, 12))
def test_engine_matches_reference_on_long_random_flows(seed: int, spread: int) -> None:
    trades = run_differential(seed, 2_500, spread=spread)
    assert trades > 0


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 200), spread=st.integers(0, 3))
def test_engine_matches_reference_on_short_dense_flows(seed: int, n: int, spread: int) -> None:
    run_differential(seed, n, spread=spread)


def test_replay_gives_the_same_state_hash() -> None:
    markets = sample_markets()
    hashes = set()
    for _ in range(2):
        core = ExchangeCore(markets, MatchingEngine(markets, POLICY))
        for command in Flow(7, 100, 5).commands(2_000):
            core.process(command)
        engine = core.matcher
        assert isinstance(engine, MatchingEngine)
        hashes.add((engine.state_hash(), core.accounts.state_hash()))
    assert len(hashes) == 1
