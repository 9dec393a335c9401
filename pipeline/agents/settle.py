"""settle: moves held funds for each trade, charges fees, releases what ended orders no longer need."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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

_ENDS = frozenset([OrderFilled, OrderCanceled, OrderExpired, OrderRejected])


def touched_holds(event: OrderEvent) -> tuple[HoldKey, ...]:
    """The holds a matcher event can change."""
    if type(event) is TradeExecuted:
        return ((event.symbol, event.maker_order_id), (event.symbol, event.taker_order_id))
    if type(event) in _ENDS:
        return ((event.symbol, event.order_id),)  # type: ignore[union-attr]
    return ()


def settle_batch(state: SharedAccounts, batch: Sequence[OrderEvent], accounts_events: Topic[AccountEvent]) -> None:
    """Settle one batch of matcher events: emit the account events, then mirror the changes into the tables."""
    accounts = state.refresh()
    emit: Callable[[Any, Any], None] = accounts_events.emitter()  # the core types its output as any event
    keyed = accounts_events.partitions > 1
    settle_trade, release = accounts.settle_trade, accounts.release
    for event in batch:
        kind = type(event)
        if kind is TradeExecuted:
            out = settle_trade(event)  # type: ignore[arg-type]
        elif kind in _ENDS:
            out = release(event.ts, event.symbol, event.order_id)  # type: ignore[union-attr]
        else:
            continue
        if keyed:
            for account_event in out:
                emit(account_event, getattr(account_event, "account_id", None))
        else:
            for account_event in out:
                emit(account_event, None)
    state.flush()  # the balances and holds the batch changed, into the tables


def register_settle(
    app: App,
    shared: dict[int, SharedAccounts],
    orders_events: Topic[OrderEvent],
    accounts_events: Topic[AccountEvent],
) -> None:
    """Declare the settle agent on `app`; it shares `shared` with risk."""
    any_state = next(iter(shared.values()))
    # every table `SharedAccounts.refresh` reads: a settle that restarts alone must restore them all
    tables = [any_state.balances, any_state.holds, *([any_state.requests] if any_state.requests is not None else [])]

    @app.agent(orders_events, name="settle", tables=tables)
    async def settle(stream: AgentStream[OrderEvent]) -> None:
        state = shared[stream.partition]
        state.stale = True
        async for batch in stream.batches():
            settle_batch(state, batch, accounts_events)
