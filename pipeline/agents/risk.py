"""risk: takes the hold before matching, or rejects the order for insufficient funds.

Also applies deposits and withdrawals (they change balances, which only the
accounts owner may do) and passes cancels and market status changes on to match.
"""

from __future__ import annotations

from pipeline.agent import AgentStream
from pipeline.agents.accounts import SharedAccounts
from pipeline.agents.topology import MatchCommand
from pipeline.app import App
from pipeline.core.messages import (
    AccountEvent,
    CancelRejected,
    CancelReplace,
    Command,
    Deposit,
    OrderRejected,
    PlaceOrder,
    Withdraw,
)
from pipeline.topics import Topic


def register_risk(
    app: App,
    shared: dict[int, SharedAccounts],
    orders_valid: Topic[Command],
    orders_accepted: Topic[MatchCommand],
    orders_rejected: Topic[OrderRejected | CancelRejected],
    accounts_events: Topic[AccountEvent],
) -> None:
    """Declare the risk agent on `app`; `shared` maps a partition to its accounts state."""
    tables = [shared_tables for shared_tables in _tables(shared)]

    @app.agent(orders_valid, name="risk", tables=tables)
    async def risk(stream: AgentStream[Command]) -> None:
        state = shared[stream.partition]
        state.stale = True  # (re)started: the core may hold a rolled-back batch
        emit_event = accounts_events.emit
        async for batch in stream.batches():
            accounts = state.refresh()
            take_hold = accounts.take_hold
            for command in batch:
                kind = type(command)
                if kind is PlaceOrder:
                    held, events = take_hold(command)  # type: ignore[arg-type]
                    account = command.account_id  # type: ignore[union-attr]
                    if held is not None:  # HoldTaken + BalanceChanged
                        emit_event(events[0], key=account)  # type: ignore[arg-type]
                        emit_event(events[1], key=account)  # type: ignore[arg-type]
                        orders_accepted.emit(held, key=held.symbol)
                    else:
                        orders_rejected.emit(events[0], key=account)  # type: ignore[arg-type]
                    continue
                if kind is Deposit or kind is Withdraw:
                    events = accounts.deposit(command) if kind is Deposit else (  # type: ignore[arg-type]
                        accounts.withdraw(command))  # type: ignore[arg-type]
                    for event in events:
                        emit_event(event, key=command.account_id)  # type: ignore[arg-type,union-attr]
                    state.record_request(command.request_id)  # type: ignore[union-attr]
                    continue
                if kind is not CancelReplace:
                    orders_accepted.emit(command, key=command.symbol)  # type: ignore[arg-type,union-attr]
                    continue
                # the old order's hold may fund part of the new one (it pledges it)
                replace, events = accounts.take_replace_hold(command)  # type: ignore[arg-type]
                account = command.account_id  # type: ignore[union-attr]
                for event in events:
                    if type(event) is OrderRejected:
                        orders_rejected.emit(event, key=account)
                    else:
                        emit_event(event, key=account)  # type: ignore[arg-type]
                if replace is not None:
                    orders_accepted.emit(replace, key=replace.symbol)
            state.flush()  # the balances and holds the batch changed, into the tables


def _tables(shared: dict[int, SharedAccounts]) -> list:  # type: ignore[type-arg]
    any_state = next(iter(shared.values()))
    tables = [any_state.balances, any_state.holds]
    return tables if any_state.requests is None else [*tables, any_state.requests]
