"""What the API handlers share: the exchange, its Redis client, markets, the command writer, timeouts."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from litestar.connection import ASGIConnection

from api.errors import invalid_symbol
from api.keycache import KeyCache
from api.store import stream_key
from api.writer import CommandWriter
from pipeline.core.markets import Asset, Market
from pipeline.exchange import Exchange

T = TypeVar("T")


@dataclass
class ApiConfig:
    """Tunables of the API (defaults suit production; tests shorten the waits).

    | variable                        | default | meaning                                       |
    |---------------------------------|---------|-----------------------------------------------|
    | `EXCHANGE_API_RESULT_TIMEOUT_MS`| 5000    | RESULT/FULL orders and cancels wait this long |
    | `EXCHANGE_API_WEIGHT_PER_MINUTE`| 6000    | request weight per client IP per minute (0 = no limit) |
    | `EXCHANGE_API_WS_QUEUE`         | 1000    | messages a WebSocket may have unsent before it is dropped |
    | `EXCHANGE_API_WS_MESSAGES_PER_S`| 5       | requests per second per market-stream connection (0 = no limit) |
    | `EXCHANGE_API_WS_CONNECTIONS_PER_5M` | 300 | WebSocket connection attempts per IP per 5 minutes (0 = no limit) |
    | `EXCHANGE_API_KEY_CACHE_MS`     | 1000    | ms an opened API key is reused (0 = off) |
    """

    result_timeout_s: float = 5.0
    """How long RESULT/FULL orders and cancels wait for the engine's outcome."""
    lookup_wait_s: float = 1.0
    """How long a query for an acknowledged order waits for it to reach the read model."""
    max_body_bytes: int = 64 * 1024
    weight_per_minute: int = 6000
    """Binance REQUEST_WEIGHT limit per client IP and minute; 0 turns rate limiting off."""
    ws_queue: int = 1000
    """Messages a WebSocket connection may have waiting to be sent; beyond that for `ws_slow_grace_s` (or
    beyond ten times it at once) it is dropped as a slow consumer."""
    ws_slow_grace_s: float = 2.0
    """How long a connection may stay over `ws_queue` (a burst it is draining) before it is dropped; 0:
    dropped as soon as it is over."""
    ws_messages_per_second: int = 5
    """Binance: incoming messages per second per market-stream connection; beyond, it is closed."""
    ws_connections_per_5m: int = 300
    """Binance: connection attempts per IP per 5 minutes; beyond, the handshake gets HTTP 429."""
    key_cache_s: float = 1.0
    """How long an API process reuses an API key it has opened (`api.keycache`); 0 = look it up every time."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ApiConfig:
        def number(name: str, default: int) -> int:
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            value = int(raw)
            if value < 0:
                raise ValueError(f"{name} must be >= 0")
            return value

        return cls(result_timeout_s=number("EXCHANGE_API_RESULT_TIMEOUT_MS", 5000) / 1000,
                   weight_per_minute=number("EXCHANGE_API_WEIGHT_PER_MINUTE", 6000),
                   ws_queue=max(1, number("EXCHANGE_API_WS_QUEUE", 1000)),
                   ws_slow_grace_s=number("EXCHANGE_API_WS_SLOW_GRACE_MS", 2000) / 1000,
                   ws_messages_per_second=number("EXCHANGE_API_WS_MESSAGES_PER_S", 5),
                   ws_connections_per_5m=number("EXCHANGE_API_WS_CONNECTIONS_PER_5M", 300),
                   key_cache_s=number("EXCHANGE_API_KEY_CACHE_MS", 1000) / 1000)


@dataclass
class ApiContext:
    exchange: Exchange
    client: Any
    """redis.asyncio client of the read models (the transport's own client)."""
    writer: CommandWriter
    config: ApiConfig = field(default_factory=ApiConfig)
    keys: KeyCache = field(init=False)
    """The API keys this process has opened (signed requests look keys up here)."""

    def __post_init__(self) -> None:
        self.keys = KeyCache(self.client, self.config.key_cache_s)

    @property
    def markets(self) -> dict[str, Market]:
        return self.exchange.markets

    def market(self, symbol: str) -> Market:
        market = self.exchange.markets.get(symbol)
        if market is None:
            raise invalid_symbol()
        return market

    def assets(self) -> dict[str, Asset]:
        out: dict[str, Asset] = {}
        for market in self.exchange.markets.values():
            out[market.base_asset.symbol] = market.base_asset
            out[market.quote_asset.symbol] = market.quote_asset
        return out

    @staticmethod
    def now_ms() -> int:
        return time.time_ns() // 1_000_000


def api_context(connection: ASGIConnection[Any, Any, Any, Any]) -> ApiContext:
    """The API's context from a request or WebSocket (the app's state, not a per-request copy of it:
    a handler parameter `state: State` makes Litestar build a new State, lock included, per request)."""
    ctx: ApiContext = connection.app.state.api
    return ctx


async def pages_newest_first(client: Any, stream: str, decode: Callable[[bytes], list[Any]],
                             page: int = 200) -> AsyncIterator[list[list[Any]]]:
    """`stream`'s entries read backwards, `page` at a time: per page, each entry's decoded batch, newest first."""
    upper = "+"
    while True:
        entries = await client.xrevrange(stream_key(client, stream), max=upper, min="-", count=page)
        if not entries:
            return
        yield [decode(fields[b"d"]) if b"d" in fields else [] for _, fields in entries]
        last = entries[-1][0]
        upper = "(" + (last.decode() if isinstance(last, bytes) else str(last))


def page_of(items: list[T], limit: int, *, from_start: bool) -> list[T]:
    """Binance's paging: the first `limit` items when a start (time or id) was given, else the newest `limit`."""
    return items[:limit] if from_start else items[-limit:]


def fmt(value: Decimal, decimals: int = 8) -> str:
    """A decimal string with exactly `decimals` places, as Binance prints amounts."""
    return f"{value:.{decimals}f}"


def price_str(market: Market, ticks: int) -> str:
    return fmt(market.ticks_to_price(ticks), market.quote_asset.decimals)


def qty_str(market: Market, lots: int) -> str:
    return fmt(market.lots_to_qty(lots), market.base_asset.decimals)


def quote_str(market: Market, units: int) -> str:
    return fmt(market.quote_asset.from_units(units), market.quote_asset.decimals)


def units_str(asset: Asset, units: int) -> str:
    return fmt(asset.from_units(units), asset.decimals)
