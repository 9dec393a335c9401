"""Both backing servers together: embedded ones unless a URL names an external server.

    services = EmbeddedServices(ServicesConfig.from_env(), progress=print)
    urls = services.up()       # ServiceUrls(redis_url=..., database_url=...)
    services.status()          # [ServiceStatus(valkey), ServiceStatus(postgres)]
    services.down()            # stops the embedded ones; external servers are never touched

With `redis_url` / `database_url` set in the config, nothing embedded is started for that
service: `up()` returns the given URL and `status()` reports whether it answers.
"""

from __future__ import annotations

import msgspec
import redis

from infra.config import ServicesConfig
from infra.services.postgres import PostgresService, pg_answers
from infra.services.process import Progress, silent
from infra.services.status import ServiceState, ServiceStatus, redact_url
from infra.services.valkey import ValkeyService


class ServiceUrls(msgspec.Struct, frozen=True, kw_only=True):
    """Where the exchange's backing servers are (may contain credentials: do not log)."""

    redis_url: str
    database_url: str


class EmbeddedServices:
    """Starts, stops and inspects the servers a `ServicesConfig` asks for."""

    def __init__(self, config: ServicesConfig, *, progress: Progress = silent) -> None:
        self.config = config
        self.progress = progress
        self.valkey = ValkeyService(config.data_dir, config.appendfsync, progress=progress)
        self.postgres = PostgresService(config.data_dir, progress=progress)

    def up(self) -> ServiceUrls:
        """Start (or reuse) what is not given by URL; return both URLs."""
        if self.config.database_url is None:
            self.postgres.preflight()  # fail before starting anything
        redis_url = self.config.redis_url
        if redis_url is None:
            redis_url = self.valkey.start()
        else:
            self.progress(f"valkey: using external {redact_url(redis_url)}")
        database_url = self.config.database_url
        if database_url is None:
            database_url = self.postgres.start()
        else:
            self.progress(f"postgres: using external {redact_url(database_url)}")
        return ServiceUrls(redis_url=redis_url, database_url=database_url)

    def down(self) -> list[str]:
        """Stop the embedded servers that run; return the names of those stopped."""
        stopped = []
        if self.config.database_url is None and self.postgres.stop():
            stopped.append("postgres")
        if self.config.redis_url is None and self.valkey.stop():
            stopped.append("valkey")
        return stopped

    def status(self) -> list[ServiceStatus]:
        """One row per service; URLs are redacted."""
        rows = []
        if self.config.redis_url is None:
            rows.append(self.valkey.status())
        else:
            rows.append(_external("valkey", self.config.redis_url, redis_answers(self.config.redis_url)))
        if self.config.database_url is None:
            rows.append(self.postgres.status())
        else:
            rows.append(_external("postgres", self.config.database_url, pg_answers(self.config.database_url)))
        return rows


_CLUSTER_SCHEME = "redis+cluster://"  # as infra.services.cluster's (not imported: `python -m` runs that module)


def redis_answers(url: str) -> bool:
    """Whether the Redis/Valkey server of a URL answers PING (of a ``redis+cluster://`` URL: its seed node)."""
    if url.startswith(_CLUSTER_SCHEME):
        url = "redis://" + url[len(_CLUSTER_SCHEME):]
    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _external(name: str, url: str, answers: bool) -> ServiceStatus:
    state = ServiceState.EXTERNAL_UP if answers else ServiceState.EXTERNAL_DOWN
    return ServiceStatus(name=name, state=state, url=redact_url(url), detail="external (from URL)")
