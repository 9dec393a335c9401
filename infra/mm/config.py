"""Configuration of the market maker, in the shape of hummingbot's pure market making strategy.

One `MarketMakerConfig` holds the strategy defaults (`QuoteParams`), per-market
overrides, the noise trader's settings and the bot's own tunables. Spreads and
shifts are integer basis points (1 bps = 0.01 %), never floats; amounts are Decimal
strings. `exchange mm` builds it from its options; `exchange up` uses the defaults.

| QuoteParams field        | default | meaning |
|--------------------------|---------|---------|
| `bid_spread_bps`         | 10      | distance of the first bid below the (skewed) reference price |
| `ask_spread_bps`         | 10      | distance of the first ask above it |
| `order_levels`           | 3       | orders per side |
| `level_spacing_bps`      | 10      | extra distance of each further level |
| `order_amount`           | None    | base quantity of a first-level order; None: by `order_notional_multiple` |
| `order_notional_multiple`| 4       | first-level order value as a multiple of the market's min notional |
| `level_amount_step_pct`  | 50      | each further level is this much larger (% of the first level) |
| `refresh_seconds`        | 5.0     | seconds between two refreshes of the quotes |
| `refresh_tolerance_bps`  | 2       | an open order this close to its wanted price (and size within 50 %) is kept |
| `inventory_skew`         | True    | shift sizes and prices as the base inventory drifts from its target |
| `target_base_pct`        | 50      | target position of the base inventory inside its limits (%) |
| `skew_price_bps`         | 5       | price shift of both sides at full skew (down when long, up when short) |
| `inventory_range_pct`    | 50      | inventory limits: each asset's balance at start +- this % |
| `reference`              | "walk"  | "walk": seeded random walk in ticks; or a symbol whose mid price is followed |
| `reference_url`          | None    | base URL of the exchange holding the followed symbol (None: this one) |
| `start_price`            | None    | walk's start; None: last price, else `DEFAULT_START_PRICES`, else the mid |
| `walk_step_bps`          | 3       | largest random step per refresh (uniform in +- this, at least 1 tick) |
| `walk_reversion_ppm`     | 5000    | pull toward the start price per refresh (keeps a long run bounded) |
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Final

import msgspec

DEFAULT_START_PRICES: Final[dict[str, str]] = {
    "BTCUSDT": "65000", "ETHUSDT": "3000", "ETHBTC": "0.04615", "SOLUSDT": "150", "BNBUSDT": "600",
    "XRPUSDT": "0.6", "ADAUSDT": "0.45", "DOGEUSDT": "0.15", "LTCUSDT": "80", "SOLBTC": "0.0023077",
}
"""Where the random walk starts in a market with no trades yet (the default markets)."""


class QuoteParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How one market is quoted (see the module table for every field)."""

    bid_spread_bps: int = 10
    ask_spread_bps: int = 10
    order_levels: int = 3
    level_spacing_bps: int = 10
    order_amount: str | None = None
    order_notional_multiple: int = 4
    level_amount_step_pct: int = 50
    refresh_seconds: float = 5.0
    refresh_tolerance_bps: int = 2
    inventory_skew: bool = True
    target_base_pct: int = 50
    skew_price_bps: int = 5
    inventory_range_pct: int = 50
    reference: str = "walk"
    reference_url: str | None = None
    start_price: str | None = None
    walk_step_bps: int = 3
    walk_reversion_ppm: int = 5_000

    def __post_init__(self) -> None:
        if self.bid_spread_bps < 1 or self.ask_spread_bps < 1:
            raise ValueError("spreads must be at least 1 bps")
        if not 1 <= self.order_levels <= 20:
            raise ValueError("order_levels must be 1..20")
        if self.level_spacing_bps < 0 or self.level_amount_step_pct < 0 or self.refresh_tolerance_bps < 0:
            raise ValueError("spacing, level amount step and tolerance must be >= 0")
        if self.bid_spread_bps + (self.order_levels - 1) * self.level_spacing_bps + self.skew_price_bps >= 10_000:
            raise ValueError("the deepest bid would be at or below zero")
        if not 0 <= self.target_base_pct <= 100 or not 0 <= self.inventory_range_pct <= 100:
            raise ValueError("target_base_pct and inventory_range_pct are percentages (0..100)")
        if self.refresh_seconds <= 0 or self.order_notional_multiple < 1 or self.walk_step_bps < 0:
            raise ValueError("refresh_seconds, order_notional_multiple and walk_step_bps must be positive")


class NoiseParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The noise trader: small IOC orders from a second account that cross the spread, so trades print."""

    enabled: bool = True
    interval_seconds: float = 3.0
    """Mean time between two taker orders in one market (exponentially distributed)."""
    notional_multiple: int = 2
    """Order value as a multiple of the market's min notional."""

    def __post_init__(self) -> None:
        if self.interval_seconds <= 0 or self.notional_multiple < 1:
            raise ValueError("interval_seconds and notional_multiple must be positive")


class MarketMakerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole bot: markets, default quoting, per-market overrides, noise flow, status output."""

    markets: tuple[str, ...] = ()
    """Symbols to quote; empty: every TRADING market of `exchangeInfo`."""
    quote: QuoteParams = QuoteParams()
    overrides: dict[str, dict[str, object]] = {}
    """Per-symbol replacements of `quote` fields, e.g. {"BTCUSDT": {"bid_spread_bps": 5}}."""
    noise: NoiseParams = NoiseParams()
    seed: int = 7
    """Seed of the random walks and of the noise trader."""
    status_seconds: float = 30.0
    """Seconds between two status lines (one per market) on stderr; 0: none."""
    funding_multiple: int = 100
    """`exchange up` funds the accounts with this many full quote ladders (or taker orders) per market."""
    request_timeout_seconds: float = 10.0

    def params_for(self, symbol: str) -> QuoteParams:
        """`quote` with `symbol`'s overrides applied (validated)."""
        override = self.overrides.get(symbol)
        if not override:
            return self.quote
        merged = msgspec.structs.asdict(self.quote) | override
        return msgspec.convert(merged, QuoteParams)


def load_config(path: str | None = None, environ: Mapping[str, str] = os.environ) -> MarketMakerConfig:
    """The config from a TOML file (`path`, else `EXCHANGE_MM_CONFIG`, else the defaults).

    The file's tables mirror the structs: top-level fields, `[quote]`, `[noise]` and
    `[overrides.SYMBOL]`, e.g.::

        markets = ["BTCUSDT", "ETHUSDT"]
        [quote]
        bid_spread_bps = 8
        [overrides.BTCUSDT]
        order_levels = 5
    """
    path = path or environ.get("EXCHANGE_MM_CONFIG", "").strip() or None
    if path is None:
        return MarketMakerConfig()
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
        return msgspec.convert(data, MarketMakerConfig)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"{path}: {exc}") from None
