"""The noise trader: now and then, a tiny IOC order from a second account that crosses the spread.

It makes trades print (so tickers and candles move) at a modest, random rate: per
market, orders arrive as a Poisson process with mean `interval_seconds`. It leans
toward the side that brings its own position back to flat, so the market maker's
inventory wanders around its target instead of drifting away.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from infra.mm.bot import stderr_line
from infra.mm.client import BinanceClient, BinanceError
from infra.mm.config import NoiseParams
from infra.mm.rules import MarketRules

INSUFFICIENT = "Account has insufficient balance for requested action."


@dataclass
class TakerState:
    rules: MarketRules
    next_at: float = 0.0
    position_lots: int = 0
    """Net lots bought minus sold by the noise trader in this market."""
    forced_side: str | None = None
    orders: int = 0
    filled: int = 0
    errors: int = 0


class NoiseTrader:
    """Small crossing IOC orders in each market, one account, at random times."""

    def __init__(self, client: BinanceClient, markets: dict[str, MarketRules], params: NoiseParams, *,
                 seed: int = 7, clock: Callable[[], float] = time.monotonic,
                 out: Callable[[str], None] = stderr_line) -> None:
        self.client = client
        self.params = params
        self.markets = {s: TakerState(r) for s, r in markets.items()}
        self._rng = random.Random(f"noise:{seed}")
        self._clock = clock
        self._out = out

    def order_lots(self, rules: MarketRules, ticks: int) -> int:
        per_lot = rules.quote_units(ticks, 1)
        wanted = rules.min_notional_units * self.params.notional_multiple
        return max(rules.min_lots_at(ticks), -(-wanted // per_lot))

    def funding_needs(self, prices: dict[str, int]) -> dict[str, Decimal]:
        """Balances for about 100 orders per market on each side, at `prices` (ticks per symbol)."""
        needs: dict[str, tuple[int, int]] = {}
        for symbol, t in self.markets.items():
            r = t.rules
            lots = 100 * self.order_lots(r, prices[symbol])
            for asset, units, decimals in ((r.base, r.base_units(lots), r.base_decimals),
                                           (r.quote, 2 * r.quote_units(prices[symbol], lots), r.quote_decimals)):
                needs[asset] = (needs.get(asset, (0, decimals))[0] + units, decimals)
        return {a: Decimal(u).scaleb(-d) for a, (u, d) in needs.items()}

    def _side(self, t: TakerState, lots: int) -> str:
        if t.forced_side is not None:
            side, t.forced_side = t.forced_side, None
            return side
        lean = max(-0.4, min(0.4, t.position_lots / (20 * lots)))
        return "BUY" if self._rng.random() < 0.5 - lean else "SELL"

    async def trade(self, symbol: str) -> int:
        """One taker order in `symbol` at the best opposite price; the lots it filled (0 if none)."""
        t = self.markets[symbol]
        r = t.rules
        try:
            book = await self.client.book_ticker(symbol)
            bid, ask = r.ticks(book["bidPrice"]), r.ticks(book["askPrice"])
            if not bid and not ask:
                return 0
            side = self._side(t, self.order_lots(r, ask or bid))
            if (side == "BUY" and not ask) or (side == "SELL" and not bid):
                side = "SELL" if side == "BUY" else "BUY"
            price = ask if side == "BUY" else bid
            lots = self.order_lots(r, price)
            t.orders += 1
            result = await self.client.place(r, side, "LIMIT", price, lots, time_in_force="IOC")
        except BinanceError as exc:
            t.errors += 1
            if exc.msg == INSUFFICIENT:
                t.forced_side = "SELL" if t.position_lots > 0 else "BUY"
            return 0
        filled = r.lots(result.get("executedQty", "0"))
        t.position_lots += filled if side == "BUY" else -filled
        t.filled += filled
        return filled

    def _schedule(self, t: TakerState, now: float) -> None:
        t.next_at = now + self._rng.expovariate(1.0 / self.params.interval_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """Trade in every market at random times until `stop` is set."""
        if not self.markets:
            return
        now = self._clock()
        for t in self.markets.values():
            self._schedule(t, now)
        while not stop.is_set():
            symbol, t = min(self.markets.items(), key=lambda item: item[1].next_at)
            pause = t.next_at - self._clock()
            if pause > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                    break
                except TimeoutError:
                    pass
            await self.trade(symbol)
            self._schedule(t, self._clock())
