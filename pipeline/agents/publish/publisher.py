"""One partition of publish: turns a batch of input events into market data, user events,
read-model writes and table updates.

Per event it only does what must be done in order (depth diffs, trade messages, order
reports); everything that can be coalesced (read models, book tickers, candles,
tickers, balances, table writes) is done once per batch in `flush`. The in-memory
caches (depth books, rolling tickers) are rebuilt from the tables when the agent
function starts, which the runtime does again after rolling back a failed event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.agents.events import BookChanged, ClockTick
from pipeline.agents.publish import orders
from pipeline.agents.publish.candles import INTERVALS, TradePoint, fold
from pipeline.agents.publish.depth import DepthBook
from pipeline.agents.publish.messages import (
    AccountUpdate,
    BalanceDelta,
    Candle,
    MarketCursor,
    OrderUpdate,
    OrderView,
    Trade,
)
from pipeline.agents.publish.readmodel import (
    Write,
    balance_writes,
    bbo_top_writes,
    bbo_writes,
    candle_writes,
    depth_snapshot_writes,
    depth_writes,
    order_writes,
    ticker_writes,
)
from pipeline.agents.publish.tables import PublishTables, PublishTopics
from pipeline.agents.publish.ticker import RollingTicker
from pipeline.context import MISSING
from pipeline.core.markets import Market
from pipeline.core.messages import (
    BalanceChanged,
    CancelRejected,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    TradeExecuted,
)

Emit = Callable[[Any, Any], None]
"""emit(value, key): a topic's `emitter()` for the batch in hand."""

OrderKey = tuple[str, int]


def _outside_batch(value: Any, key: Any) -> None:
    raise RuntimeError("publish emits only while processing a batch")


@dataclass(slots=True)
class Touched:
    """An order changed in this batch: its newest view and what the read models need to know."""

    view: OrderView
    known: bool
    """In publish's table of live orders when the batch began."""
    new_client_id: bool
    ended: bool = False
    """Its end event (filled, canceled, expired, rejected) came: it leaves the table."""


@dataclass(slots=True)
class BatchState:
    """What one batch changed, to be written once at its end."""

    live: dict[OrderKey, OrderView]
    """Publish's live orders as the batch began (read-only view of the table partition)."""
    depth: set[str] = field(default_factory=set)
    trades: dict[str, list[TradePoint]] = field(default_factory=lambda: defaultdict(list))
    orders: dict[OrderKey, Touched] = field(default_factory=dict)
    user: list[tuple[int, OrderUpdate | CancelRejected | BalanceDelta]] = field(default_factory=list)
    last_trade_report: dict[OrderKey, int] = field(default_factory=dict)
    balances: dict[int, dict[str, tuple[int, int]]] = field(default_factory=lambda: defaultdict(dict))
    balance_ts: dict[int, int] = field(default_factory=dict)
    ts: dict[str, int] = field(default_factory=dict)
    clock: int = 0
    """The latest `ClockTick` of the batch (0: none): the 24h windows move to it."""


class Publisher:
    """Market data and user streams of one partition."""

    def __init__(self, markets: Mapping[str, Market], tables: PublishTables, topics: PublishTopics,
                 write: Callable[..., None], partition: int) -> None:
        self.markets = markets
        self.tables = tables
        self.topics = topics
        self.write = write
        self.partition = partition
        self.books: dict[str, DepthBook] = {}
        self.tickers: dict[str, RollingTicker] = {}
        self._handlers: dict[type, Callable[[Any, BatchState], None]] = {
            BookChanged: self._book_changed, TradeExecuted: self._trade, OrderAccepted: self._accepted,
            OrderFilled: self._ended, OrderCanceled: self._ended, OrderExpired: self._ended,
            OrderRejected: self._rejected, CancelRejected: self._cancel_rejected, ClockTick: self._clock,
        }  # and `BalanceChanged` (see `process`); other events (holds, settlements, fees) change nothing published
        # `Topic.emit` of each output, bound to the batch being processed (see `process`)
        self._emit_depth: Emit = _outside_batch
        self._emit_bbo: Emit = _outside_batch
        self._emit_trades: Emit = _outside_batch
        self._emit_tickers: Emit = _outside_batch
        self._emit_candles: Emit = _outside_batch
        self._emit_user: Emit = _outside_batch
        self._load()

    def _load(self) -> None:
        """Rebuild the caches from the tables (current partition)."""
        levels: dict[str, list[tuple[bool, int, int]]] = defaultdict(list)
        for (symbol, is_bid, price), lots in self.tables.levels.items():
            levels[symbol].append((is_bid, price, lots))
        cursors = dict(self.tables.markets.items())
        for symbol in set(levels) | set(cursors):
            cursor = cursors.get(symbol, MarketCursor())
            self.books[symbol] = DepthBook(symbol, cursor.update_id, levels.get(symbol, ()))
        minutes: dict[str, list[Any]] = defaultdict(list)
        for (symbol, _), bucket in self.tables.minutes.items():
            minutes[symbol].append(bucket)
        for symbol, buckets in minutes.items():
            cursor = cursors.get(symbol, MarketCursor())
            self.tickers[symbol] = RollingTicker(symbol, buckets, cursor.last_qty_lots)

    def market_read_models(self) -> list[Write]:
        """The whole read model of every market publish knows, from its state (the agent writes it at start).

        Each market's depth (both sides replaced, and its update id), best bid/offer (without
        ``ts``), 24h ticker and current candles: keys renamed by an upgrade, or missing, are
        complete again after the first commit. Candles older than the current ones are not
        in publish's state (`pipeline.agents.publish.upgrade` moves them).
        """
        writes: list[Write] = []
        for symbol, book in sorted(self.books.items()):
            writes += depth_snapshot_writes(symbol, book.levels(True), book.levels(False), book.update_id)
            writes += bbo_top_writes(symbol, book.update_id, book.top())
        for symbol in sorted(self.tickers):
            stats = self.tickers[symbol].ticker()
            if stats is not None:
                writes += ticker_writes(stats)
        candles = self.tables.candles.partition(self.partition)
        writes += candle_writes(candles[key] for key in sorted(candles))
        return writes

    # ------------------------------------------------------------------ per event

    def process(self, batch: Sequence[Any]) -> None:
        """Handle one batch of input events, then write what it changed."""
        state = BatchState(self.tables.orders.partition(self.partition))
        topics = self.topics
        self._emit_depth, self._emit_bbo = topics.depth.emitter(), topics.bbo.emitter()
        self._emit_trades, self._emit_tickers = topics.trades.emitter(), topics.tickers.emitter()
        self._emit_candles, self._emit_user = topics.candles.emitter(), topics.user.emitter()
        handlers = self._handlers
        balances, balance_ts, user = state.balances, state.balance_ts, state.user
        for event in batch:
            kind = type(event)
            if kind is BalanceChanged:  # the most frequent input (5 per trade): handled inline
                account = event.account_id
                balances[account][event.asset] = (event.available, event.locked)
                balance_ts[account] = event.ts
                if event.transfer:  # a deposit or withdrawal: Binance's balanceUpdate
                    user.append((account, BalanceDelta(event.ts, account, event.asset, event.transfer)))
                continue
            handler = handlers.get(kind)
            if handler is not None:
                handler(event, state)
        self.flush(state)

    def _accepted(self, event: OrderAccepted, state: BatchState) -> None:
        view, update = orders.accepted(event)
        self._order(state, view, update, new_client_id=True)

    def _cancel_rejected(self, event: CancelRejected, state: BatchState) -> None:
        state.user.append((event.account_id, event))

    def _book(self, symbol: str) -> DepthBook:
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = DepthBook(symbol)
        return book

    def _clock(self, event: ClockTick, state: BatchState) -> None:
        state.clock = max(state.clock, event.ts)

    def _book_changed(self, event: BookChanged, state: BatchState) -> None:
        symbol = event.symbol
        self._emit_depth(self._book(symbol).apply(event), symbol)
        state.depth.add(symbol)
        state.ts[symbol] = max(event.ts, state.ts.get(symbol, 0))

    def _trade(self, trade: TradeExecuted, state: BatchState) -> None:
        symbol = trade.symbol
        buyer_is_maker = trade.taker_side == "SELL"
        buyer, seller = ((trade.maker_order_id, trade.taker_order_id) if buyer_is_maker
                         else (trade.taker_order_id, trade.maker_order_id))
        self._emit_trades(Trade(trade.ts, symbol, trade.trade_id, trade.price_ticks, trade.qty_lots,
                                trade.quote_amount, buyer, seller, buyer_is_maker), symbol)
        points = state.trades[symbol]
        if not points:
            cursor = self.tables.markets.get(symbol)
            floor = cursor.last_ts if cursor is not None else 0
        else:
            floor = points[-1][0]
        points.append((max(trade.ts, floor), trade.price_ticks, trade.qty_lots, trade.quote_amount, trade.trade_id))
        market = self.markets[symbol]
        maker_side = "SELL" if trade.taker_side == "BUY" else "BUY"
        for order_id, account_id, is_maker, side in (
            (trade.maker_order_id, trade.maker_account_id, True, maker_side),
            (trade.taker_order_id, trade.taker_account_id, False, trade.taker_side),
        ):
            view = self._view(state, symbol, order_id) or orders.unknown(trade, account_id, order_id, side)
            new, update = orders.traded(view, trade, is_maker, market)
            state.last_trade_report[(symbol, order_id)] = len(state.user)
            self._order(state, new, update)

    def _ended(self, event: OrderFilled | OrderCanceled | OrderExpired, state: BatchState) -> None:
        key = (event.symbol, event.order_id)
        view = self._view(state, *key) or orders.unknown(event, event.account_id, event.order_id, event.side)
        new, update = orders.ended(view, event)
        index = state.last_trade_report.get(key)
        if update is not None and type(event) is OrderFilled and index is not None:
            # a fill whose quantity was not known up front (MARKET by quote): its last
            # trade report is the one that says FILLED, as Binance reports it
            account, last = state.user[index]
            state.user[index] = (account, orders.report(
                new, last.ts, "TRADE", last_qty_lots=last.last_qty_lots,  # type: ignore[union-attr]
                last_price_ticks=last.last_price_ticks, last_quote=last.last_quote,  # type: ignore[union-attr]
                commission=last.commission, commission_asset=last.commission_asset,  # type: ignore[union-attr]
                trade_id=last.trade_id, is_maker=last.is_maker))  # type: ignore[union-attr]
            update = None
        self._order(state, new, update, ended=True)

    def _rejected(self, event: OrderRejected, state: BatchState) -> None:
        view, update = orders.rejected(event)
        key = (event.symbol, event.order_id)
        clash = event.reason == "DUPLICATE_ORDER_ID" or self._view(state, *key) is not None
        if clash:  # the id belongs to another order: report, but leave that order's records alone
            state.user.append((event.account_id, update))
            return
        self._order(state, view, update, new_client_id=event.reason != "DUPLICATE_CLIENT_ORDER_ID", ended=True)

    def _view(self, state: BatchState, symbol: str, order_id: int) -> OrderView | None:
        touched = state.orders.get((symbol, order_id))
        if touched is not None:
            return touched.view
        return state.live.get((symbol, order_id))

    def _order(self, state: BatchState, view: OrderView, update: OrderUpdate | None,
               new_client_id: bool = False, ended: bool = False) -> None:
        key = (view.symbol, view.order_id)
        touched = state.orders.get(key)
        if touched is None:
            state.orders[key] = Touched(view, key in state.live, new_client_id, ended)
        else:
            touched.view = view
            touched.new_client_id = touched.new_client_id or new_client_id
            touched.ended = touched.ended or ended
        if update is not None:
            state.user.append((view.account_id, update))

    # ------------------------------------------------------------------ per batch

    def flush(self, state: BatchState) -> None:
        """Write everything the batch changed: read models, tables, coalesced messages."""
        writes: list[Write] = []
        for symbol in sorted(state.depth | set(state.trades)):
            writes += self._flush_market(symbol, state)
        if state.clock:
            writes += self._flush_clock(state.clock)
        writes += self._flush_orders(state)
        user = self._emit_user
        for account, event in state.user:
            user(event, account)
        for account, balances in state.balances.items():
            ts = state.balance_ts[account]
            user(AccountUpdate(ts, account, [(a, v, lk) for a, (v, lk) in balances.items()]), account)
            writes += balance_writes(account, balances)
        if writes:
            self.write(*writes)

    def _flush_market(self, symbol: str, state: BatchState) -> list[Write]:
        tables = self.tables
        cursor = tables.markets.partition(self.partition).get(symbol) or MarketCursor()
        update_id, last_ts, last_lots, bbo = cursor.update_id, cursor.last_ts, cursor.last_qty_lots, cursor.bbo
        writes: list[Write] = []
        if symbol in state.depth:
            book = self.books[symbol]
            changed = book.drain()
            levels = tables.levels.partition(self.partition)
            level_writes: list[tuple[tuple[str, bool, int], Any]] = []
            for (is_bid, price), lots in changed.items():
                key = (symbol, is_bid, price)
                if lots:
                    level_writes.append((key, lots))
                elif key in levels:
                    level_writes.append((key, MISSING))
            if level_writes:
                tables.levels.write_many(level_writes)
            update_id = book.update_id
            writes += depth_writes(symbol, changed, update_id)
            top = book.top()
            if top != bbo:
                bbo = top
                ticker = book.book_ticker(state.ts[symbol])
                self._emit_bbo(ticker, symbol)
                writes += bbo_writes(ticker)
        points = state.trades.get(symbol)
        if points:
            writes += self._flush_trades(symbol, points)
            last_ts, last_lots = points[-1][0], points[-1][2]
        tables.markets[symbol] = MarketCursor(update_id, last_ts, last_lots, bbo)
        return writes

    def _flush_trades(self, symbol: str, points: list[TradePoint]) -> list[Write]:
        tables = self.tables
        current = tables.candles.partition(self.partition)
        emit = self._emit_candles
        touched: list[Candle] = []
        ticker = self.tickers.get(symbol)
        if ticker is None:
            ticker = self.tickers[symbol] = RollingTicker(symbol)
        candle_items: list[tuple[tuple[str, str], Candle]] = []
        minute_items: dict[tuple[str, int], Any] = {}  # one write per key, in order: its last value
        for interval in INTERVALS:
            candles = fold(current.get((symbol, interval)), symbol, interval, points)
            for candle in candles:
                emit(candle, symbol)
            candle_items.append(((symbol, interval), candles[-1]))
            touched += candles
            if interval == "1m":
                for bucket in candles:
                    minute_items[(symbol, bucket.open_ts)] = bucket
                    ticker.update(bucket)
        tables.candles.write_many(candle_items)
        ticker.last_lots = points[-1][2]
        for open_ts in ticker.evict(points[-1][0]):
            minute_items[(symbol, open_ts)] = MISSING
        tables.minutes.write_many(minute_items.items())
        stats = ticker.ticker()
        writes = candle_writes(touched)
        if stats is not None:
            self._emit_tickers(stats, symbol)
            writes += ticker_writes(stats)
        return writes

    def _flush_clock(self, now: int) -> list[Write]:
        """Move every 24h window to `now`: markets whose window lost minutes get a new ticker."""
        writes: list[Write] = []
        minutes = self.tables.minutes
        for symbol, ticker in sorted(self.tickers.items()):
            gone = ticker.evict(now)
            if not gone:
                continue
            for open_ts in gone:
                del minutes[(symbol, open_ts)]
            stats = ticker.ticker(now)
            if stats is not None:
                self._emit_tickers(stats, symbol)
                writes += ticker_writes(stats)
        return writes

    def _flush_orders(self, state: BatchState) -> list[Write]:
        writes: list[Write] = []
        items: list[tuple[OrderKey, Any]] = []
        for key, touched in state.orders.items():
            view = touched.view
            if not touched.ended:
                items.append((key, view))  # until its end event, even when its last trade filled it
            elif touched.known:
                items.append((key, MISSING))
            is_open = not touched.ended and (view.status == "NEW" or view.status == "PARTIALLY_FILLED")
            writes += order_writes(view, touched.known, is_open, touched.new_client_id)
        if items:
            self.tables.orders.write_many(items)
        return writes
