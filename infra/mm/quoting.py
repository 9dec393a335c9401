"""The market maker's pure logic: reference walk, quote ladder, inventory skew and limits, reconciliation.

No I/O and no floats for money: prices are ticks, sizes lots, balances minimal units.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from infra.mm.config import QuoteParams
from infra.mm.rules import PPM, MarketRules

BPS = 10_000
Side = Literal["BUY", "SELL"]


class Quote(NamedTuple):
    """An order the market maker wants resting: side, ladder level (0 = innermost), price, size."""

    side: Side
    level: int
    price_ticks: int
    lots: int


class OpenOrder(NamedTuple):
    """One of the bot's open orders as `openOrders` reports it (remaining size)."""

    order_id: int
    side: Side
    price_ticks: int
    lots: int


# ------------------------------------------------------------------ reference price


@dataclass
class RandomWalk:
    """A seeded random walk in whole ticks with a weak pull back toward where it started."""

    price_ticks: int
    step_bps: int
    reversion_ppm: int
    rng: random.Random
    anchor_ticks: int = 0

    def __post_init__(self) -> None:
        if self.price_ticks < 1:
            raise ValueError("a walk starts at a positive price")
        self.anchor_ticks = self.anchor_ticks or self.price_ticks

    def step(self) -> int:
        """Move one step; the new price in ticks (always >= 1)."""
        if self.step_bps:
            largest = max(1, self.price_ticks * self.step_bps // BPS)
            move = self.rng.randint(-largest, largest)
        else:
            move = 0
        pull = (self.anchor_ticks - self.price_ticks) * self.reversion_ppm // PPM
        self.price_ticks = max(1, self.price_ticks + move + pull)
        return self.price_ticks


# ------------------------------------------------------------------ skew and ladder


def inventory_skew(balance: int, low: int, high: int, target_pct: int) -> int:
    """Skew in ppm, -1e6..1e6: 0 at the target point of [low, high], +1e6 at `high` (long), -1e6 at `low`."""
    if high <= low:
        return 0
    position = min(max(balance, low), high) - low
    span = high - low
    target = span * target_pct // 100
    if position >= target:
        room = span - target
        return (position - target) * PPM // room if room else 0
    return -((target - position) * PPM // target) if target else 0


def first_level_lots(rules: MarketRules, params: QuoteParams, ref_ticks: int) -> int:
    """Size of a first-level order: `order_amount`, else the notional multiple of the min notional."""
    if params.order_amount is not None:
        return max(rules.min_lots, rules.lots(params.order_amount))
    per_lot = rules.quote_units(ref_ticks, 1)
    wanted = rules.min_notional_units * params.order_notional_multiple
    return max(rules.min_lots_at(ref_ticks), -(-wanted // per_lot) if per_lot else rules.min_lots)


def ladder(rules: MarketRules, params: QuoteParams, ref_ticks: int, skew_ppm: int = 0) -> list[Quote]:
    """The wanted quotes around `ref_ticks`, innermost first, alternating bid/ask per level.

    Both sides shift by `skew_price_bps` x skew (down when long); a long inventory shrinks
    bids and grows asks (by up to 100 %), a short one the reverse. Bids round down and asks
    up, so no quote is ever inside its configured spread; levels are strictly apart.
    Sizes meet the minimum quantity and notional (a quote that cannot within the maximum quantity,
    or whose skew leaves it no size, is dropped).
    """
    if not params.inventory_skew:
        skew_ppm = 0
    shift = ref_ticks * skew_ppm * params.skew_price_bps // (PPM * BPS)
    center = max(1, ref_ticks - shift)
    base = first_level_lots(rules, params, ref_ticks)
    quotes: list[Quote] = []
    last_bid, last_ask = ref_ticks, ref_ticks
    for level in range(params.order_levels):
        lots = base * (100 + level * params.level_amount_step_pct) // 100
        bid_dist = params.bid_spread_bps + level * params.level_spacing_bps
        ask_dist = params.ask_spread_bps + level * params.level_spacing_bps
        bid = min(center * (BPS - bid_dist) // BPS, last_bid - 1)
        ask = max(-(-center * (BPS + ask_dist) // BPS), last_ask + 1)
        last_bid, last_ask = bid, ask
        for side, price, factor in (("BUY", bid, PPM - skew_ppm), ("SELL", ask, PPM + skew_ppm)):
            size = lots * factor // PPM
            if size <= 0 or not rules.min_price_ticks <= price <= rules.max_price_ticks:
                continue
            size = max(size, rules.min_lots_at(price))
            if size > rules.max_lots:
                continue
            quotes.append(Quote(side, level, price, size))  # type: ignore[arg-type]
    return quotes


# ------------------------------------------------------------------ inventory limits


def order_effects(rules: MarketRules, side: Side, ticks: int, lots: int) -> tuple[dict[str, int], dict[str, int]]:
    """(largest increase, largest decrease) per asset if the order fills completely (fees included)."""
    base = rules.base_units(lots)
    notional = rules.quote_units(ticks, lots)
    fee = -(-notional * max(rules.maker_fee_ppm, rules.taker_fee_ppm) // PPM)
    if side == "BUY":
        return {rules.base: base}, {rules.quote: notional + fee}
    return {rules.quote: notional}, {rules.base: base}


@dataclass
class Ledger:
    """Worst-case balances of the bot's assets if every order it has (or plans) filled.

    `high`/`low` start at the account's total balances; each counted order moves them by
    its largest increase/decrease. An order fits if no asset then leaves its limits and no
    balance could go negative. Orders being cancelled are counted too: they may fill before
    the cancel lands.
    """

    totals: dict[str, int]
    limits: dict[str, tuple[int, int]]
    high: dict[str, int] = field(default_factory=dict)
    low: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.high = dict(self.totals)
        self.low = dict(self.totals)

    def count(self, rules: MarketRules, side: Side, ticks: int, lots: int) -> None:
        """Count an order that exists, fit or not."""
        up, down = order_effects(rules, side, ticks, lots)
        for asset, amount in up.items():
            self.high[asset] = self.high.get(asset, 0) + amount
        for asset, amount in down.items():
            self.low[asset] = self.low.get(asset, 0) - amount

    def fits(self, rules: MarketRules, side: Side, ticks: int, lots: int) -> bool:
        up, down = order_effects(rules, side, ticks, lots)
        for asset, amount in up.items():
            limit = self.limits.get(asset)
            if limit is not None and self.high.get(asset, 0) + amount > limit[1]:
                return False
        for asset, amount in down.items():
            limit = self.limits.get(asset)
            floor = max(0, limit[0]) if limit is not None else 0
            if self.low.get(asset, 0) - amount < floor:
                return False
        return True

    def add(self, rules: MarketRules, quote: Quote) -> bool:
        """Count `quote` if it fits; whether it did."""
        if not self.fits(rules, quote.side, quote.price_ticks, quote.lots):
            return False
        self.count(rules, quote.side, quote.price_ticks, quote.lots)
        return True


def inventory_limits(totals: dict[str, int], range_pct: int) -> dict[str, tuple[int, int]]:
    """Limits of each asset: its balance +- `range_pct` %."""
    return {asset: (amount * (100 - range_pct) // 100, amount * (100 + range_pct) // 100)
            for asset, amount in totals.items()}


# ------------------------------------------------------------------ reconciliation


class Plan(NamedTuple):
    """What one refresh does in one market: orders kept, cancelled and placed."""

    keep: list[OpenOrder]
    cancel: list[OpenOrder]
    place: list[Quote]


def reconcile(open_orders: list[OpenOrder], wanted: list[Quote], tolerance_ticks: dict[int, int]) -> Plan:
    """Keep each open order close enough to a wanted quote (same side, price within the tolerance
    of that quote, size within 50 %); cancel the rest; place the wanted quotes nothing matched.

    `tolerance_ticks` maps a wanted quote's price to its tolerance in ticks.
    """
    free = list(open_orders)
    keep: list[OpenOrder] = []
    place: list[Quote] = []
    for quote in wanted:
        tolerance = tolerance_ticks.get(quote.price_ticks, 0)
        match = next((o for o in free if o.side == quote.side
                      and abs(o.price_ticks - quote.price_ticks) <= tolerance
                      and quote.lots <= 2 * o.lots and o.lots * 2 <= 3 * quote.lots), None)
        if match is None:
            place.append(quote)
        else:
            free.remove(match)
            keep.append(match)
    return Plan(keep, free, place)


def plan_market(rules: MarketRules, params: QuoteParams, ref_ticks: int, open_orders: list[OpenOrder],
                ledger: Ledger, skew_ppm: int) -> Plan:
    """One market's refresh: wanted ladder, matched against its open orders, new orders trimmed to the limits.

    Every open order is counted in `ledger` (kept ones rest on; cancelled ones may fill first);
    new quotes are added innermost first while they fit.
    """
    wanted = ladder(rules, params, ref_ticks, skew_ppm)
    tolerance = {q.price_ticks: q.price_ticks * params.refresh_tolerance_bps // BPS for q in wanted}
    plan = reconcile(open_orders, wanted, tolerance)
    for order in open_orders:
        ledger.count(rules, order.side, order.price_ticks, order.lots)
    return Plan(plan.keep, plan.cancel, [q for q in plan.place if ledger.add(rules, q)])
