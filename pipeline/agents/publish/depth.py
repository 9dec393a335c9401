"""The depth of one market as publish sees it: levels, update ids, best bid and offer.

Pure and synchronous. `apply` turns one `BookChanged` into one `DepthUpdate` whose
update ids continue the market's sequence (one id per level change), and remembers
which levels changed since `drain` so the read model is written once per batch.
"""

from __future__ import annotations

from collections.abc import Iterable

from sortedcontainers import SortedDict

from pipeline.agents.events import BookChanged
from pipeline.agents.publish.messages import BookTicker, DepthUpdate

LevelKey = tuple[bool, int]
"""(is bid, price ticks)."""

Top = tuple[int, int, int, int]
"""(best bid ticks, its lots, best ask ticks, its lots); zeros for an empty side."""


class DepthBook:
    """Price levels of one market (price ticks -> total lots) and its last update id."""

    __slots__ = ("asks", "bids", "changed", "symbol", "update_id")

    def __init__(self, symbol: str, update_id: int = 0, levels: Iterable[tuple[bool, int, int]] = ()) -> None:
        self.symbol = symbol
        self.update_id = update_id
        self.bids: SortedDict[int, int] = SortedDict()
        self.asks: SortedDict[int, int] = SortedDict()
        for is_bid, price, lots in levels:
            (self.bids if is_bid else self.asks)[price] = lots
        # levels changed since the last drain -> lots now (0 = gone)
        self.changed: dict[LevelKey, int] = {}

    def apply(self, event: BookChanged) -> DepthUpdate:
        """Apply one matcher book change; the diff with its update ids."""
        changed = self.changed
        for side, is_bid, levels in ((self.bids, True, event.bids), (self.asks, False, event.asks)):
            for price, lots in levels:
                if lots:
                    side[price] = lots
                else:
                    side.pop(price, None)
                changed[(is_bid, price)] = lots
        first = self.update_id + 1
        self.update_id += len(event.bids) + len(event.asks)
        return DepthUpdate(event.ts, self.symbol, first, self.update_id, event.bids, event.asks)

    def top(self) -> Top:
        """The best bid and offer now."""
        bids, asks = self.bids, self.asks
        bid = bids.peekitem(-1) if bids else (0, 0)
        ask = asks.peekitem(0) if asks else (0, 0)
        return bid[0], bid[1], ask[0], ask[1]

    def book_ticker(self, ts: int) -> BookTicker:
        """The best bid and offer as a message."""
        bid, bid_lots, ask, ask_lots = self.top()
        return BookTicker(ts, self.symbol, self.update_id, bid, bid_lots, ask, ask_lots)

    def drain(self) -> dict[LevelKey, int]:
        """Levels changed since the last drain, with their lots now (0 = gone)."""
        changed, self.changed = self.changed, {}
        return changed

    def levels(self, is_bid: bool) -> list[tuple[int, int]]:
        """One side, best price first."""
        if is_bid:
            return [(price, self.bids[price]) for price in reversed(self.bids)]
        return list(self.asks.items())
