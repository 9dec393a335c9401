"""The pure core run stage by stage, as the pipeline splits it: the expected output of each topic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.agents.match import book_change
from pipeline.agents.settle import touched_holds
from pipeline.agents.validate import MarketView, order_rejection, rejected
from pipeline.core.accounts import Accounts
from pipeline.core.engine import MatchingEngine
from pipeline.core.markets import Market
from pipeline.core.messages import (
    CancelAll,
    CancelOrder,
    CancelRejected,
    CancelReplace,
    Command,
    Deposit,
    OrderRejected,
    PlaceOrder,
    SetMarketStatus,
    Withdraw,
)


@dataclass
class StagedOracle:
    """Expected contents of orders.events, orders.rejected and accounts.events."""

    markets: Mapping[str, Market]
    engine: MatchingEngine = field(init=False)
    accounts: Accounts = field(init=False)
    view: MarketView = field(init=False)
    orders_events: list[Any] = field(default_factory=list)
    orders_rejected: list[Any] = field(default_factory=list)
    accounts_events: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = MatchingEngine(self.markets)
        self.accounts = Accounts(self.markets)
        self.view = MarketView(self.markets)

    def run(self, commands: Iterable[Command]) -> StagedOracle:
        for command in commands:
            self.apply(command)
        return self

    def apply(self, command: Command) -> None:
        if isinstance(command, Deposit | Withdraw):
            fn = self.accounts.deposit if isinstance(command, Deposit) else self.accounts.withdraw
            self.accounts_events.extend(fn(command))  # type: ignore[arg-type]
            return
        if isinstance(command, CancelOrder | CancelAll) and self.view.get(command.symbol) is None:
            self.orders_rejected.append(CancelRejected(
                ts=command.ts, symbol=command.symbol, account_id=command.account_id,
                order_id=getattr(command, "order_id", 0), client_order_id=getattr(command, "client_order_id", ""),
                reason="UNKNOWN_SYMBOL"))
            return
        if isinstance(command, SetMarketStatus):
            self.view.set_status(command.symbol, command.status)
        if isinstance(command, PlaceOrder | CancelReplace):
            order = command if isinstance(command, PlaceOrder) else command.new_order
            reason = order_rejection(order, self.view)
            if reason is not None:
                self.orders_rejected.append(rejected(order, reason))
                return
            held: PlaceOrder | CancelReplace | None
            if isinstance(command, PlaceOrder):
                held, events = self.accounts.take_hold(command)
            else:
                held, events = self.accounts.take_replace_hold(command)
            self.orders_rejected.extend(e for e in events if isinstance(e, OrderRejected))
            self.accounts_events.extend(e for e in events if not isinstance(e, OrderRejected))
            if held is None:
                return
            command = held
        for event in self.engine.process(command):
            self.orders_events.append(event)
            if touched_holds(event):
                self.accounts_events.extend(self.accounts.settle(event))
        change = book_change(self.engine, command.ts, command.symbol)
        if change is not None:
            self.orders_events.append(change)
