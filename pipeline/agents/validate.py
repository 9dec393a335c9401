"""validate: market filters (tick, lot, min/max, notional, status) on every order command.

Keeps one small table, the markets' trading status, updated by `SetMarketStatus`
commands as they pass, so it rejects orders for a halted market before any funds
are held (cancels stay allowed while halted). With several accounts partitions, a
status change is sent to every partition of ``orders.in`` (`broadcast_keys`): each
validate updates its table, and only partition 0's passes the command on to match.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.agent import AgentStream
from pipeline.app import App
from pipeline.core.markets import Market
from pipeline.core.messages import (
    CancelAll,
    CancelOrder,
    CancelRejected,
    CancelReplace,
    Command,
    OrderRejected,
    PlaceOrder,
    RejectReason,
    SetMarketStatus,
)
from pipeline.core.validation import check_order
from pipeline.topics import Topic


class MarketView:
    """The markets with the trading status validate has seen last."""

    def __init__(self, markets: Mapping[str, Market]) -> None:
        self._base = dict(markets)
        self.current = dict(markets)
        """Symbol -> market with its current status (read-only for callers)."""

    def get(self, symbol: str) -> Market | None:
        return self.current.get(symbol)

    def set_status(self, symbol: str, status: str) -> None:
        market = self._base.get(symbol)
        if market is not None:
            self.current[symbol] = market.with_status("HALT" if status == "HALT" else "TRADING")


def order_rejection(order: PlaceOrder, markets: MarketView) -> RejectReason | None:
    """Why `order` fails validation, or None."""
    market = markets.get(order.symbol)
    if market is None:
        return "UNKNOWN_SYMBOL"
    return check_order(order, market)


def rejected(order: PlaceOrder, reason: RejectReason) -> OrderRejected:
    return OrderRejected(ts=order.ts, symbol=order.symbol, order_id=order.order_id,
                         client_order_id=order.client_order_id, account_id=order.account_id, reason=reason)


def register_validate(
    app: App,
    markets: Mapping[str, Market],
    orders_in: Topic[Command],
    orders_valid: Topic[Command],
    orders_rejected: Topic[OrderRejected | CancelRejected],
) -> None:
    """Declare the validate agent on `app`."""
    status = app.Table("market_status", key_type=str, value_type=str, partitions=orders_in.partitions)

    @app.agent(orders_in, name="validate", tables=[status])
    async def validate(stream: AgentStream[Command]) -> None:
        view = MarketView(markets)
        for symbol, value in status.items():
            view.set_status(symbol, value)
        current = view.current
        emit_valid = orders_valid.emit
        async for batch in stream.batches():
            for command in batch:
                kind = type(command)
                if kind is PlaceOrder:  # the common case, `order_rejection` inlined
                    market = current.get(command.symbol)  # type: ignore[union-attr]
                    reason = "UNKNOWN_SYMBOL" if market is None else check_order(command, market)  # type: ignore[arg-type]
                    if reason is None:
                        emit_valid(command, key=command.account_id)  # type: ignore[union-attr]
                    else:
                        orders_rejected.emit(rejected(command, reason), key=command.account_id)  # type: ignore[arg-type,union-attr]
                    continue
                if kind is CancelReplace:
                    order = command.new_order  # type: ignore[union-attr]
                    reason = order_rejection(order, view)
                    if reason is not None:
                        orders_rejected.emit(rejected(order, reason), key=order.account_id)
                        continue
                elif isinstance(command, CancelOrder | CancelAll) and view.get(command.symbol) is None:
                    orders_rejected.emit(CancelRejected(
                        ts=command.ts, symbol=command.symbol, account_id=command.account_id,
                        order_id=getattr(command, "order_id", 0),
                        client_order_id=getattr(command, "client_order_id", ""), reason="UNKNOWN_SYMBOL",
                    ), key=command.account_id)
                    continue
                elif isinstance(command, SetMarketStatus):
                    if view.get(command.symbol) is None:
                        continue  # an operator typo: nothing to change
                    status[command.symbol] = command.status
                    view.set_status(command.symbol, command.status)
                    if stream.partition != 0:
                        continue  # every accounts partition got a copy: match needs one
                orders_valid.emit(command, key=getattr(command, "account_id", None))
