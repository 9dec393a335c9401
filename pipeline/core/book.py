"""A price-time-priority order book of one market: book -> side (sorted levels) -> level (FIFO).

Each side is a `SortedDict` of price ticks -> `Level`; a level is a doubly linked
list of `RestingOrder`s in arrival order, with its total remaining lots. An index
of order id -> order and one of account -> client order id -> order give O(1)
cancel by either id. The book only stores and removes orders; matching lives in
`pipeline.core.engine`, which walks the levels from the best price.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import msgspec
from sortedcontainers import SortedDict

from pipeline.core.errors import StateError
from pipeline.core.messages import Side


class RestingOrder:
    """An order at rest in the book (mutable; the engine updates its fill state)."""

    __slots__ = (
        "account_id",
        "client_order_id",
        "filled_quote",
        "is_buy",
        "level",
        "next",
        "order_id",
        "prev",
        "price",
        "qty",
        "remaining",
        "ts",
    )

    def __init__(
        self,
        order_id: int,
        account_id: int,
        client_order_id: str,
        is_buy: bool,
        price: int,
        qty: int,
        remaining: int,
        filled_quote: int,
        ts: int,
    ) -> None:
        self.order_id = order_id
        self.account_id = account_id
        self.client_order_id = client_order_id
        self.is_buy = is_buy
        self.price = price
        self.qty = qty
        self.remaining = remaining
        self.filled_quote = filled_quote
        self.ts = ts
        self.prev: RestingOrder | None = None
        self.next: RestingOrder | None = None
        self.level: Level | None = None

    @property
    def side(self) -> Side:
        return "BUY" if self.is_buy else "SELL"


class Level:
    """All resting orders at one price, oldest first, and their total remaining lots."""

    __slots__ = ("count", "head", "is_buy", "price", "tail", "total")

    def __init__(self, price: int, is_buy: bool) -> None:
        self.price = price
        self.is_buy = is_buy
        self.total = 0
        self.count = 0
        self.head: RestingOrder | None = None
        self.tail: RestingOrder | None = None

    def __iter__(self) -> Iterator[RestingOrder]:
        order = self.head
        while order is not None:
            yield order
            order = order.next


_new_order = object.__new__
_COMPACT_CHANGES_AT = 4_096


class OpenOrder(msgspec.Struct, frozen=True, array_like=True):
    """A resting order as data: what snapshots, hashes and comparisons use."""

    order_id: int
    account_id: int
    client_order_id: str
    side: Side
    price_ticks: int
    qty_lots: int
    remaining_lots: int
    filled_quote: int
    ts: int


class BookSnapshot(msgspec.Struct, frozen=True, array_like=True):
    """A whole book as data, orders in priority order (bids first, then asks)."""

    symbol: str
    orders: list[OpenOrder]


class OrderBook:
    """The resting orders of one market."""

    __slots__ = ("_compact_at", "ask_prices", "asks", "bid_prices", "bids", "by_account", "changed", "orders",
                 "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids: SortedDict[int, Level] = SortedDict()
        self.asks: SortedDict[int, Level] = SortedDict()
        # The sorted key lists' chunks, read directly for the best price on the hot path:
        # best bid = bid_prices[-1][-1], best ask = ask_prices[0][0], empty side = [].
        # sortedcontainers mutates these lists in place, so the references stay valid.
        self.bid_prices: list[list[int]] = self.bids._list._lists  # type: ignore[attr-defined]
        self.ask_prices: list[list[int]] = self.asks._list._lists  # type: ignore[attr-defined]
        self.orders: dict[int, RestingOrder] = {}
        self.by_account: dict[int, dict[str, RestingOrder]] = {}
        # Levels whose total changed since the last `drain_changes()`, in the order they first
        # changed: Level -> None (keyed by the object: no tuple to build on the hot path; a level
        # emptied and re-created in between appears twice, `drain_changes` reports it once).
        self.changed: dict[Level, None] = {}
        self._compact_at = _COMPACT_CHANGES_AT

    # ------------------------------------------------------------------ changes

    def add(self, order: RestingOrder) -> None:
        """Put `order` at the back of its price level."""
        is_buy = order.is_buy
        price = order.price
        side = self.bids if is_buy else self.asks
        level = side.get(price)
        if level is None:
            level = side[price] = Level(price, is_buy)
            if len(self.changed) >= self._compact_at:
                self._compact_changes()
        tail = level.tail
        if tail is None:
            level.head = order
        else:
            tail.next = order
            order.prev = tail
        level.tail = order
        level.total += order.remaining
        level.count += 1
        self.changed[level] = None
        order.level = level
        self.orders[order.order_id] = order
        account_orders = self.by_account.get(order.account_id)
        if account_orders is None:
            self.by_account[order.account_id] = {order.client_order_id: order}
        else:
            account_orders[order.client_order_id] = order

    def rest(self, order_id: int, account_id: int, client_order_id: str, is_buy: bool, price: int, qty: int,
             remaining: int, filled_quote: int, ts: int) -> RestingOrder:
        """Create an order and put it at the back of its price level: `add` for the engine's hot path."""
        side = self.bids if is_buy else self.asks
        level = side.get(price)
        if level is None:
            level = side[price] = Level(price, is_buy)
            if len(self.changed) >= self._compact_at:
                self._compact_changes()
        # RestingOrder(...) without the cost of calling a Python __init__: same fields, set here.
        order = _new_order(RestingOrder)
        order.order_id = order_id
        order.account_id = account_id
        order.client_order_id = client_order_id
        order.is_buy = is_buy
        order.price = price
        order.qty = qty
        order.remaining = remaining
        order.filled_quote = filled_quote
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
        level.total += remaining
        level.count += 1
        self.changed[level] = None
        self.orders[order_id] = order
        account_orders = self.by_account.get(account_id)
        if account_orders is None:
            self.by_account[account_id] = {client_order_id: order}
        else:
            account_orders[client_order_id] = order
        return order

    def remove(self, order: RestingOrder) -> None:
        """Take `order` out of the book (cancel, expiry or complete fill)."""
        level = order.level
        assert level is not None, "order is not in the book"
        prev, nxt = order.prev, order.next
        if prev is None:
            level.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            level.tail = prev
        else:
            nxt.prev = prev
        level.total -= order.remaining
        level.count -= 1
        self.changed[level] = None
        if level.count == 0:
            del (self.bids if level.is_buy else self.asks)[level.price]
        order.prev = order.next = order.level = None
        del self.orders[order.order_id]
        account_orders = self.by_account[order.account_id]
        del account_orders[order.client_order_id]
        if not account_orders:
            del self.by_account[order.account_id]

    def reduce(self, order: RestingOrder, lots: int, quote: int) -> None:
        """Record a fill of `lots` (worth `quote`) of a resting order; remove it when done."""
        order.remaining -= lots
        order.filled_quote += quote
        level = order.level
        assert level is not None
        level.total -= lots
        self.changed[level] = None
        if order.remaining == 0:
            self.remove(order)

    def _compact_changes(self) -> None:
        """Keep one entry per (side, price) in `changed`, so a book nobody drains stays bounded."""
        first: dict[tuple[bool, int], Level] = {}
        for level in self.changed:
            first.setdefault((level.is_buy, level.price), level)
        self.changed = dict.fromkeys(first.values())
        self._compact_at = max(_COMPACT_CHANGES_AT, 2 * len(self.changed))

    def drain_changes(self) -> list[tuple[bool, int, int]]:
        """Levels changed since the last call, as (is_buy, price ticks, total lots now; 0 = gone).

        In the order each level first changed; a level changed several times appears once.
        """
        changed = self.changed
        if not changed:
            return []
        self.changed = {}
        bids, asks = self.bids, self.asks
        if len(changed) == 1:
            for level in changed:
                is_buy, price = level.is_buy, level.price
                now = (bids if is_buy else asks).get(price)
                return [(is_buy, price, 0 if now is None else now.total)]
        out = []
        seen: set[tuple[bool, int]] = set()
        for level in changed:
            key = (level.is_buy, level.price)
            if key in seen:  # emptied and re-created since the last drain: report it once
                continue
            seen.add(key)
            now = (bids if key[0] else asks).get(key[1])
            out.append((key[0], key[1], 0 if now is None else now.total))
        return out

    def drain_sides(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]] | None:
        """`drain_changes` split by side: (bids, asks) as (price ticks, total lots now), or None.

        The same levels in the same order as `drain_changes` (the match agent's hot path).
        """
        changed = self.changed
        if not changed:
            return None
        self.changed = {}
        bid_levels, ask_levels = self.bids, self.asks
        bids: list[tuple[int, int]] = []
        asks: list[tuple[int, int]] = []
        seen: set[tuple[bool, int]] | None = set() if len(changed) > 1 else None
        for level in changed:
            is_buy, price = level.is_buy, level.price
            if seen is not None:
                key = (is_buy, price)
                if key in seen:  # emptied and re-created since the last drain: report it once
                    continue
                seen.add(key)
            if is_buy:
                now = bid_levels.get(price)
                bids.append((price, 0 if now is None else now.total))
            else:
                now = ask_levels.get(price)
                asks.append((price, 0 if now is None else now.total))
        return bids, asks

    # ------------------------------------------------------------------ queries

    def get(self, order_id: int) -> RestingOrder | None:
        return self.orders.get(order_id)

    def find_client_order(self, account_id: int, client_order_id: str) -> RestingOrder | None:
        account_orders = self.by_account.get(account_id)
        return None if account_orders is None else account_orders.get(client_order_id)

    def account_orders(self, account_id: int) -> list[RestingOrder]:
        """Open orders of an account, oldest first."""
        return list(self.by_account.get(account_id, {}).values())

    def best_bid(self) -> int | None:
        return self.bids.keys()[-1] if self.bids else None

    def best_ask(self) -> int | None:
        return self.asks.keys()[0] if self.asks else None

    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Top `levels` (price ticks, total lots) per side: bids high to low, asks low to high."""
        bids = [(lv.price, lv.total) for lv in self.bids.values()[::-1][:levels]]
        asks = [(lv.price, lv.total) for lv in self.asks.values()[:levels]]
        return bids, asks

    def iter_side(self, is_buy: bool) -> Iterator[RestingOrder]:
        """Orders of one side in priority order (best price first, then arrival)."""
        levels = self.bids.values()[::-1] if is_buy else self.asks.values()
        for level in levels:
            yield from level

    def open_orders(self) -> list[OpenOrder]:
        """All resting orders as data: bids in priority order, then asks in priority order."""
        return [
            OpenOrder(o.order_id, o.account_id, o.client_order_id, o.side, o.price, o.qty,
                      o.remaining, o.filled_quote, o.ts)
            for is_buy in (True, False)
            for o in self.iter_side(is_buy)
        ]

    def __len__(self) -> int:
        return len(self.orders)

    # ------------------------------------------------------ state and snapshots

    def snapshot(self) -> BookSnapshot:
        return BookSnapshot(self.symbol, self.open_orders())

    @classmethod
    def restore(cls, snapshot: BookSnapshot) -> OrderBook:
        """A book holding exactly the orders of `snapshot`, in the same priority."""
        book = cls(snapshot.symbol)
        for o in snapshot.orders:
            book.add(RestingOrder(o.order_id, o.account_id, o.client_order_id, o.side == "BUY",
                                  o.price_ticks, o.qty_lots, o.remaining_lots, o.filled_quote, o.ts))
        book.changed = {}
        return book

    def state_hash(self) -> str:
        """A stable hash of every resting order in priority order."""
        return hashlib.blake2b(msgspec.msgpack.encode(self.open_orders()), digest_size=16).hexdigest()

    def validate_internal_state(self) -> None:
        """Raise `StateError` if levels, links or indexes disagree or the book is crossed."""
        seen = 0
        for is_buy, side in ((True, self.bids), (False, self.asks)):
            for price, level in side.items():
                _check(level.price == price and level.count > 0, f"bad level {price}")
                total = count = 0
                prev: RestingOrder | None = None
                for order in level:
                    _check(order.prev is prev and order.level is level, f"broken links at {price}")
                    _check(order.is_buy == is_buy and order.price == price, f"misplaced {order.order_id}")
                    _check(0 < order.remaining <= order.qty, f"bad remaining of {order.order_id}")
                    _check(self.orders.get(order.order_id) is order, f"order {order.order_id} not indexed")
                    by_client = self.find_client_order(order.account_id, order.client_order_id)
                    _check(by_client is order, f"client id of {order.order_id} not indexed")
                    total += order.remaining
                    count += 1
                    prev = order
                _check(level.tail is prev, f"bad tail at {price}")
                _check(level.total == total and level.count == count, f"bad totals at {price}")
                seen += count
        _check(seen == len(self.orders), "order index has orders not in the book")
        _check(seen == sum(len(d) for d in self.by_account.values()), "client index size mismatch")
        bid, ask = self.best_bid(), self.best_ask()
        _check(bid is None or ask is None or bid < ask, f"crossed book: bid {bid} >= ask {ask}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise StateError(message)
