"""Through the whole pipeline: a cancel-replace funded by the old hold; request ids that survive a restart."""

from __future__ import annotations

from typing import Any

from pipeline.core.messages import (
    BalanceChanged,
    CancelReplace,
    Deposit,
    OrderAccepted,
    OrderCanceled,
    PlaceOrder,
    TransferRejected,
)
from pipeline.exchange import Exchange, build_exchange
from pipeline.transport.base import Transport
from tests.core.core_helpers import sample_markets
from tests.pipeline.test_exchange_e2e import topic_values


async def started(transport: Transport) -> Exchange:
    exchange = build_exchange(transport, markets=sample_markets(), clock=lambda: 0)
    await exchange.app.start()
    await exchange.app.wait_running()
    return exchange


async def send(exchange: Exchange, *commands: Any) -> None:
    await exchange.orders_in.send_many((getattr(c, "account_id", None), c) for c in commands)
    await exchange.app.wait_caught_up(timeout=60)


async def test_replace_funded_by_old_hold_and_request_ids_survive_restart(transport: Transport) -> None:
    first = await started(transport)
    try:
        # OTHUSD has no fees: BUY 10 @ 100 holds exactly the 1000 USD deposited
        await send(first, Deposit(ts=1, account_id=1, asset="USD", amount=1000, request_id="fund-1"),
                   PlaceOrder(ts=2, account_id=1, symbol="OTHUSD", order_id=1, client_order_id="a", side="BUY",
                              price_ticks=100, qty_lots=10))
        new = PlaceOrder(ts=3, account_id=1, symbol="OTHUSD", order_id=2, client_order_id="b", side="BUY",
                         price_ticks=99, qty_lots=10)
        await send(first, CancelReplace(ts=3, account_id=1, symbol="OTHUSD", new_order=new, cancel_order_id=1))
        events = await topic_values(first, "orders.events")
        assert [type(e) for e in events if type(e) in (OrderAccepted, OrderCanceled)] == [
            OrderAccepted, OrderCanceled, OrderAccepted]
        core = first.accounts[0].core
        assert core.balance(1, "USD") == (10, 990) and core.hold_of("OTHUSD", 2) == 990
    finally:
        await first.app.stop()

    second = await started(transport)  # state rebuilt from the tables' changelogs
    try:
        await send(second, Deposit(ts=4, account_id=1, asset="USD", amount=1000, request_id="fund-1"))
        account_events = await topic_values(second, "accounts.events")
        assert isinstance(account_events[-1], TransferRejected)
        assert account_events[-1].reason == "DUPLICATE_REQUEST_ID"
        last = [e for e in account_events if isinstance(e, BalanceChanged) and e.asset == "USD"][-1]
        assert (last.available, last.locked) == (10, 990)
        second.accounts[0].core.validate_internal_state()
    finally:
        await second.app.stop()
