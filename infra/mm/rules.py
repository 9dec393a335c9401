"""A market's trading rules as a bot sees them in `exchangeInfo`, in integer ticks, lots and units.

Prices are whole ticks and quantities whole lots inside the market maker; Decimal
strings appear only when a request is written or an answer read.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

PPM = 1_000_000


class RulesError(ValueError):
    """An `exchangeInfo` symbol the market maker cannot quote (missing or inconsistent filters)."""


def _filter(info: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in info.get("filters", []):
        if item.get("filterType") == kind:
            return dict(item)
    raise RulesError(f"{info.get('symbol')}: no {kind} filter")


def _whole(value: Decimal, what: str) -> int:
    if value != value.to_integral_value():
        raise RulesError(f"{what} is not a whole number of units ({value})")
    return int(value)


@dataclass(frozen=True)
class MarketRules:
    """Tick, lot, limits and fees of one market (from its `exchangeInfo` entry)."""

    symbol: str
    base: str
    quote: str
    status: str
    tick: Decimal
    step: Decimal
    base_decimals: int
    quote_decimals: int
    min_price_ticks: int
    max_price_ticks: int
    min_lots: int
    max_lots: int
    min_notional_units: int
    """Smallest order value, in minimal units of the quote asset."""
    maker_fee_ppm: int
    taker_fee_ppm: int

    @classmethod
    def from_symbol_info(cls, info: dict[str, Any]) -> MarketRules:
        """Read one `symbols[]` entry of `GET /api/v3/exchangeInfo`."""
        price = _filter(info, "PRICE_FILTER")
        lot = _filter(info, "LOT_SIZE")
        try:
            notional = _filter(info, "NOTIONAL")
        except RulesError:
            notional = _filter(info, "MIN_NOTIONAL")
        tick, step = Decimal(price["tickSize"]), Decimal(lot["stepSize"])
        if tick <= 0 or step <= 0:
            raise RulesError(f"{info.get('symbol')}: tick and step must be positive")
        base_dec = int(info.get("baseAssetPrecision", 8))
        quote_dec = int(info.get("quoteAssetPrecision", info.get("quotePrecision", 8)))
        max_price = Decimal(price.get("maxPrice") or "0")
        rules = cls(
            symbol=str(info["symbol"]), base=str(info["baseAsset"]), quote=str(info["quoteAsset"]),
            status=str(info.get("status", "TRADING")), tick=tick, step=step,
            base_decimals=base_dec, quote_decimals=quote_dec,
            min_price_ticks=max(1, int(Decimal(price.get("minPrice") or "0") / tick)),
            max_price_ticks=int(max_price / tick) if max_price > 0 else 10**15,
            min_lots=max(1, int((Decimal(lot.get("minQty") or "0") / step).to_integral_value(ROUND_CEILING))),
            max_lots=int(Decimal(lot.get("maxQty") or "0") / step) or 10**15,
            min_notional_units=_whole(Decimal(notional.get("minNotional") or "0").scaleb(quote_dec), "minNotional"),
            maker_fee_ppm=int(Decimal(str(info.get("makerCommission", "0"))) * PPM),
            taker_fee_ppm=int(Decimal(str(info.get("takerCommission", "0"))) * PPM),
        )
        rules.quote_units(1, 1)  # checks that one tick x one lot is whole quote units
        rules.base_units(1)
        return rules

    # ----------------------------------------------------------- integers <-> decimal strings

    def price_str(self, ticks: int) -> str:
        return f"{(self.tick * ticks).quantize(self.tick):f}"

    def qty_str(self, lots: int) -> str:
        return f"{(self.step * lots).quantize(self.step):f}"

    def ticks(self, price: Decimal | str, *, up: bool = False) -> int:
        """`price` in whole ticks, rounded down (or up)."""
        value = Decimal(price) / self.tick
        return int(value.to_integral_value(ROUND_CEILING if up else ROUND_FLOOR))

    def lots(self, qty: Decimal | str, *, up: bool = False) -> int:
        """`qty` in whole lots, rounded down (or up)."""
        value = Decimal(qty) / self.step
        return int(value.to_integral_value(ROUND_CEILING if up else ROUND_FLOOR))

    def units(self, asset: str, amount: Decimal | str) -> int:
        """An amount of the base or quote asset in its minimal units (rounded down)."""
        decimals = self.base_decimals if asset == self.base else self.quote_decimals
        return int(Decimal(amount).scaleb(decimals).to_integral_value(ROUND_FLOOR))

    def base_units(self, lots: int) -> int:
        return lots * _whole((self.step).scaleb(self.base_decimals), f"{self.symbol} stepSize")

    def quote_units(self, ticks: int, lots: int) -> int:
        """The value of `lots` at `ticks`, in minimal units of the quote asset."""
        return ticks * lots * _whole((self.tick * self.step).scaleb(self.quote_decimals),
                                     f"{self.symbol} tickSize x stepSize")

    def min_lots_at(self, ticks: int) -> int:
        """The fewest lots that meet both the minimum quantity and the minimum notional at `ticks`."""
        per_lot = self.quote_units(ticks, 1)
        by_notional = -(-self.min_notional_units // per_lot) if per_lot else self.min_lots
        return max(self.min_lots, by_notional)
