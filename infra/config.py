"""Configuration of the exchange's components, read from the environment in one place.

Each component gets one frozen config object with documented defaults, built by
its `from_env(environ)` classmethod. Nothing here reads the environment at import.

`ServicesConfig` (the backing servers, see `infra.services`):

| variable              | default  | meaning                                                      |
|-----------------------|----------|--------------------------------------------------------------|
| `EXCHANGE_DATA_DIR`   | `./var`  | folder of the embedded servers' data, logs, pid and port files |
| `REDIS_URL`           | unset    | an existing Valkey/Redis; unset or empty => embedded Valkey   |
| `DATABASE_URL`        | unset    | an existing PostgreSQL; unset or empty => embedded PostgreSQL |
| `EXCHANGE_APPENDFSYNC`| everysec | embedded Valkey AOF fsync policy: `always`, `everysec`, `no`  |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal

import msgspec

from pipeline.errors import ExchangeError

AppendFsync = Literal["always", "everysec", "no"]
APPENDFSYNC_POLICIES: Final[tuple[AppendFsync, ...]] = ("always", "everysec", "no")

DEFAULT_DATA_DIR: Final = "./var"
DEFAULT_APPENDFSYNC: Final[AppendFsync] = "everysec"


class ConfigError(ExchangeError):
    """An environment variable holds a value the exchange cannot use."""


class ServicesConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where the backing servers are: embedded ones under `data_dir`, or external ones by URL."""

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    """Folder of the embedded servers' files (`valkey/`, `postgres/`)."""
    redis_url: str | None = None
    """URL of an existing Valkey/Redis; None starts the embedded Valkey."""
    database_url: str | None = None
    """URL of an existing PostgreSQL; None starts the embedded PostgreSQL."""
    appendfsync: AppendFsync = DEFAULT_APPENDFSYNC
    """AOF fsync policy of the embedded Valkey (an external server keeps its own)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServicesConfig:
        """Read the config from `environ`; empty values count as unset."""
        data_dir = environ.get("EXCHANGE_DATA_DIR", "").strip() or DEFAULT_DATA_DIR
        return cls(
            data_dir=Path(data_dir).expanduser(),
            redis_url=environ.get("REDIS_URL", "").strip() or None,
            database_url=environ.get("DATABASE_URL", "").strip() or None,
            appendfsync=parse_appendfsync(environ.get("EXCHANGE_APPENDFSYNC", "")),
        )


def parse_appendfsync(value: str) -> AppendFsync:
    """`always|everysec|no` (case-insensitive); empty means the default."""
    policy = value.strip().lower() or DEFAULT_APPENDFSYNC
    if policy not in APPENDFSYNC_POLICIES:
        raise ConfigError(f"EXCHANGE_APPENDFSYNC={value!r} is not one of {', '.join(APPENDFSYNC_POLICIES)}")
    return policy
