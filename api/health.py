"""Health of the exchange as the API reports it (`GET /healthz`).

- **Agents** (decide the status): every agent partition running and at most `max_lag`
  entries behind on each input; otherwise 503, so a load balancer stops sending orders
  to an exchange that is not matching them.
- **Persister** (reported; decides the status only past an opt-in threshold): messages
  added to the streams that PostgreSQL has not archived yet, in total and per stream.
  The archive lagging does not stop trading (issue 4: with PostgreSQL down matching goes
  on and the archive catches up later), so by default it never makes `/healthz` fail:
  alert on it from `/metrics` (`exchange_persister_lag_messages`) instead. What a long lag
  does risk is the stream store's memory (nothing unarchived is trimmed); an operator who
  would rather stop taking orders than let that grow sets
  `EXCHANGE_HEALTH_MAX_ARCHIVE_LAG` (messages; 0 = report only, the default), and past it
  `/healthz` answers 503. When PostgreSQL cannot be read the lag is unknown: reported
  (`error`), never a 503 by itself.

| variable                          | default | meaning                                              |
|-----------------------------------|---------|------------------------------------------------------|
| `EXCHANGE_HEALTH_MAX_ARCHIVE_LAG` | 0       | unarchived messages beyond which `/healthz` is 503 (0: never) |
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from pipeline.app import App

ARCHIVE_CACHE_S = 1.0
"""How long one reading of the archive lag is reused (health checks come often; each reading queries PostgreSQL)."""
ARCHIVE_TIMEOUT_S = 1.0
"""How long a health check waits for PostgreSQL before reporting the lag as unknown."""


class HealthConfig(msgspec.Struct, frozen=True):
    """What `/healthz` holds the persister to."""

    max_archive_lag: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> HealthConfig:
        raw = environ.get("EXCHANGE_HEALTH_MAX_ARCHIVE_LAG", "").strip()
        value = int(raw) if raw else 0
        if value < 0:
            raise ValueError("EXCHANGE_HEALTH_MAX_ARCHIVE_LAG must be >= 0")
        return cls(max_archive_lag=value)


class AgentHealth(msgspec.Struct, frozen=True):
    """One agent partition's state."""

    agent: str
    partition: int
    running: bool
    lag: int


class ArchiveHealth(msgspec.Struct, frozen=True):
    """How far the persister's archive is behind the streams."""

    ok: bool
    lag: int | None
    """Messages not archived yet, over every stream (None: PostgreSQL could not be read)."""
    max_lag: int
    """Beyond this the exchange is unhealthy (0: reported only)."""
    streams: dict[str, int]
    """The streams with messages not archived yet."""
    error: str = ""


class Health(msgspec.Struct, frozen=True):
    """The answer of `GET /healthz`."""

    ok: bool
    agents: list[AgentHealth]
    max_lag: int
    persister: ArchiveHealth | None = None
    """None when the API does not know where the archive is (no PostgreSQL configured)."""


async def pipeline_health(app: App, max_lag: int, archive: ArchiveHealth | None = None) -> Health:
    """Whether every agent of `app` runs here and lags at most `max_lag` entries on each input (and the archive)."""
    lags = await app.lag()
    rows = []
    for name, agent in sorted(app.agents.items()):
        for partition in range(agent.partitions):
            runner = app.runners.get((name, partition))
            lag = max((lags.get((name, t.stream(partition)), 0) for t in agent.topics), default=0)
            rows.append(AgentHealth(name, partition, bool(runner and runner.ready), lag))
    ok = all(row.running and row.lag <= max_lag for row in rows) and (archive is None or archive.ok)
    return Health(ok, rows, max_lag, archive)


def judge_archive(lags: Mapping[str, int] | None, max_lag: int, error: str = "") -> ArchiveHealth:
    """The archive's health from its lag per stream (None: unknown, with `error`)."""
    if lags is None:
        return ArchiveHealth(True, None, max_lag, {}, error)
    total = sum(lags.values())
    return ArchiveHealth(max_lag == 0 or total <= max_lag, total, max_lag,
                         {s: n for s, n in sorted(lags.items()) if n > 0})


class ArchiveProbe:
    """Reads the archive lag for `/healthz`, at most once per `ARCHIVE_CACHE_S`."""

    def __init__(self, app: App, database_url: str, config: HealthConfig) -> None:
        self.app = app
        self.database_url = database_url
        self.config = config
        self._last: tuple[float, ArchiveHealth] | None = None

    async def read(self) -> ArchiveHealth:
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < ARCHIVE_CACHE_S:
            return self._last[1]
        from recovery.archive_lag import archived_messages
        from recovery.persister import app_streams

        max_lag = self.config.max_archive_lag
        try:
            archived = await archived_messages(self.database_url, timeout=ARCHIVE_TIMEOUT_S)
            added = {info.stream: info.added for info in await self.app.transport.streams()}
        except Exception as exc:
            health = judge_archive(None, max_lag, f"{type(exc).__name__}: {exc}")
        else:
            health = judge_archive({s: max(0, added.get(s, 0) - archived.get(s, 0)) for s in app_streams(self.app)},
                                   max_lag)
        self._last = (now, health)
        return health


_NO_ARCHIVE = object()


async def archive_health(state: Any) -> ArchiveHealth | None:
    """The archive's health for the app whose Litestar `state` this is (None: no PostgreSQL known).

    The database is the one `/metrics` reads (`DATABASE_URL`, else the embedded PostgreSQL next
    to this API's embedded Valkey), found once per app.
    """
    probe = state.get("archive_probe")
    if probe is None:
        from api.metrics import metrics_database_url

        app = state.exchange.app
        url = state.get("database_url") or metrics_database_url(str(getattr(app.transport, "url", "")))
        probe = _NO_ARCHIVE if url is None else ArchiveProbe(app, url, HealthConfig.from_env())
        state.archive_probe = probe
    return None if probe is _NO_ARCHIVE else await probe.read()
