"""settle: moves held funds for each trade, charges fees, releases what ended orders no longer need.

With one accounts partition it reads the matcher's ``orders.events`` and settles each
trade whole. With several it reads its partition of ``orders.settle``: the legs of
trades its accounts are on, its accounts' order ends, and `FeesTransferred` for the fee
account (on the fee account's partition); at the end of each batch it sends the fees it
charged there, one `FeesTransferred` per asset, in the same commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pipeline.agent import AgentStream
from pipeline.agents.accounts import HoldKey, SharedAccounts
from pipeline.app import App
from pipeline.core.messages import (
    AccountEvent,
    FeesTransferred,
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


def settle_batch(state: SharedAccounts, batch: Sequence[Any], accounts_events: Topic[AccountEvent],
                 orders_settle: Topic[Any] | None = None) -> None:
    """Settle one batch of matcher events: emit the account events, then mirror the changes into the tables.

    `orders_settle`: the input topic when accounts are partitioned (fees go to the fee account's partition).
    """
    accounts = state.refresh()
    emit: Callable[[Any, Any], None] = accounts_events.emitter()  # the core types its output as any event
    keyed = accounts_events.partitions > 1
    settle_trade, release = accounts.settle_trade, accounts.release
    for event in batch:
        kind = type(event)
        if kind is TradeExecuted:
            out = settle_trade(event)
        elif kind in _ENDS:
            out = release(event.ts, event.symbol, event.order_id)
        elif kind is FeesTransferred:
            out = accounts.credit_fees(event)
        else:
            continue
        if keyed:
            for account_event in out:
                emit(account_event, getattr(account_event, "account_id", None))
        else:
            for account_event in out:
                emit(account_event, None)
    if orders_settle is not None:
        fees = accounts.take_fees_due()
        if fees:
            fee_account, ts = accounts.fee_account_id, batch[-1].ts
            for asset, amount in fees:
                orders_settle.emit(FeesTransferred(ts, fee_account, asset, amount, state.partition), key=fee_account)
    state.flush()  # the balances and holds the batch changed, into the tables


def register_settle(
    app: App,
    shared: dict[int, SharedAccounts],
    orders_events: Topic[Any],
    accounts_events: Topic[AccountEvent],
) -> None:
    """Declare the settle agent on `app`; it shares `shared` with risk.

    `orders_events`: ``orders.events`` (one accounts partition) or ``orders.settle`` (several).
    """
    any_state = next(iter(shared.values()))
    # every table `SharedAccounts.refresh` reads: a settle that restarts alone must restore them all
    tables = [any_state.balances, any_state.holds, *([any_state.requests] if any_state.requests is not None else [])]

    @app.agent(orders_events, name="settle", tables=tables)
    async def settle(stream: AgentStream[OrderEvent]) -> None:
        state = shared[stream.partition]
        state.stale = True
        re_keyed = orders_events if orders_events.name == "orders.settle" else None
        async for batch in stream.batches():
            settle_batch(state, batch, accounts_events, re_keyed)
