"""The matching engine: one order book per market, commands in, events out, deterministic.

`MatchingEngine.process(command)` returns the events the command caused, in order.
For a PlaceOrder that passes its checks the events are: OrderAccepted; then, while
the order crosses the book, TradeExecuted per fill (a maker that fills completely
is followed by its OrderFilled, a maker removed by self-trade prevention by its
OrderExpired); then the taker's end: OrderFilled, OrderExpired, or nothing if the
rest of a GTC limit order now rests in the book.

Rules (Binance Spot semantics):

- Trades happen at the maker's price, best price first, oldest order first.
- LIMIT GTC rests its remainder; IOC expires it; FOK first checks, without touching
  the book, that it can fill completely, else it expires (reason FOK_NOT_FILLABLE).
- MARKET by `qty_lots` fills up to that many lots; by `quote_qty` spends (buy) or
  receives (sell) at most that much quote, whole lots only, and ends FILLED when no
  further lot fits. A buy is also capped by `quote_budget` and a sell by quote by
  `base_budget_lots` (set by the risk stage from its hold). The remainder expires.
- LIMIT_MAKER is rejected WOULD_TAKE if it would cross the book, else it rests.
- Self-trade prevention is decided by the taker's `stp_mode` when it meets a maker of
  the same account: EXPIRE_TAKER ends the taker, EXPIRE_MAKER removes the maker and
  goes on, EXPIRE_BOTH does both; expired orders get status EXPIRED_IN_MATCH.
- Client order ids are idempotent per account and market (see `client_ids`).
- CancelReplace is STOP_ON_FAILURE and atomic. Checked in this order, each failure
  changing nothing: the new order's filters (its OrderRejected), the old order
  (CancelRejected UNKNOWN_ORDER + the new order's OrderRejected CANCEL_REPLACE_FAILED),
  the new order's ids (DUPLICATE_...), the funds pledged from the old order's hold (refused
  INSUFFICIENT_FUNDS if the old order traded since risk pledged them: `old_filled_lots`).
  Otherwise the old order is canceled and the new one placed in the same step (a
  LIMIT_MAKER may then still be rejected WOULD_TAKE).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from pipeline.core.book import BookSnapshot, Level, OpenOrder, OrderBook, RestingOrder
from pipeline.core.client_ids import ClientIdPolicy, EndedClientIds
from pipeline.core.errors import CoreError
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
from pipeline.core.validation import MAX_CLIENT_ORDER_ID_LEN, check_order

UNLIMITED: Final = 1 << 62
_new_order = object.__new__


class MarketState:
    """Everything the engine keeps for one market.

    Besides the market it keeps the market's filters as plain attributes (refreshed whenever
    `market` is set), read by the engine's fast path for plain LIMIT orders.
    """

    __slots__ = ("_market", "book", "ended_ids", "fast", "keyed", "max_price", "max_qty",
                 "min_notional_ticks_lots", "min_price", "min_qty", "next_trade_id", "symbol", "trading")

    def __init__(self, market: Market, policy: ClientIdPolicy, keyed: bool = True) -> None:
        # keyed: the engine finds this state under the market's own symbol (so a command that
        # found it has that symbol): with `trading`, what lets the fast path skip both checks
        self.keyed = keyed
        self.market = market
        self.book = OrderBook(market.spec.symbol)
        self.next_trade_id = 1
        self.ended_ids = EndedClientIds(policy)

    @property
    def market(self) -> Market:
        return self._market

    @market.setter
    def market(self, market: Market) -> None:
        self._market = market
        self.symbol = market.spec.symbol
        self.trading = market.spec.status == "TRADING"
        self.fast = self.trading and self.keyed
        self.min_price = market.min_price_ticks
        self.max_price = market.max_price_ticks
        self.min_qty = market.min_qty_lots
        self.max_qty = market.max_qty_lots
        # price * qty * unit >= min notional  <=>  price * qty >= ceil(min notional / unit)  (unit > 0)
        unit = market.quote_per_tick_lot
        self.min_notional_ticks_lots = -(-market.min_notional_quote // unit) if unit > 0 else UNLIMITED


class MarketSnapshot(msgspec.Struct, frozen=True, array_like=True):
    symbol: str
    status: str
    next_trade_id: int
    orders: list[OpenOrder]
    ended_client_ids: list[tuple[int, int, str]]


class EngineSnapshot(msgspec.Struct, frozen=True, array_like=True):
    """The whole engine state as data (markets in configuration order)."""

    markets: list[MarketSnapshot]


class MatchingEngine:
    """Books for a set of markets and the rules that match orders in them."""

    def __init__(self, markets: Mapping[str, Market], client_ids: ClientIdPolicy | None = None) -> None:
        policy = client_ids or ClientIdPolicy()
        self.client_id_policy = policy
        self._states = {symbol: MarketState(market, policy, symbol == market.spec.symbol)
                        for symbol, market in markets.items()}
        self._handlers: dict[type, Callable[[Any], list[Event]]] = {
            CancelOrder: self._cancel,  # (process calls it directly)
            CancelAll: self._cancel_all,
            CancelReplace: self._cancel_replace,
            SetMarketStatus: self._set_status,
        }

    # ------------------------------------------------------------------ public

    def process(self, command: PlaceOrder | CancelOrder | CancelAll | CancelReplace | SetMarketStatus,
                ) -> list[Event]:
        """Apply one command and return the events it caused, in order."""
        kind = type(command)
        if kind is not PlaceOrder:
            if kind is CancelOrder:
                return self._cancel(command)  # type: ignore[arg-type]
            return self._dispatch(command)  # type: ignore[arg-type]
        # The PlaceOrder path is here rather than in a method of its own: one Python call less
        # on the engine's most common command.
        cmd: PlaceOrder = command  # type: ignore[assignment]
        state = self._states.get(cmd.symbol)
        if state is None:
            return [_rejected(cmd, "UNKNOWN_SYMBOL")]
        price = cmd.price_ticks
        qty = cmd.qty_lots
        coid = cmd.client_order_id
        otype = cmd.order_type
        # `check_order` inlined for a plain LIMIT order that passes every filter; anything else
        # (another type, or any filter failing) gets `check_order`'s own verdict.
        if not (otype == "LIMIT" and state.fast and state.min_price <= price <= state.max_price
                and state.min_qty <= qty <= state.max_qty and price * qty >= state.min_notional_ticks_lots
                and not cmd.quote_qty and cmd.order_id > 0 and 0 < len(coid) <= MAX_CLIENT_ORDER_ID_LEN):
            reason = check_order(cmd, state.market)
            if reason is not None:
                return [_rejected(cmd, reason)]
        book = state.book
        order_id = cmd.order_id
        if order_id in book.orders:
            return [_rejected(cmd, "DUPLICATE_ORDER_ID")]
        account = cmd.account_id
        open_ids = book.by_account.get(account)
        if open_ids is not None and coid in open_ids:
            return [_rejected(cmd, "DUPLICATE_CLIENT_ORDER_ID")]
        ended = state.ended_ids  # `ended.contains(ts, account, coid)`, inlined
        times = ended.times
        ts = cmd.ts
        if times and times[0] < ts - ended.window_ns:
            ended.expire(ts)
        if (account, coid) in ended.ids:
            return [_rejected(cmd, "DUPLICATE_CLIENT_ORDER_ID")]
        if otype == "LIMIT" and cmd.time_in_force == "GTC":
            # The common case: a GTC limit order that does not cross rests at once (as `_execute`
            # would do it, without its set-up). Best prices straight from the sorted key lists.
            side = cmd.side
            if side == "BUY":
                asks = book.ask_prices
                rests = not asks or asks[0][0] > price
            else:
                bids = book.bid_prices
                rests = not bids or bids[-1][-1] < price
            if rests:
                # `book.rest(order_id, account, coid, side == "BUY", price, qty, qty, 0, ts)`, inlined
                is_buy = side == "BUY"
                levels = book.bids if is_buy else book.asks
                level = levels.get(price)
                if level is None:
                    level = levels[price] = Level(price, is_buy)
                    if len(book.changed) >= book._compact_at:
                        book._compact_changes()
                order = _new_order(RestingOrder)
                order.order_id = order_id
                order.account_id = account
                order.client_order_id = coid
                order.is_buy = is_buy
                order.price = price
                order.qty = qty
                order.remaining = qty
                order.filled_quote = 0
                order.ts = ts
                order.next = None
                order.level = level
                tail = level.tail
                order.prev = tail
                if tail is None:
                    level.head = order
                else:
                    tail.next = order
                level.tail = order
                level.total += qty
                level.count += 1
                book.changed[level] = None
                book.orders[order_id] = order
                if open_ids is None:
                    book.by_account[account] = {coid: order}
                else:
                    open_ids[coid] = order
                return [OrderAccepted(ts, cmd.symbol, order_id, coid, account, side, otype, "GTC", price, qty,
                                      cmd.quote_qty)]
        events: list[Event] = []
        _execute(state, cmd, events)
        return events

    def _dispatch(self, command: CancelOrder | CancelAll | CancelReplace | SetMarketStatus) -> list[Event]:
        """`process` for every command but PlaceOrder and CancelOrder."""
        kind = type(command)
        handler = self._handlers.get(kind)
        if handler is None:
            raise CoreError(f"the matching engine does not handle {type(command).__name__}")
        return handler(command)

    def market(self, symbol: str) -> Market:
        """The market as the engine currently sees it (including its trading status)."""
        return self._states[symbol].market

    def markets(self) -> dict[str, Market]:
        return {symbol: state.market for symbol, state in self._states.items()}

    def book(self, symbol: str) -> OrderBook:
        return self._states[symbol].book

    def books(self) -> dict[str, OrderBook]:
        """Every market's book, by symbol (as they are now: a restore replaces them)."""
        return {symbol: state.book for symbol, state in self._states.items()}

    def open_orders(self, symbol: str) -> list[OpenOrder]:
        """Resting orders of a market in priority order (bids, then asks)."""
        return self._states[symbol].book.open_orders()

    def next_trade_id(self, symbol: str) -> int:
        return self._states[symbol].next_trade_id

    def snapshot(self) -> EngineSnapshot:
        return EngineSnapshot([
            MarketSnapshot(symbol, state.market.spec.status, state.next_trade_id,
                           state.book.open_orders(), state.ended_ids.entries())
            for symbol, state in self._states.items()
        ])

    @classmethod
    def restore(cls, markets: Mapping[str, Market], snapshot: EngineSnapshot,
                client_ids: ClientIdPolicy | None = None) -> MatchingEngine:
        """An engine in exactly the state `snapshot` was taken in."""
        engine = cls(markets, client_ids)
        for snap in snapshot.markets:
            state = engine._states[snap.symbol]
            state.market = state.market.with_status("HALT" if snap.status == "HALT" else "TRADING")
            state.next_trade_id = snap.next_trade_id
            state.book = OrderBook.restore(BookSnapshot(snap.symbol, snap.orders))
            state.ended_ids.load(snap.ended_client_ids)
        return engine

    def state_hash(self) -> str:
        """A stable hash of the full state: same commands in the same order, same hash."""
        return hashlib.blake2b(msgspec.msgpack.encode(self.snapshot()), digest_size=16).hexdigest()

    def validate_internal_state(self) -> None:
        """Raise `StateError` if any book is inconsistent or crossed."""
        for state in self._states.values():
            state.book.validate_internal_state()

    # ---------------------------------------------------------------- commands

    def _cancel(self, cmd: CancelOrder) -> list[Event]:
        state = self._states.get(cmd.symbol)
        if state is None:
            order = None
        elif cmd.order_id:  # `_find` inlined for the common case
            order = state.book.orders.get(cmd.order_id)
            if order is not None and order.account_id != cmd.account_id:
                order = None
        else:
            order = _find(state.book, cmd.account_id, 0, cmd.client_order_id)
        if state is None or order is None:
            return [CancelRejected(cmd.ts, cmd.symbol, cmd.account_id, cmd.order_id, cmd.client_order_id,
                                   "UNKNOWN_SYMBOL" if state is None else "UNKNOWN_ORDER")]
        # `_cancel_order` inlined, with `book.remove(order)` and `ended_ids.remember(...)`
        book = state.book
        level: Level = order.level  # type: ignore[assignment]  # in the book, so on a level
        prev, nxt = order.prev, order.next
        if prev is None:
            level.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            level.tail = prev
        else:
            nxt.prev = prev
        remaining = order.remaining
        level.total -= remaining
        level.count -= 1
        book.changed[level] = None
        is_buy = order.is_buy
        if level.count == 0:
            del (book.bids if is_buy else book.asks)[level.price]
        order.prev = order.next = order.level = None
        order_id = order.order_id
        del book.orders[order_id]
        account = order.account_id
        coid = order.client_order_id
        account_orders = book.by_account[account]
        del account_orders[coid]
        if not account_orders:
            del book.by_account[account]
        ts = cmd.ts
        ended = state.ended_ids
        key = (account, coid)
        keys = ended.keys
        ended.times.append(ts)
        keys.append(key)
        ended.ids.add(key)
        if len(keys) > ended.max_ids:
            ended.times.popleft()
            ended.ids.discard(keys.popleft())
        return [OrderCanceled(ts, book.symbol, order_id, coid, account,
                              "BUY" if is_buy else "SELL", order.qty - remaining, order.filled_quote)]

    def _cancel_all(self, cmd: CancelAll) -> list[Event]:
        state = self._states.get(cmd.symbol)
        orders = [] if state is None else state.book.account_orders(cmd.account_id)
        if state is None or not orders:
            return [CancelRejected(ts=cmd.ts, symbol=cmd.symbol, account_id=cmd.account_id,
                                   order_id=0, client_order_id="",
                                   reason="UNKNOWN_SYMBOL" if state is None else "UNKNOWN_ORDER")]
        return [_cancel_order(state, order, cmd.ts) for order in orders]

    def _cancel_replace(self, cmd: CancelReplace) -> list[Event]:
        new = cmd.new_order
        state = self._states.get(cmd.symbol)
        if state is None:
            return [_rejected(new, "UNKNOWN_SYMBOL")]
        reason: RejectReason | None = None
        if new.symbol != cmd.symbol or new.account_id != cmd.account_id:
            reason = "INVALID_ORDER"
        reason = reason or check_order(new, state.market)
        if reason is not None:
            return [_rejected(new, reason)]
        old = _find(state.book, cmd.account_id, cmd.cancel_order_id, cmd.cancel_client_order_id)
        if old is None:
            return [
                CancelRejected(ts=cmd.ts, symbol=cmd.symbol, account_id=cmd.account_id,
                               order_id=cmd.cancel_order_id, client_order_id=cmd.cancel_client_order_id,
                               reason="UNKNOWN_ORDER"),
                _rejected(new, "CANCEL_REPLACE_FAILED"),
            ]
        reason = _id_conflict(state, new)
        if reason is not None:
            return [_rejected(new, reason)]
        if cmd.old_hold_used and old.qty - old.remaining != cmd.old_filled_lots:
            # the old order traded after risk counted its hold toward the new one: it may no longer cover it
            return [_rejected(new, "INSUFFICIENT_FUNDS")]
        events: list[Event] = [_cancel_order(state, old, cmd.ts)]
        _execute(state, new, events)
        return events

    def _set_status(self, cmd: SetMarketStatus) -> list[Event]:
        state = self._states.get(cmd.symbol)
        if state is None:
            return []
        state.market = state.market.with_status(cmd.status)
        return [MarketStatusChanged(ts=cmd.ts, symbol=cmd.symbol, status=cmd.status)]


# --------------------------------------------------------------------- helpers


def _rejected(cmd: PlaceOrder, reason: RejectReason) -> OrderRejected:
    return OrderRejected(ts=cmd.ts, symbol=cmd.symbol, order_id=cmd.order_id,
                         client_order_id=cmd.client_order_id, account_id=cmd.account_id, reason=reason)


def _id_conflict(state: MarketState, cmd: PlaceOrder) -> RejectReason | None:
    book = state.book
    if cmd.order_id in book.orders:
        return "DUPLICATE_ORDER_ID"
    if book.find_client_order(cmd.account_id, cmd.client_order_id) is not None or \
            state.ended_ids.contains(cmd.ts, cmd.account_id, cmd.client_order_id):
        return "DUPLICATE_CLIENT_ORDER_ID"
    return None


def _find(book: OrderBook, account_id: int, order_id: int, client_order_id: str) -> RestingOrder | None:
    """The open order of `account_id` with this order id (if non-zero) or else client id."""
    if order_id:
        order = book.orders.get(order_id)
        return order if order is not None and order.account_id == account_id else None
    if client_order_id:
        return book.find_client_order(account_id, client_order_id)
    return None


def _cancel_order(state: MarketState, order: RestingOrder, ts: int) -> OrderCanceled:
    state.book.remove(order)
    state.ended_ids.remember(ts, order.account_id, order.client_order_id)
    return OrderCanceled(ts, state.book.symbol, order.order_id, order.client_order_id, order.account_id,
                         "BUY" if order.is_buy else "SELL", order.qty - order.remaining, order.filled_quote)


def _maker_expired(state: MarketState, maker: RestingOrder, ts: int) -> OrderExpired:
    state.book.remove(maker)
    state.ended_ids.remember(ts, maker.account_id, maker.client_order_id)
    return OrderExpired(ts, state.book.symbol, maker.order_id, maker.client_order_id, maker.account_id,
                        "BUY" if maker.is_buy else "SELL", maker.qty - maker.remaining, maker.filled_quote,
                        "EXPIRED_IN_MATCH", "SELF_TRADE")


def _would_take(book: OrderBook, is_buy: bool, price: int) -> bool:
    if is_buy:
        return bool(book.asks) and book.asks.keys()[0] <= price
    return bool(book.bids) and book.bids.keys()[-1] >= price


def _fok_fillable(book: OrderBook, cmd: PlaceOrder, is_buy: bool) -> bool:
    """Whether a FOK limit order would fill completely, walking the book without changing it."""
    need = cmd.qty_lots
    account = cmd.account_id
    stp = cmd.stp_mode
    plain = stp == "NONE" or account not in book.by_account
    if is_buy:
        side = book.asks
        prices = side.irange(maximum=cmd.price_ticks)
    else:
        side = book.bids
        prices = side.irange(minimum=cmd.price_ticks, reverse=True)
    for price in prices:
        level = side[price]
        if plain:
            need -= level.total
            if need <= 0:
                return True
            continue
        for order in level:
            if order.account_id == account:
                if stp == "EXPIRE_MAKER":
                    continue
                return False  # EXPIRE_TAKER / EXPIRE_BOTH: matching would stop here
            need -= order.remaining
            if need <= 0:
                return True
    return False


def _execute(state: MarketState, cmd: PlaceOrder, events: list[Event]) -> None:
    """Accept, match and rest or end an order that passed its checks."""
    book = state.book
    is_buy = cmd.side == "BUY"
    otype = cmd.order_type
    tif = cmd.time_in_force
    ts = cmd.ts
    if otype == "MARKET":
        crosses = True
    elif is_buy:
        asks = book.ask_prices
        crosses = bool(asks) and asks[0][0] <= cmd.price_ticks
    else:
        bids = book.bid_prices
        crosses = bool(bids) and bids[-1][-1] >= cmd.price_ticks
    if crosses and otype == "LIMIT_MAKER":
        events.append(_rejected(cmd, "WOULD_TAKE"))
        return
    # Positional for speed (half the cost of keywords); the differential test checks the fields.
    events.append(OrderAccepted(ts, cmd.symbol, cmd.order_id, cmd.client_order_id, cmd.account_id, cmd.side,
                                otype, tif, cmd.price_ticks, cmd.qty_lots, cmd.quote_qty))
    if not crosses:  # a limit order that cannot trade now
        if tif == "GTC":
            book.rest(cmd.order_id, cmd.account_id, cmd.client_order_id, is_buy, cmd.price_ticks, cmd.qty_lots,
                      cmd.qty_lots, 0, ts)
        else:
            _end_taker(state, cmd, events, 0, 0, "EXPIRED", "FOK_NOT_FILLABLE" if tif == "FOK" else "NOT_FILLED")
        return
    if otype == "LIMIT" and tif == "FOK" and not _fok_fillable(book, cmd, is_buy):
        _end_taker(state, cmd, events, 0, 0, "EXPIRED", "FOK_NOT_FILLABLE")
        return

    # What may stop the taker: lots, a quote amount, a limit price.
    if otype == "MARKET":
        limit = UNLIMITED if is_buy else 0
        by_quote = cmd.quote_qty > 0
        lots_left = cmd.qty_lots if not by_quote else (
            UNLIMITED if is_buy or cmd.base_budget_lots == NO_BUDGET else cmd.base_budget_lots)
        quote_left = cmd.quote_qty if by_quote else -1
        if is_buy and cmd.quote_budget != NO_BUDGET and (quote_left < 0 or cmd.quote_budget < quote_left):
            quote_left = cmd.quote_budget
    else:
        limit = cmd.price_ticks
        by_quote = False
        lots_left = cmd.qty_lots
        quote_left = -1

    filled = filled_quote = 0
    stop: ExpireReason | None = None
    levels = book.asks if is_buy else book.bids
    prices = book.ask_prices if is_buy else book.bid_prices
    unit_size = state.market.quote_per_tick_lot
    account = cmd.account_id
    stp = cmd.stp_mode
    trade_id = state.next_trade_id
    symbol = cmd.symbol
    order_id = cmd.order_id
    side = cmd.side
    append = events.append
    changed = book.changed
    remove = book.remove
    ended = state.ended_ids
    ended_times, ended_keys, ended_ids, max_ids = ended.times, ended.keys, ended.ids, ended.max_ids
    maker_side: Side = "SELL" if is_buy else "BUY"
    while lots_left and prices:
        price = prices[0][0] if is_buy else prices[-1][-1]
        level = levels[price]
        if (price > limit) if is_buy else (price < limit):
            break
        unit = price * unit_size
        maker = level.head
        while maker is not None:
            nxt = maker.next
            if maker.account_id == account and stp != "NONE":
                if stp == "EXPIRE_TAKER":
                    stop = "SELF_TRADE"
                    break
                append(_maker_expired(state, maker, ts))
                if stp == "EXPIRE_BOTH":
                    stop = "SELF_TRADE"
                    break
                maker = nxt
                continue
            lots = maker.remaining
            if lots > lots_left:
                lots = lots_left
            if quote_left >= 0 and lots * unit > quote_left:
                lots = quote_left // unit
                if lots == 0:
                    stop = "NO_BUDGET"
                    break
            quote = lots * unit
            append(TradeExecuted(ts, symbol, trade_id, price, lots, quote, side, maker.order_id,
                                 maker.account_id, order_id, account))
            trade_id += 1
            lots_left -= lots
            filled += lots
            filled_quote += quote
            if quote_left >= 0:
                quote_left -= quote
            # book.reduce(maker, lots, quote), inlined
            maker.remaining -= lots
            maker.filled_quote += quote
            level.total -= lots
            changed[level] = None
            if maker.remaining == 0:
                remove(maker)
                maker_account = maker.account_id
                maker_coid = maker.client_order_id
                key = (maker_account, maker_coid)  # `ended.remember(ts, ...)`, inlined
                ended_times.append(ts)
                ended_keys.append(key)
                ended_ids.add(key)
                if len(ended_keys) > max_ids:
                    ended_times.popleft()
                    ended_ids.discard(ended_keys.popleft())
                append(OrderFilled(ts, symbol, maker.order_id, maker_coid, maker_account,
                                   maker_side, maker.qty, maker.filled_quote))
            if not lots_left:
                break
            if maker.remaining:  # the quote limit stopped this fill: nothing more fits
                stop = "NO_BUDGET"
                break
            maker = nxt
        if stop is not None:
            break
    state.next_trade_id = trade_id

    if stop == "SELF_TRADE":
        _end_taker(state, cmd, events, filled, filled_quote, "EXPIRED_IN_MATCH", "SELF_TRADE")
    elif by_quote:
        budget_capped = is_buy and cmd.quote_budget != NO_BUDGET and cmd.quote_budget < cmd.quote_qty
        if filled and not budget_capped and (quote_left == 0 or stop == "NO_BUDGET"):
            _end_taker(state, cmd, events, filled, filled_quote, "FILLED", "NOT_FILLED")
        else:
            out_of_funds = (budget_capped and stop == "NO_BUDGET") or lots_left == 0
            _end_taker(state, cmd, events, filled, filled_quote, "EXPIRED",
                       "NO_BUDGET" if out_of_funds else "NOT_FILLED")
    elif lots_left == 0:
        _end_taker(state, cmd, events, filled, filled_quote, "FILLED", "NOT_FILLED")
    elif otype != "MARKET" and cmd.time_in_force == "GTC":
        book.rest(cmd.order_id, cmd.account_id, cmd.client_order_id, is_buy, cmd.price_ticks, cmd.qty_lots,
                  lots_left, filled_quote, ts)
    else:
        _end_taker(state, cmd, events, filled, filled_quote, "EXPIRED",
                   "NO_BUDGET" if stop == "NO_BUDGET" else "NOT_FILLED")


def _end_taker(state: MarketState, cmd: PlaceOrder, events: list[Event], filled: int, filled_quote: int,
               status: str, reason: ExpireReason) -> None:
    state.ended_ids.remember(cmd.ts, cmd.account_id, cmd.client_order_id)
    if status == "FILLED":
        events.append(OrderFilled(cmd.ts, cmd.symbol, cmd.order_id, cmd.client_order_id, cmd.account_id,
                                  cmd.side, filled, filled_quote))
    else:
        events.append(OrderExpired(cmd.ts, cmd.symbol, cmd.order_id, cmd.client_order_id, cmd.account_id, cmd.side,
                                   filled, filled_quote,
                                   "EXPIRED_IN_MATCH" if status == "EXPIRED_IN_MATCH" else "EXPIRED", reason))
