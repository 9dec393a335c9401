"""Shared fixtures: real backing servers for the test session, started only when a test asks.

- `redis_url` (session): a private embedded Valkey (AOF everysec) in a temporary folder,
  stopped and removed at the end; or `TEST_REDIS_URL` if set (then nothing is started).
- `database_url` (session): a private embedded PostgreSQL (database `exchange`), likewise;
  or `TEST_DATABASE_URL`.
- `service_urls` (session): both, as an `infra.services.ServiceUrls`.
- `redis_flush` (function): `redis_url` after FLUSHALL, so the test starts from an empty server.
- `database_flush` (function): `database_url` after dropping and recreating schema `public`.
- `transport` (function, two params): an empty `MemoryTransport`, then an empty `RedisTransport`
  on `redis_url`, so a test runs against both stream stores.
- `service_dir` (function): an empty temporary folder the embedded PostgreSQL can use even
  as root (its parents are enterable by the `exchange-pg` user), removed afterwards.

Note: the flush fixtures also wipe a server given by TEST_REDIS_URL / TEST_DATABASE_URL: point
those only at servers meant for tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis

from api.secretbox import KEY_ENV, new_key_text
from infra.services import PostgresService, ServiceUrls, ValkeyService
from infra.services.postgres import pginstall
from pipeline.transport.base import Transport
from pipeline.transport.memory import MemoryTransport
from pipeline.transport.redis import RedisTransport


def make_service_dir(prefix: str) -> Path:
    """A new folder under the system temp dir, mode 755 so a dropped-privilege server can enter it.

    (pytest's own tmp_path lives under a 0700 folder that the `exchange-pg` user cannot traverse.)
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session", autouse=True)
def api_secret_key() -> str:
    """One server key for API secrets (`api.secretbox`) for this process and every one it starts,
    so accounts made in a test open in a server started with another data dir."""
    return os.environ.setdefault(KEY_ENV, new_key_text())


@pytest.fixture
def service_dir() -> Iterator[Path]:
    """An empty folder for embedded servers' data (see `make_service_dir`), removed afterwards."""
    path = make_service_dir("exchange-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _session_server(env: str, prefix: str, start: Callable[[Path], tuple[str, Callable[[], None]]]) -> Iterator[str]:
    """The URL in `env` if set, else a private embedded server started in a fresh folder."""
    external = os.environ.get(env, "").strip()
    if external:
        yield external
        return
    folder = make_service_dir(prefix)
    url, stop = start(folder)
    try:
        yield url
    finally:
        stop()
        shutil.rmtree(folder, ignore_errors=True)


def _start_valkey(folder: Path) -> tuple[str, Callable[[], None]]:
    service = ValkeyService(folder, appendfsync="everysec")
    return service.start(), service.stop


def _start_postgres(folder: Path) -> tuple[str, Callable[[], None]]:
    service = PostgresService(folder)
    return service.start(), service.stop


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Valkey for this test session: TEST_REDIS_URL, else a private embedded one."""
    yield from _session_server("TEST_REDIS_URL", "exchange-test-valkey-", _start_valkey)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """URL of a PostgreSQL database for this test session: TEST_DATABASE_URL, else a private embedded one."""
    yield from _session_server("TEST_DATABASE_URL", "exchange-test-postgres-", _start_postgres)


@pytest.fixture(scope="session")
def service_urls(redis_url: str, database_url: str) -> ServiceUrls:
    """Both session servers' URLs."""
    return ServiceUrls(redis_url=redis_url, database_url=database_url)


@pytest.fixture
def redis_flush(redis_url: str) -> str:
    """`redis_url`, emptied (FLUSHALL) before the test."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_url


@pytest.fixture
def database_flush(database_url: str) -> str:
    """`database_url`, with schema `public` dropped and recreated before the test."""
    subprocess.run(
        [str(pginstall() / "bin" / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database_url,
         "-c", "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;"],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return database_url


@pytest.fixture(params=["memory", "redis"])
async def transport(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Transport]:
    """A fresh, empty transport of each kind (the Redis one on `redis_url`, flushed)."""
    if request.param == "memory":
        yield MemoryTransport()
        return
    redis_transport = RedisTransport(redis_url)
    await redis_transport.client.flushall()
    yield redis_transport
    await redis_transport.close()
