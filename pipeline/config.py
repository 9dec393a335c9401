"""Configuration of the exchange pipeline, read from the environment in one place.

| variable                   | default          | meaning                                             |
|----------------------------|------------------|-----------------------------------------------------|
| `EXCHANGE_MARKETS_FILE`    | packaged default | TOML file of assets and markets                     |
| `EXCHANGE_BATCH_SIZE`      | 500              | most entries an agent reads in one batch            |
| `EXCHANGE_ORDERS_MAX_PENDING` | 100000        | unprocessed `orders.in` entries before producers get backpressure |
| `EXCHANGE_LEASE_TTL_MS`    | 10000            | partition lease lifetime (a dead worker's partitions move after it) |
| `EXCHANGE_MARKET_PARTITIONS` | 1              | match partitions (markets spread over them; docs/scaling.md) |
| `EXCHANGE_ACCOUNT_PARTITIONS` | 1             | validate / risk / settle partitions (accounts spread over them) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec


class PipelineConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How the exchange's agents run."""

    markets_file: Path | None = None
    batch_size: int = 500
    batch_messages: int = 5_000
    orders_max_pending: int = 100_000
    lease_ttl_ms: int = 10_000
    market_partitions: int = 1
    account_partitions: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> PipelineConfig:
        """Read the config from `environ`; empty values count as unset."""
        markets = environ.get("EXCHANGE_MARKETS_FILE", "").strip()
        return cls(
            markets_file=Path(markets) if markets else None,
            batch_size=_positive(environ, "EXCHANGE_BATCH_SIZE", 500),
            batch_messages=_positive(environ, "EXCHANGE_BATCH_MESSAGES", 5_000),
            orders_max_pending=_positive(environ, "EXCHANGE_ORDERS_MAX_PENDING", 100_000),
            lease_ttl_ms=_positive(environ, "EXCHANGE_LEASE_TTL_MS", 10_000),
            market_partitions=_positive(environ, "EXCHANGE_MARKET_PARTITIONS", 1),
            account_partitions=_positive(environ, "EXCHANGE_ACCOUNT_PARTITIONS", 1),
        )


def _positive(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value}")
    return value
