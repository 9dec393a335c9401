"""settle: moves held funds for each trade, charges fees, releases what ended orders no longer need."""

from __future__ import annotations

from pipeline.agent import AgentStream
from pipeline.agents.accounts import HoldKey, SharedAccounts
from pipeline.app import App
from pipeline.core.messages import (
    AccountEvent,
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    TradeExecuted,
)
from pipeline.topics import Topic

_ENDS = (OrderFilled, OrderCanceled, OrderExpired, OrderRejected)


def touched_holds(event: OrderEvent) -> tuple[HoldKey, ...]:
    """The holds a matcher event can change."""
    if type(event) is TradeExecuted:
        return ((event.symbol, event.maker_order_id), (event.symbol, event.taker_order_id))
    if isinstance(event, _ENDS):
        return ((event.symbol, event.order_id),)
    return ()


def register_settle(
    app: App,
    shared: dict[int, SharedAccounts],
    orders_events: Topic[OrderEvent],
    accounts_events: Topic[AccountEvent],
) -> None:
    """Declare the settle agent on `app`; it shares `shared` with risk."""
    any_state = next(iter(shared.values()))

    @app.agent(orders_events, name="settle", tables=[any_state.balances, any_state.holds])
    async def settle(stream: AgentStream[OrderEvent]) -> None:
        state = shared[stream.partition]
        state.stale = True
        emit = accounts_events.emit
        async for batch in stream.batches():
            accounts = state.refresh()
            for event in batch:
                keys = touched_holds(event)
                if not keys:
                    continue
                out = accounts.settle(event)
                for account_event in out:
                    emit(account_event, key=getattr(account_event, "account_id", None))  # type: ignore[arg-type]
                state.mirror(out, keys)
