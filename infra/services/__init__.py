"""The backing servers: embedded Valkey and PostgreSQL from PyPI wheels, or external ones by URL.

Public API (everything else in this package is internal):

- `EmbeddedServices(config, progress=...)`: `up() -> ServiceUrls(redis_url, database_url)` starts
  (or reuses) only what the config does not give by URL; `down() -> list[str]` stops the embedded
  servers; `status() -> list[ServiceStatus]`.
- `ValkeyService(data_dir, appendfsync="everysec", port=None, progress=...)` and
  `PostgresService(data_dir, port=None, progress=...)`: `start() -> url` (idempotent: a running
  server of the same data dir is reused), `stop() -> bool`, `status() -> ServiceStatus`,
  properties `url` and `pid`.
- `ServiceStatus` / `ServiceState`: one row of `exchange services status`; `redact_url(url)`.
- `ServiceError` (root: `pipeline.errors.ExchangeError`), `ServiceStartError` (carries the log tail).

Servers are detached from the starting process (they outlive it), bind 127.0.0.1 on a port chosen
once and remembered in the data dir, and keep everything under `<data_dir>/valkey` and
`<data_dir>/postgres`. `progress` receives human-readable lines (no secrets).
"""

from infra.services.embedded import EmbeddedServices, ServiceUrls, redis_answers
from infra.services.errors import ServiceError, ServiceStartError
from infra.services.postgres import PostgresService, pg_answers
from infra.services.status import ServiceState, ServiceStatus, redact_url
from infra.services.valkey import ValkeyService

__all__ = [
    "EmbeddedServices",
    "PostgresService",
    "ServiceError",
    "ServiceStartError",
    "ServiceState",
    "ServiceStatus",
    "ServiceUrls",
    "ValkeyService",
    "pg_answers",
    "redact_url",
    "redis_answers",
]
