"""Binance stream names: `<symbol>@<kind>[...]` with the symbol in lower case, or `!ticker@arr`."""

from __future__ import annotations

import re
from typing import Final

from pipeline.agents.publish.candles import INTERVALS

ALL_TICKERS: Final = "!ticker@arr"
ALL_MINI_TICKERS: Final = "!miniTicker@arr"
PARTIAL_LEVELS: Final = (5, 10, 20)
_NAME_RE: Final = re.compile(r"^([a-z0-9\-_.]{1,20})@(.+)$")
_SIMPLE: Final = frozenset({"depth", "depth@100ms", "depth@1000ms", "trade", "aggTrade", "ticker", "miniTicker",
                            "bookTicker"})


def parse_stream(name: str, symbols: set[str]) -> tuple[str, str] | None:
    """(SYMBOL, kind) of a market stream name, or None if it is not one.

    kind is one of `_SIMPLE`, `kline_<interval>`, `depth<N>` / `depth<N>@100ms` /
    `depth<N>@1000ms` (N in 5, 10, 20), or `!ticker@arr` / `!miniTicker@arr` (symbol "").
    """
    if name in (ALL_TICKERS, ALL_MINI_TICKERS):
        return "", name
    match = _NAME_RE.match(name)
    if match is None:
        return None
    symbol, kind = match.group(1).upper(), match.group(2)
    if symbol not in symbols:
        return None
    if kind in _SIMPLE:
        return symbol, kind
    if kind.startswith("kline_") and kind[len("kline_"):] in INTERVALS:
        return symbol, kind
    if partial_levels(kind):
        return symbol, kind
    return None


def partial_levels(kind: str) -> int:
    """N of a `depth<N>[@100ms|@1000ms]` kind, else 0."""
    head = kind.split("@", 1)[0]
    if kind.count("@") > 1 or not head.startswith("depth") or (
            "@" in kind and kind.split("@", 1)[1] not in ("100ms", "1000ms")):
        return 0
    digits = head[len("depth"):]
    return int(digits) if digits in ("5", "10", "20") else 0


def stream_name(symbol: str, kind: str) -> str:
    return f"{symbol.lower()}@{kind}"
