"""Markets and assets: configuration, and the integer units the core computes in.

Inside the core every amount is an integer:

- a price is a number of ticks (`tick_size` of the quote asset per base unit),
- a quantity is a number of lots (`lot_size` of the base asset),
- a balance is a number of minimal units of its asset (`10 ** -decimals`).

`Decimal` appears only at the conversion edges (`Market.price_to_ticks` and friends).
A market is accepted only if one lot and one tick x one lot are whole minimal units,
so every trade moves whole units of both assets and no rounding ever happens in a trade.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

MarketStatus = Literal["TRADING", "HALT"]

MARKETS_FILE_ENV: Final = "EXCHANGE_MARKETS_FILE"
"""Environment variable the caller reads to pass a markets file path to `load_markets`."""

DEFAULT_MARKETS_FILE: Final = Path(__file__).with_name("markets.toml")
PPM: Final = 1_000_000
MAX_AMOUNT: Final = 2**62
"""Upper bound for any single amount (notional, balance, hold): keeps msgpack int64-safe."""


class MarketConfigError(ValueError):
    """A market or asset definition is inconsistent."""


class Asset(msgspec.Struct, frozen=True):
    """An asset and the number of decimals of its minimal unit."""

    symbol: str
    decimals: int

    def to_units(self, amount: Decimal) -> int | None:
        """Whole minimal units of `amount`, or None if it is not a whole number of units."""
        scaled = amount.scaleb(self.decimals)
        if scaled != scaled.to_integral_value():
            return None
        return int(scaled)

    def from_units(self, units: int) -> Decimal:
        """The Decimal amount of `units` minimal units."""
        return Decimal(units).scaleb(-self.decimals)


class MarketSpec(msgspec.Struct, frozen=True):
    """A market as configured: Decimal strings, as an operator writes them."""

    symbol: str
    base: str
    quote: str
    tick_size: str
    lot_size: str
    min_qty: str
    max_qty: str
    min_notional: str
    maker_fee_ppm: int
    taker_fee_ppm: int
    status: MarketStatus = "TRADING"
    min_price: str = ""
    max_price: str = ""


class Market(msgspec.Struct, frozen=True):
    """A resolved market: its spec, its assets and the integer limits the core uses."""

    spec: MarketSpec
    base_asset: Asset
    quote_asset: Asset
    quote_per_tick_lot: int
    """Quote minimal units of one tick x one lot: notional = price_ticks * qty_lots * this."""
    base_per_lot: int
    """Base minimal units of one lot."""
    min_qty_lots: int
    max_qty_lots: int
    min_price_ticks: int
    max_price_ticks: int
    min_notional_quote: int
    """Minimum notional, in quote minimal units."""

    @property
    def symbol(self) -> str:
        return self.spec.symbol

    @property
    def status(self) -> MarketStatus:
        return self.spec.status

    @property
    def maker_fee_ppm(self) -> int:
        return self.spec.maker_fee_ppm

    @property
    def taker_fee_ppm(self) -> int:
        return self.spec.taker_fee_ppm

    def with_status(self, status: MarketStatus) -> Market:
        """A copy of this market with another trading status."""
        return msgspec.structs.replace(self, spec=msgspec.structs.replace(self.spec, status=status))

    def price_to_ticks(self, price: Decimal) -> int | None:
        """Ticks of `price`, or None if it is not a positive multiple of the tick size."""
        return _whole_multiple(price, Decimal(self.spec.tick_size))

    def qty_to_lots(self, qty: Decimal) -> int | None:
        """Lots of `qty`, or None if it is not a positive multiple of the lot size."""
        return _whole_multiple(qty, Decimal(self.spec.lot_size))

    def ticks_to_price(self, ticks: int) -> Decimal:
        return Decimal(ticks) * Decimal(self.spec.tick_size)

    def lots_to_qty(self, lots: int) -> Decimal:
        return Decimal(lots) * Decimal(self.spec.lot_size)

    def quote_amount(self, price_ticks: int, qty_lots: int) -> int:
        """Quote minimal units of `qty_lots` at `price_ticks` (exact, no rounding)."""
        return price_ticks * qty_lots * self.quote_per_tick_lot

    def base_amount(self, qty_lots: int) -> int:
        """Base minimal units of `qty_lots`."""
        return qty_lots * self.base_per_lot


def fee_for(scaled_fee: int) -> int:
    """Minimal units owed for a fee of `scaled_fee` millionths of a unit, rounded up."""
    return -(-scaled_fee // PPM)


def worst_case_fee(notional: int, fee_ppm: int) -> int:
    """The largest fee an order of this notional can be charged at `fee_ppm` (rounded up)."""
    return fee_for(notional * fee_ppm)


def _whole_multiple(value: Decimal, step: Decimal) -> int | None:
    if not value.is_finite() or value <= 0:
        return None
    ratio = value / step
    if ratio != ratio.to_integral_value():
        return None
    return int(ratio)


def _units(amount: str, asset: Asset, what: str, symbol: str) -> int:
    units = asset.to_units(Decimal(amount))
    if units is None:
        raise MarketConfigError(f"{symbol}: {what} {amount} is not whole {asset.symbol} units")
    return units


def resolve_market(spec: MarketSpec, assets: Mapping[str, Asset]) -> Market:
    """Check a spec against its assets and compute its integer limits."""
    sym = spec.symbol
    if spec.base not in assets or spec.quote not in assets:
        raise MarketConfigError(f"{sym}: unknown asset {spec.base} or {spec.quote}")
    base, quote = assets[spec.base], assets[spec.quote]
    tick, lot = Decimal(spec.tick_size), Decimal(spec.lot_size)
    if tick <= 0 or lot <= 0:
        raise MarketConfigError(f"{sym}: tick and lot sizes must be positive")
    base_per_lot = _units(spec.lot_size, base, "lot size", sym)
    quote_per_tick_lot = quote.to_units(tick * lot)
    if quote_per_tick_lot is None or quote_per_tick_lot <= 0:
        raise MarketConfigError(f"{sym}: tick x lot = {tick * lot} is not whole {quote.symbol} units")
    if not 0 <= spec.maker_fee_ppm <= spec.taker_fee_ppm < PPM:
        raise MarketConfigError(f"{sym}: need 0 <= maker fee <= taker fee < 100%")
    if spec.status not in ("TRADING", "HALT"):
        raise MarketConfigError(f"{sym}: bad status {spec.status}")
    min_lots = _whole_multiple(Decimal(spec.min_qty), lot)
    max_lots = _whole_multiple(Decimal(spec.max_qty), lot)
    if min_lots is None or max_lots is None or min_lots > max_lots:
        raise MarketConfigError(f"{sym}: min/max qty must be positive multiples of the lot size")
    min_ticks = _whole_multiple(Decimal(spec.min_price or spec.tick_size), tick)
    max_ticks = _whole_multiple(Decimal(spec.max_price), tick) if spec.max_price else None
    if max_ticks is None:
        # Largest price that keeps the notional of max_qty within MAX_AMOUNT.
        max_ticks = MAX_AMOUNT // (max_lots * quote_per_tick_lot)
    if min_ticks is None or min_ticks > max_ticks:
        raise MarketConfigError(f"{sym}: min/max price must be positive multiples of the tick size")
    if max_ticks * max_lots * quote_per_tick_lot > MAX_AMOUNT:
        raise MarketConfigError(f"{sym}: max price x max qty overflows {MAX_AMOUNT}")
    min_notional = quote.to_units(Decimal(spec.min_notional))
    if min_notional is None or min_notional < 0:
        raise MarketConfigError(f"{sym}: min notional is not whole {quote.symbol} units")
    return Market(
        spec=spec,
        base_asset=base,
        quote_asset=quote,
        quote_per_tick_lot=quote_per_tick_lot,
        base_per_lot=base_per_lot,
        min_qty_lots=min_lots,
        max_qty_lots=max_lots,
        min_price_ticks=min_ticks,
        max_price_ticks=max_ticks,
        min_notional_quote=min_notional,
    )


def load_markets(
    path: str | Path | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Market]:
    """Read markets from a TOML file (the packaged default if `path` is None).

    `overrides` maps a symbol to field values that replace the file's, e.g.
    ``{"BTCUSDT": {"status": "HALT"}}``. Reading `MARKETS_FILE_ENV` is the caller's job.
    """
    with open(path or DEFAULT_MARKETS_FILE, "rb") as f:
        raw = tomllib.load(f)
    return markets_from_dict(raw, overrides)


def markets_from_dict(
    raw: Mapping[str, Any], overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Market]:
    """Resolve markets from the parsed form of a markets file (see `markets.toml`)."""
    assets = {sym: Asset(sym, int(dec)) for sym, dec in raw.get("assets", {}).items()}
    for asset in assets.values():
        if not 0 <= asset.decimals <= 18:
            raise MarketConfigError(f"asset {asset.symbol}: decimals must be within 0..18")
    overrides = overrides or {}
    markets: dict[str, Market] = {}
    for entry in raw.get("markets", []):
        fields = {**entry, **overrides.get(entry.get("symbol", ""), {})}
        try:
            spec = msgspec.convert(fields, MarketSpec)
        except msgspec.ValidationError as exc:
            raise MarketConfigError(f"market {entry.get('symbol')}: {exc}") from exc
        if spec.symbol in markets:
            raise MarketConfigError(f"market {spec.symbol} defined twice")
        markets[spec.symbol] = resolve_market(spec, assets)
    unknown = set(overrides) - set(markets)
    if unknown:
        raise MarketConfigError(f"overrides for unknown markets: {sorted(unknown)}")
    return markets
