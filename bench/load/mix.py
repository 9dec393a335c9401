"""What the load generator sends: a seeded mix of order types and cancels over many accounts.

Prices stay within a few ticks of a fixed mid, so about half the limit orders cross
and trade; IOC and market orders take liquidity; cancels name one of the account's
own resting orders (known once acknowledged). Amounts are integers (ticks, lots,
quote units) and become decimal strings only at the HTTP/WebSocket edge.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Literal

from pipeline.core.markets import Market

Kind = Literal["limit", "ioc", "market", "cancel"]


@dataclass(frozen=True, slots=True)
class MixConfig:
    """Shares of each kind (the rest are GTC limit orders) and the price band."""

    cancel: float = 0.10
    ioc: float = 0.15
    market: float = 0.05
    spread_ticks: int = 5
    """Limit prices are mid +- up to this many ticks (buys above mid cross resting sells)."""


@dataclass(frozen=True, slots=True)
class Intent:
    """One request to send (an order or a cancel), before it has an order id."""

    kind: Kind
    account: int
    symbol: str
    side: Literal["BUY", "SELL"] = "BUY"
    price_ticks: int = 0
    qty_lots: int = 0
    quote_qty: int = 0
    cancel_order_id: int = 0


def mid_ticks(market: Market) -> int:
    """A mid price for `market`: 1000 quote per base for USDT-style ticks, else 100k ticks."""
    return max(market.min_price_ticks, 100_000)


def min_lots(market: Market, price_ticks: int) -> int:
    """The fewest lots whose value at `price_ticks` meets the market's minimum notional."""
    per_lot = market.quote_amount(price_ticks, 1)
    lots = -(-market.min_notional_quote // max(per_lot, 1))
    return max(market.min_qty_lots, lots)


class OrderMix:
    """Seeded stream of intents; remembers acknowledged resting orders to cancel."""

    def __init__(self, markets: dict[str, Market], accounts: list[int], seed: int = 7,
                 config: MixConfig | None = None, max_resting: int = 5000) -> None:
        self.markets = markets
        self.symbols = sorted(markets)
        self.accounts = accounts
        self.config = config or MixConfig()
        self.rng = random.Random(seed)
        self.mids = {s: mid_ticks(m) for s, m in markets.items()}
        self.base_lots = {s: min_lots(m, self.mids[s] - self.config.spread_ticks) for s, m in markets.items()}
        self.resting: dict[str, deque[tuple[int, int]]] = {s: deque(maxlen=max_resting) for s in self.symbols}
        """Per market: (order id, account) of GTC orders acknowledged and maybe still open."""

    def rested(self, symbol: str, order_id: int, account: int) -> None:
        """A GTC order was acknowledged: it may be cancelled later."""
        self.resting[symbol].append((order_id, account))

    def next(self) -> Intent:
        rng, cfg = self.rng, self.config
        symbol = rng.choice(self.symbols)
        roll = rng.random()
        resting = self.resting[symbol]
        if roll < cfg.cancel and resting:
            order_id, account = resting.popleft() if rng.random() < 0.5 else resting.pop()
            return Intent("cancel", account, symbol, cancel_order_id=order_id)
        account = rng.choice(self.accounts)
        side: Literal["BUY", "SELL"] = "BUY" if rng.random() < 0.5 else "SELL"
        lots = self.base_lots[symbol] * rng.randint(1, 4)
        mid = self.mids[symbol]
        if roll < cfg.cancel + cfg.market:
            if side == "BUY":
                quote = self.markets[symbol].quote_amount(mid + cfg.spread_ticks, lots)
                return Intent("market", account, symbol, side, quote_qty=quote)
            return Intent("market", account, symbol, side, qty_lots=lots)
        offset = rng.randint(-cfg.spread_ticks, cfg.spread_ticks)
        price = mid + offset if side == "BUY" else mid - offset
        kind: Kind = "ioc" if roll < cfg.cancel + cfg.market + cfg.ioc else "limit"
        return Intent(kind, account, symbol, side, price_ticks=price, qty_lots=lots)
