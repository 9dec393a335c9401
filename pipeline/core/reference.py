"""A naive reference matcher: plain lists and linear scans, written to be obviously right.

It implements the rules documented in `pipeline.core.engine` independently of the
fast engine's data structures, with the same `process()` interface and the same
events, so differential tests can compare the two step by step. Slow on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.core.book import OpenOrder
from pipeline.core.client_ids import ClientIdPolicy
from pipeline.core.errors import StateError
from pipeline.core.markets import Market
from pipeline.core.messages import (
    NO_BUDGET,
    CancelAll,
    CancelOrder,
    CancelRejected,
    CancelReplace,
    Event,
    ExpireReason,
    MarketStatusChanged,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    RejectReason,
    SetMarketStatus,
    Side,
    TradeExecuted,
)
from pipeline.core.validation import check_order


@dataclass
class RefOrder:
    seq: int
    order_id: int
    account_id: int
    client_order_id: str
    side: Side
    price: int
    qty: int
    remaining: int
    filled_quote: int
    ts: int


@dataclass
class RefMarket:
    market: Market
    orders: list[RefOrder]  # every resting order, in arrival order
    next_trade_id: int
    ended_ids: list[tuple[int, int, str]]  # (ended ts, account, client id), oldest first


class ReferenceMatcher:
    """The same rules as `MatchingEngine`, the simplest way."""

    def __init__(self, markets: Mapping[str, Market], client_ids: ClientIdPolicy | None = None) -> None:
        self.policy = client_ids or ClientIdPolicy()
        self.markets = {s: RefMarket(m, [], 1, []) for s, m in markets.items()}
        self.seq = 0

    def market(self, symbol: str) -> Market:
        return self.markets[symbol].market

    def process(self, command: PlaceOrder | CancelOrder | CancelAll | CancelReplace | SetMarketStatus,
                ) -> list[Event]:
        if isinstance(command, PlaceOrder):
            return self.place(command)
        if isinstance(command, CancelOrder):
            return self.cancel(command)
        if isinstance(command, CancelAll):
            return self.cancel_all(command)
        if isinstance(command, CancelReplace):
            return self.cancel_replace(command)
        return self.set_status(command)

    # ---------------------------------------------------------------- queries

    def open_orders(self, symbol: str) -> list[OpenOrder]:
        """Bids best price first then oldest first, then asks likewise."""
        orders = self.markets[symbol].orders
        bids = sorted((o for o in orders if o.side == "BUY"), key=lambda o: (-o.price, o.seq))
        asks = sorted((o for o in orders if o.side == "SELL"), key=lambda o: (o.price, o.seq))
        return [OpenOrder(o.order_id, o.account_id, o.client_order_id, o.side, o.price, o.qty,
                          o.remaining, o.filled_quote, o.ts) for o in bids + asks]

    def validate_internal_state(self) -> None:
        for symbol, m in self.markets.items():
            bids = [o.price for o in m.orders if o.side == "BUY"]
            asks = [o.price for o in m.orders if o.side == "SELL"]
            if bids and asks and max(bids) >= min(asks):
                raise StateError(f"{symbol}: crossed book")
            if any(not 0 < o.remaining <= o.qty for o in m.orders):
                raise StateError(f"{symbol}: bad remaining quantity")

    # ---------------------------------------------------------------- commands

    def place(self, cmd: PlaceOrder) -> list[Event]:
        m = self.markets.get(cmd.symbol)
        if m is None:
            return [reject(cmd, "UNKNOWN_SYMBOL")]
        reason = check_order(cmd, m.market) or self.id_conflict(m, cmd)
        if reason is not None:
            return [reject(cmd, reason)]
        return self.execute(m, cmd)

    def cancel(self, cmd: CancelOrder) -> list[Event]:
        m = self.markets.get(cmd.symbol)
        order = None if m is None else self.find(m, cmd.account_id, cmd.order_id, cmd.client_order_id)
        if m is None or order is None:
            return [CancelRejected(ts=cmd.ts, symbol=cmd.symbol, account_id=cmd.account_id,
                                   order_id=cmd.order_id, client_order_id=cmd.client_order_id,
                                   reason="UNKNOWN_SYMBOL" if m is None else "UNKNOWN_ORDER")]
        return [self.end_resting(m, order, cmd.ts, "CANCELED")]

    def cancel_all(self, cmd: CancelAll) -> list[Event]:
        m = self.markets.get(cmd.symbol)
        mine = [] if m is None else [o for o in m.orders if o.account_id == cmd.account_id]
        if m is None or not mine:
            return [CancelRejected(ts=cmd.ts, symbol=cmd.symbol, account_id=cmd.account_id, order_id=0,
                                   client_order_id="",
                                   reason="UNKNOWN_SYMBOL" if m is None else "UNKNOWN_ORDER")]
        return [self.end_resting(m, o, cmd.ts, "CANCELED") for o in mine]

    def cancel_replace(self, cmd: CancelReplace) -> list[Event]:
        new = cmd.new_order
        m = self.markets.get(cmd.symbol)
        if m is None:
            return [reject(new, "UNKNOWN_SYMBOL")]
        if new.symbol != cmd.symbol or new.account_id != cmd.account_id:
            return [reject(new, "INVALID_ORDER")]
        reason = check_order(new, m.market)
        if reason is not None:
            return [reject(new, reason)]
        old = self.find(m, cmd.account_id, cmd.cancel_order_id, cmd.cancel_client_order_id)
        if old is None:
            return [CancelRejected(ts=cmd.ts, symbol=cmd.symbol, account_id=cmd.account_id,
                                   order_id=cmd.cancel_order_id, client_order_id=cmd.cancel_client_order_id,
                                   reason="UNKNOWN_ORDER"),
                    reject(new, "CANCEL_REPLACE_FAILED")]
        reason = self.id_conflict(m, new)
        if reason is not None:
            return [reject(new, reason)]
        if cmd.old_hold_used > 0 and old.qty - old.remaining != cmd.old_filled_lots:
            return [reject(new, "INSUFFICIENT_FUNDS")]
        return [self.end_resting(m, old, cmd.ts, "CANCELED"), *self.execute(m, new)]

    def set_status(self, cmd: SetMarketStatus) -> list[Event]:
        m = self.markets.get(cmd.symbol)
        if m is None:
            return []
        m.market = m.market.with_status(cmd.status)
        return [MarketStatusChanged(ts=cmd.ts, symbol=cmd.symbol, status=cmd.status)]

    # ------------------------------------------------------------ the matching

    def execute(self, m: RefMarket, cmd: PlaceOrder) -> list[Event]:
        buy = cmd.side == "BUY"
        if cmd.order_type == "LIMIT_MAKER" and any(self.crosses(cmd, o) for o in m.orders):
            return [reject(cmd, "WOULD_TAKE")]
        events: list[Event] = [OrderAccepted(
            ts=cmd.ts, symbol=cmd.symbol, order_id=cmd.order_id, client_order_id=cmd.client_order_id,
            account_id=cmd.account_id, side=cmd.side, order_type=cmd.order_type, time_in_force=cmd.time_in_force,
            price_ticks=cmd.price_ticks, qty_lots=cmd.qty_lots, quote_qty=cmd.quote_qty)]
        if cmd.order_type == "LIMIT" and cmd.time_in_force == "FOK" and not self.fok_fillable(m, cmd):
            events.append(self.end_taker(m, cmd, 0, 0, "EXPIRED", "FOK_NOT_FILLABLE"))
            return events
        market = m.market
        by_quote = cmd.order_type == "MARKET" and cmd.quote_qty > 0
        # None means "no such limit".
        lots_left: int | None = cmd.qty_lots if not by_quote else (
            cmd.base_budget_lots if not buy and cmd.base_budget_lots != NO_BUDGET else None)
        quote_caps = []
        if by_quote:
            quote_caps.append(cmd.quote_qty)
        if cmd.order_type == "MARKET" and buy and cmd.quote_budget != NO_BUDGET:
            quote_caps.append(cmd.quote_budget)
        quote_left: int | None = min(quote_caps) if quote_caps else None
        filled = filled_quote = 0
        stop: ExpireReason | None = None
        while cmd.order_type != "LIMIT_MAKER" and (lots_left is None or lots_left > 0):
            makers = [o for o in m.orders if self.crosses(cmd, o)]
            if not makers:
                break
            maker = min(makers, key=lambda o: (o.price if buy else -o.price, o.seq))
            if maker.account_id == cmd.account_id and cmd.stp_mode != "NONE":
                if cmd.stp_mode != "EXPIRE_TAKER":
                    events.append(self.end_resting(m, maker, cmd.ts, "EXPIRED_IN_MATCH"))
                if cmd.stp_mode != "EXPIRE_MAKER":
                    stop = "SELF_TRADE"
                    break
                continue
            unit = maker.price * market.quote_per_tick_lot
            lots = maker.remaining if lots_left is None else min(maker.remaining, lots_left)
            if quote_left is not None:
                lots = min(lots, quote_left // unit)
                if lots == 0:
                    stop = "NO_BUDGET"
                    break
            trade_id = m.next_trade_id
            m.next_trade_id += 1
            events.append(TradeExecuted(
                ts=cmd.ts, symbol=cmd.symbol, trade_id=trade_id, price_ticks=maker.price, qty_lots=lots,
                quote_amount=lots * unit, taker_side=cmd.side, maker_order_id=maker.order_id,
                maker_account_id=maker.account_id, taker_order_id=cmd.order_id,
                taker_account_id=cmd.account_id))
            filled += lots
            filled_quote += lots * unit
            if lots_left is not None:
                lots_left -= lots
            if quote_left is not None:
                quote_left -= lots * unit
            maker.remaining -= lots
            maker.filled_quote += lots * unit
            if maker.remaining == 0:
                events.append(self.end_resting(m, maker, cmd.ts, "FILLED"))

        if stop == "SELF_TRADE":
            events.append(self.end_taker(m, cmd, filled, filled_quote, "EXPIRED_IN_MATCH", "SELF_TRADE"))
        elif by_quote:
            capped = buy and cmd.quote_budget != NO_BUDGET and cmd.quote_budget < cmd.quote_qty
            if filled > 0 and not capped and (quote_left == 0 or stop == "NO_BUDGET"):
                events.append(self.end_taker(m, cmd, filled, filled_quote, "FILLED", "NOT_FILLED"))
            else:
                no_funds = (capped and stop == "NO_BUDGET") or lots_left == 0
                events.append(self.end_taker(m, cmd, filled, filled_quote, "EXPIRED",
                                             "NO_BUDGET" if no_funds else "NOT_FILLED"))
        elif lots_left == 0:
            events.append(self.end_taker(m, cmd, filled, filled_quote, "FILLED", "NOT_FILLED"))
        elif cmd.order_type != "MARKET" and cmd.time_in_force == "GTC":
            assert lots_left is not None
            self.seq += 1
            m.orders.append(RefOrder(self.seq, cmd.order_id, cmd.account_id, cmd.client_order_id, cmd.side,
                                     cmd.price_ticks, cmd.qty_lots, lots_left, filled_quote, cmd.ts))
        else:
            events.append(self.end_taker(m, cmd, filled, filled_quote, "EXPIRED",
                                         "NO_BUDGET" if stop == "NO_BUDGET" else "NOT_FILLED"))
        return events

    @staticmethod
    def crosses(taker: PlaceOrder, maker: RefOrder) -> bool:
        """Whether `taker` can trade with resting `maker`."""
        if taker.side == maker.side:
            return False
        if taker.order_type == "MARKET":
            return True
        return maker.price <= taker.price_ticks if taker.side == "BUY" else maker.price >= taker.price_ticks

    def fok_fillable(self, m: RefMarket, cmd: PlaceOrder) -> bool:
        makers = sorted((o for o in m.orders if self.crosses(cmd, o)),
                        key=lambda o: (o.price if cmd.side == "BUY" else -o.price, o.seq))
        available = 0
        for o in makers:
            if available >= cmd.qty_lots:
                break
            if o.account_id == cmd.account_id and cmd.stp_mode != "NONE":
                if cmd.stp_mode == "EXPIRE_MAKER":
                    continue
                break
            available += o.remaining
        return available >= cmd.qty_lots

    # ------------------------------------------------------------ bookkeeping

    def id_conflict(self, m: RefMarket, cmd: PlaceOrder) -> RejectReason | None:
        if any(o.order_id == cmd.order_id for o in m.orders):
            return "DUPLICATE_ORDER_ID"
        horizon = cmd.ts - self.policy.window_ns
        while m.ended_ids and m.ended_ids[0][0] < horizon:
            m.ended_ids.pop(0)
        key = (cmd.account_id, cmd.client_order_id)
        if any((o.account_id, o.client_order_id) == key for o in m.orders) or \
                any((a, c) == key for _, a, c in m.ended_ids):
            return "DUPLICATE_CLIENT_ORDER_ID"
        return None

    def remember(self, m: RefMarket, ts: int, account_id: int, client_order_id: str) -> None:
        m.ended_ids.append((ts, account_id, client_order_id))
        if len(m.ended_ids) > self.policy.max_ids:
            m.ended_ids.pop(0)

    def find(self, m: RefMarket, account_id: int, order_id: int, client_order_id: str) -> RefOrder | None:
        for o in m.orders:
            if o.account_id != account_id:
                continue
            if (order_id and o.order_id == order_id) or (
                    not order_id and client_order_id and o.client_order_id == client_order_id):
                return o
        return None

    def end_resting(self, m: RefMarket, o: RefOrder, ts: int, status: str) -> Event:
        m.orders.remove(o)
        self.remember(m, ts, o.account_id, o.client_order_id)
        filled = o.qty - o.remaining
        common = dict(ts=ts, symbol=m.market.symbol, order_id=o.order_id, client_order_id=o.client_order_id,
                      account_id=o.account_id, side=o.side, filled_lots=filled, filled_quote=o.filled_quote)
        if status == "FILLED":
            return OrderFilled(**common)  # type: ignore[arg-type]
        if status == "CANCELED":
            return OrderCanceled(**common)  # type: ignore[arg-type]
        return OrderExpired(**common, status="EXPIRED_IN_MATCH", reason="SELF_TRADE")  # type: ignore[arg-type]

    def end_taker(self, m: RefMarket, cmd: PlaceOrder, filled: int, filled_quote: int, status: str,
                  reason: ExpireReason) -> Event:
        self.remember(m, cmd.ts, cmd.account_id, cmd.client_order_id)
        if status == "FILLED":
            return OrderFilled(ts=cmd.ts, symbol=cmd.symbol, order_id=cmd.order_id,
                               client_order_id=cmd.client_order_id, account_id=cmd.account_id, side=cmd.side,
                               filled_lots=filled, filled_quote=filled_quote)
        return OrderExpired(ts=cmd.ts, symbol=cmd.symbol, order_id=cmd.order_id,
                            client_order_id=cmd.client_order_id, account_id=cmd.account_id, side=cmd.side,
                            filled_lots=filled, filled_quote=filled_quote,
                            status="EXPIRED_IN_MATCH" if status == "EXPIRED_IN_MATCH" else "EXPIRED",
                            reason=reason)


def reject(cmd: PlaceOrder, reason: RejectReason) -> OrderRejected:
    return OrderRejected(ts=cmd.ts, symbol=cmd.symbol, order_id=cmd.order_id,
                         client_order_id=cmd.client_order_id, account_id=cmd.account_id, reason=reason)
