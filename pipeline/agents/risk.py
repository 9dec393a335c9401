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
            for command in batch:
                if isinstance(command, Deposit | Withdraw):
                    events = accounts.deposit(command) if isinstance(command, Deposit) else (
                        accounts.withdraw(command))
                    for event in events:
                        emit_event(event, key=command.account_id)  # type: ignore[arg-type]
                    state.mirror(events, ())
                    continue
                if not isinstance(command, PlaceOrder | CancelReplace):
                    orders_accepted.emit(command, key=command.symbol)
                    continue
                order = command if isinstance(command, PlaceOrder) else command.new_order
                held, events = accounts.take_hold(order)
                for event in events:
                    if isinstance(event, OrderRejected):
                        orders_rejected.emit(event, key=order.account_id)
                    else:
                        emit_event(event, key=order.account_id)  # type: ignore[arg-type]
                state.mirror(events, ((order.symbol, order.order_id),))
                if held is None:
                    continue
                if isinstance(command, PlaceOrder):
                    orders_accepted.emit(held, key=held.symbol)
                else:
                    orders_accepted.emit(_replace_new_order(command, held), key=held.symbol)


def _replace_new_order(command: CancelReplace, new_order: PlaceOrder) -> CancelReplace:
    return CancelReplace(ts=command.ts, account_id=command.account_id, symbol=command.symbol,
                         new_order=new_order, cancel_order_id=command.cancel_order_id,
                         cancel_client_order_id=command.cancel_client_order_id)


def _tables(shared: dict[int, SharedAccounts]) -> list:  # type: ignore[type-arg]
    any_state = next(iter(shared.values()))
    return [any_state.balances, any_state.holds]
