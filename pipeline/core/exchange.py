"""The whole core in one synchronous object: validate -> hold -> match -> settle.

`ExchangeCore.process(command)` applies a command the way the pipeline's agents
do, stage after stage, and returns every event in the order the stages emit them:
the risk stage's (hold taken or rejection), then each matcher event followed by
the settlement events it caused. The streamed pipeline must produce exactly these
events for the same input; tests and replay tools use this as the oracle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from pipeline.core.accounts import DEFAULT_FEE_ACCOUNT_ID, Accounts
from pipeline.core.book import OpenOrder
from pipeline.core.engine import MatchingEngine
from pipeline.core.markets import Market
from pipeline.core.messages import (
    CancelAll,
    CancelOrder,
    CancelReplace,
    Command,
    Deposit,
    Event,
    OrderRejected,
    PlaceOrder,
    RejectReason,
    SetMarketStatus,
    Withdraw,
)
from pipeline.core.validation import check_order


class Matcher(Protocol):
    """What `MatchingEngine` and the reference matcher both offer."""

    def process(self, command: PlaceOrder | CancelOrder | CancelAll | CancelReplace | SetMarketStatus,
                ) -> list[Event]: ...

    def market(self, symbol: str) -> Market: ...

    def open_orders(self, symbol: str) -> list[OpenOrder]: ...

    def validate_internal_state(self) -> None: ...


class ExchangeCore:
    """Validation, accounts and a matcher wired together as the pipeline wires them."""

    def __init__(self, markets: Mapping[str, Market], matcher: Matcher | None = None,
                 fee_account_id: int = DEFAULT_FEE_ACCOUNT_ID) -> None:
        self.markets = dict(markets)
        self.matcher: Matcher = matcher if matcher is not None else MatchingEngine(markets)
        self.accounts = Accounts(markets, fee_account_id)

    def process(self, command: Command) -> list[Event]:
        """Apply one command through every stage; all events in stage order."""
        if isinstance(command, Deposit):
            return self.accounts.deposit(command)
        if isinstance(command, Withdraw):
            return self.accounts.withdraw(command)
        events: list[Event] = []
        if isinstance(command, PlaceOrder | CancelReplace):
            new = command if isinstance(command, PlaceOrder) else command.new_order
            reason = self._validate(new)
            if reason is not None:
                return [_rejected(new, reason)]
            if isinstance(command, PlaceOrder):
                held, events = self.accounts.take_hold(command)
                if held is None:
                    return events
                command = held
            else:
                replace, events = self.accounts.take_replace_hold(command)
                if replace is None:
                    return events
                command = replace
        for event in self.matcher.process(command):
            events.append(event)
            events.extend(self.accounts.settle(event))
        return events

    def _validate(self, order: PlaceOrder) -> RejectReason | None:
        market = self.markets.get(order.symbol)
        if market is None:
            return "UNKNOWN_SYMBOL"
        return check_order(order, self.matcher.market(order.symbol))


def _rejected(order: PlaceOrder, reason: RejectReason) -> OrderRejected:
    return OrderRejected(ts=order.ts, symbol=order.symbol, order_id=order.order_id,
                         client_order_id=order.client_order_id, account_id=order.account_id, reason=reason)

