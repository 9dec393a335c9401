"""The market maker: every refresh, re-quote each market around its reference price through the public API.

One refresh (`MarketMaker.refresh`) reads the account's open orders and balances, steps
each market's reference price, plans every market against one worst-case `Ledger` (so
the inventory limits hold even if every order fills) and then, in every market at once,
places the missing quotes (post-only `LIMIT_MAKER`) and cancels the stale ones.
A market whose requests fail (halted, rate limited, server errors) backs off and is
retried later; nothing a request answers stops the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from infra.mm.client import BinanceClient, BinanceError
from infra.mm.config import DEFAULT_START_PRICES, MarketMakerConfig, QuoteParams
from infra.mm.quoting import (
    Ledger,
    OpenOrder,
    Plan,
    RandomWalk,
    first_level_lots,
    inventory_limits,
    inventory_skew,
    plan_market,
)
from infra.mm.rules import MarketRules

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
GONE = -2011  # cancel of an order that already filled or was cancelled


def stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class MarketState:
    """What the bot keeps per market between refreshes."""

    rules: MarketRules
    params: QuoteParams
    ref_ticks: int
    walk: RandomWalk | None
    orders: dict[int, OpenOrder] = field(default_factory=dict)
    """The bot's open orders after its last refresh."""
    placed: int = 0
    cancelled: int = 0
    rejected: int = 0
    errors: int = 0
    filled_lots: int = 0
    failures: int = 0
    """Consecutive failed refreshes (drives the back-off)."""
    resume_at: float = 0.0
    last_error: str = ""
    skew_ppm: int = 0


def _amount(units: int, decimals: int) -> str:
    """Minimal units as a plain decimal string without trailing zeros (status output)."""
    text = f"{Decimal(units).scaleb(-decimals):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _units(amount: str, decimals: int) -> int:
    return int(Decimal(amount).scaleb(decimals))


class MarketMaker:
    """Pure market making over a Binance-compatible REST API (see the module docstring)."""

    def __init__(self, client: BinanceClient, config: MarketMakerConfig, *,
                 reference_clients: dict[str, BinanceClient] | None = None,
                 clock: Callable[[], float] = time.monotonic, out: Callable[[str], None] = stderr_line) -> None:
        self.client = client
        self.config = config
        self.markets: dict[str, MarketState] = {}
        self.decimals: dict[str, int] = {}
        self.limits: dict[str, tuple[int, int]] = {}
        self.totals: dict[str, int] = {}
        self.refreshes = 0
        self._references = reference_clients or {}
        self._own_references: list[BinanceClient] = []
        self._clock = clock
        self._out = out
        self._rng = random.Random(config.seed)
        self._last_status = clock()

    # ------------------------------------------------------------------ start-up

    async def prepare(self) -> None:
        """Load the markets' rules and pick each market's starting reference price."""
        rules = await self.client.markets()
        wanted = self.config.markets or tuple(s for s, r in sorted(rules.items()) if r.status == "TRADING")
        unknown = [s for s in wanted if s not in rules]
        if unknown:
            raise BinanceError(0, -1121, f"unknown markets: {', '.join(unknown)}")
        last = await self.client.last_prices()
        for symbol in wanted:
            r = rules[symbol]
            params = self.config.params_for(symbol)
            self.decimals[r.base], self.decimals[r.quote] = r.base_decimals, r.quote_decimals
            start = params.start_price or (last.get(symbol) if Decimal(last.get(symbol, "0")) > 0 else None)
            start = start or DEFAULT_START_PRICES.get(symbol) or await self._mid(self.client, symbol)
            walk = None
            if params.reference != "walk":  # follow; until the followed market has a price, its start price
                ref = await self._followed_price(r, params) or (r.ticks(start) if start is not None else None)
            elif start is not None:
                ref = r.ticks(start)
                if ref >= 1:
                    walk = RandomWalk(ref, params.walk_step_bps, params.walk_reversion_ppm,
                                      random.Random(f"{self.config.seed}:{symbol}"))
            else:
                ref = None
            if ref is None or ref < 1:
                self._out(f"mm {symbol}: no reference price (no trades, no book, no start_price): skipped")
                continue
            self.markets[symbol] = MarketState(r, params, ref, walk)

    def funding_needs(self) -> dict[str, Decimal]:
        """Balances that let every market quote `funding_multiple` full ladders on both sides."""
        needs: dict[str, int] = {}
        for m in self.markets.values():
            r, p = m.rules, m.params
            first = first_level_lots(r, p, m.ref_ticks)
            side_lots = sum(first * (100 + level * p.level_amount_step_pct) // 100 for level in range(p.order_levels))
            lots = 2 * side_lots * self.config.funding_multiple  # x2: full skew doubles one side
            needs[r.base] = needs.get(r.base, 0) + r.base_units(lots)
            needs[r.quote] = needs.get(r.quote, 0) + r.quote_units(m.ref_ticks, lots)
        return {a: Decimal(u).scaleb(-self.decimals[a]) for a, u in needs.items()}

    async def read_totals(self) -> dict[str, int]:
        """The account's free + locked balance of every asset the bot trades, in minimal units."""
        balances = await self.client.balances()
        return {asset: _units(balances[asset][0], d) + _units(balances[asset][1], d) if asset in balances else 0
                for asset, d in self.decimals.items()}

    # ------------------------------------------------------------------ references

    async def _mid(self, client: BinanceClient, symbol: str) -> str | None:
        try:
            book = await client.book_ticker(symbol)
        except BinanceError:
            return None
        bid, ask = Decimal(book.get("bidPrice") or "0"), Decimal(book.get("askPrice") or "0")
        if bid > 0 and ask > 0:
            return str((bid + ask) / 2)
        return str(bid or ask) if bid or ask else None

    async def _followed_price(self, rules: MarketRules, params: QuoteParams) -> int | None:
        client = self.client
        if params.reference_url:
            client = self._references.get(params.reference_url) or BinanceClient(params.reference_url)
            if params.reference_url not in self._references:
                self._references[params.reference_url] = client
                self._own_references.append(client)
        mid = await self._mid(client, params.reference)
        return rules.ticks(mid) if mid is not None else None

    async def _step_reference(self, m: MarketState) -> None:
        if m.walk is not None:
            m.ref_ticks = m.walk.step()
            return
        ref = await self._followed_price(m.rules, m.params)
        if ref:
            m.ref_ticks = ref

    # ------------------------------------------------------------------ one refresh

    async def refresh(self) -> None:
        """Re-quote every market once (open orders first, then balances: see `Ledger`)."""
        now = self._clock()
        raw_orders = await self.client.open_orders()
        self.totals = await self.read_totals()
        if not self.limits:
            self.limits = self._initial_limits(self.totals)
        open_by_symbol: dict[str, list[OpenOrder]] = {s: [] for s in self.markets}
        for raw in raw_orders:
            m = self.markets.get(raw["symbol"])
            if m is None:
                continue
            left = m.rules.lots(Decimal(raw["origQty"]) - Decimal(raw["executedQty"]))
            open_by_symbol[raw["symbol"]].append(OpenOrder(int(raw["orderId"]), raw["side"],
                                                           m.rules.ticks(raw["price"]), left))
        ledger = Ledger(self.totals, self.limits)
        plans: dict[str, Plan] = {}
        for symbol, m in self.markets.items():
            current = open_by_symbol[symbol]
            self._count_fills(m, current)
            if now < m.resume_at:
                for o in current:
                    ledger.count(m.rules, o.side, o.price_ticks, o.lots)
                continue
            try:
                await self._step_reference(m)
            except BinanceError as exc:
                self._failed(m, exc, now)
            low, high = self.limits.get(m.rules.base, (0, 0))
            m.skew_ppm = inventory_skew(self.totals.get(m.rules.base, 0), low, high, m.params.target_base_pct)
            plans[symbol] = plan_market(m.rules, m.params, m.ref_ticks, current, ledger, m.skew_ppm)
        await asyncio.gather(*(self._apply(self.markets[symbol], plan, now) for symbol, plan in plans.items()))
        self.refreshes += 1
        self._maybe_status()

    def _initial_limits(self, totals: dict[str, int]) -> dict[str, tuple[int, int]]:
        limits: dict[str, tuple[int, int]] = {}
        for m in self.markets.values():
            for asset in (m.rules.base, m.rules.quote):
                if asset not in limits:
                    limits |= inventory_limits({asset: totals.get(asset, 0)}, m.params.inventory_range_pct)
        return limits

    def _count_fills(self, m: MarketState, current: list[OpenOrder]) -> None:
        now_open = {o.order_id: o for o in current}
        for order_id, before in m.orders.items():
            after = now_open.get(order_id)
            m.filled_lots += before.lots - (after.lots if after else 0)
        m.orders = now_open

    async def _apply(self, m: MarketState, plan: Plan, now: float) -> None:
        """Place the new quotes, then cancel the stale ones, so the book never goes empty in between.

        Old orders that a new quote would cross are cancelled first (post-only quotes would
        be refused otherwise). The ledger counted old and new orders together, so the funds
        for both are there.
        """
        bids = [q.price_ticks for q in plan.place if q.side == "BUY"]
        asks = [q.price_ticks for q in plan.place if q.side == "SELL"]
        crossed = [o for o in plan.cancel if (o.side == "SELL" and bids and o.price_ticks <= max(bids))
                   or (o.side == "BUY" and asks and o.price_ticks >= min(asks))]
        rest = [o for o in plan.cancel if o not in crossed]
        try:
            await self._cancel_all_of(m, crossed)
            results = await asyncio.gather(*(self.client.place(
                m.rules, q.side, "LIMIT_MAKER", q.price_ticks, q.lots, client_id=f"mm-{secrets.token_hex(8)}")
                for q in plan.place), return_exceptions=True)
            await self._cancel_all_of(m, rest)
        except BinanceError as exc:
            self._failed(m, exc, now)
            return
        failure: BinanceError | None = None
        for quote, result in zip(plan.place, results, strict=True):
            if isinstance(result, BinanceError):
                m.rejected += 1
                failure = result
            elif isinstance(result, BaseException):
                raise result
            else:
                m.placed += 1
                if result.get("status") in ("NEW", "PARTIALLY_FILLED"):
                    m.orders[int(result["orderId"])] = OpenOrder(int(result["orderId"]), quote.side,
                                                                 quote.price_ticks, quote.lots)
        if failure is not None and (failure.code == 0 or failure.status in (418, 429, 503)
                                    or failure.msg == "Market is closed."):
            self._failed(m, failure, now)
        else:
            m.failures = 0
            if failure is not None:
                m.last_error = str(failure)

    async def _cancel_all_of(self, m: MarketState, orders: list[OpenOrder]) -> None:
        await asyncio.gather(*(self._cancel(m.rules.symbol, o.order_id) for o in orders))
        for o in orders:
            m.orders.pop(o.order_id, None)
        m.cancelled += len(orders)

    async def _cancel(self, symbol: str, order_id: int) -> None:
        try:
            await self.client.cancel(symbol, order_id)
        except BinanceError as exc:
            if exc.code != GONE:
                raise

    def _failed(self, m: MarketState, exc: BinanceError, now: float) -> None:
        m.errors += 1
        m.failures += 1
        m.last_error = str(exc)
        delay = min(MAX_BACKOFF_S, m.params.refresh_seconds * 2 ** min(m.failures - 1, 6))
        m.resume_at = now + max(delay, exc.retry_after or 0.0)
        if m.failures == 1:
            self._out(f"mm {m.rules.symbol}: {exc} (retrying in {delay:.0f}s)")

    # ------------------------------------------------------------------ status and lifetime

    def status_line(self, m: MarketState) -> str:
        r = m.rules
        bids = [o.price_ticks for o in m.orders.values() if o.side == "BUY"]
        asks = [o.price_ticks for o in m.orders.values() if o.side == "SELL"]
        bid = r.price_str(max(bids)) if bids else "-"
        ask = r.price_str(min(asks)) if asks else "-"
        spread = f"{(min(asks) - max(bids)) * 10_000 // m.ref_ticks}bps" if bids and asks else "-"
        low, high = self.limits.get(r.base, (0, 0))
        base, lo, hi = (_amount(units, r.base_decimals) for units in (self.totals.get(r.base, 0), low, high))
        line = (f"mm {r.symbol}: ref {r.price_str(m.ref_ticks)} bid {bid} ask {ask} ({spread}) "
                f"orders {len(m.orders)} {r.base} {base} [{lo}..{hi}] skew {m.skew_ppm // 10_000:+d}% "
                f"filled {r.qty_str(m.filled_lots)} placed {m.placed} rejected {m.rejected} errors {m.errors}")
        return line + (f" last error: {m.last_error}" if m.last_error else "")

    def _maybe_status(self) -> None:
        if self.config.status_seconds <= 0 or self._clock() - self._last_status < self.config.status_seconds:
            return
        self._last_status = self._clock()
        for m in self.markets.values():
            self._out(self.status_line(m))
            m.last_error = ""

    def refresh_seconds(self) -> float:
        return min((m.params.refresh_seconds for m in self.markets.values()), default=5.0)

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every `refresh_seconds` until `stop` is set, then cancel every open order."""
        try:
            while not stop.is_set():
                started = self._clock()
                try:
                    await self.refresh()
                    pause = self.refresh_seconds() - (self._clock() - started)
                except BinanceError as exc:
                    pause = max(self.refresh_seconds(), exc.retry_after or 0.0)
                    self._out(f"mm: refresh failed: {exc} (retrying in {pause:.0f}s)")
                if pause > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=pause)
        finally:
            await self.cancel_everything()

    async def cancel_everything(self) -> int:
        """Cancel the bot's open orders in its markets (best effort); how many were cancelled."""
        async def cancel(symbol: str) -> int:
            try:
                return len(await self.client.cancel_all(symbol))
            except BinanceError as exc:
                if exc.code != GONE:
                    self._out(f"mm {symbol}: could not cancel its orders at stop: {exc}")
                return 0
            finally:
                self.markets[symbol].orders.clear()

        return sum(await asyncio.gather(*(cancel(symbol) for symbol in self.markets)))

    async def close(self) -> None:
        for client in self._own_references:
            await client.close()

    def describe(self) -> dict[str, Any]:
        """Counters per market (for tests and status tools)."""
        return {s: {"ref": m.ref_ticks, "orders": len(m.orders), "placed": m.placed, "rejected": m.rejected,
                    "errors": m.errors, "filled_lots": m.filled_lots} for s, m in self.markets.items()}
