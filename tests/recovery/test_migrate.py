"""Schema migrations: applied once, idempotent, safe when several processes start together."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from recovery.migrate import migrate, migrate_url, migrations


async def test_migrations_apply_once_then_nothing(db: asyncpg.Connection) -> None:
    versions = [m.version for m in migrations()]
    assert versions and versions == sorted(versions)
    assert await migrate(db) == versions
    assert await migrate(db) == []
    recorded = [r["version"] for r in await db.fetch("SELECT version FROM schema_migrations ORDER BY version")]
    assert recorded == versions
    tables = {r["tablename"] for r in await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"event_archive", "orders", "trades", "ledger", "candles", "archive_positions"} <= tables


async def test_concurrent_starts_apply_each_migration_once(database_flush: str) -> None:
    results = await asyncio.gather(*(migrate_url(database_flush) for _ in range(4)))
    assert sorted(v for result in results for v in result) == [m.version for m in migrations()]


async def test_a_new_migration_is_applied_after_the_old_ones(db: asyncpg.Connection, tmp_path: Path) -> None:
    for m in migrations():
        (tmp_path / f"{m.version:04d}_{m.name}.sql").write_text(m.sql)
    await migrate(db, tmp_path)
    (tmp_path / "9999_extra.sql").write_text("CREATE TABLE extra (x bigint);")
    assert await migrate(db, tmp_path) == [9999]
    (tmp_path / "9998_broken.sql").write_text("CREATE TABLE broken (;")
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await migrate(db, tmp_path)
    assert await db.fetchval("SELECT count(*) FROM schema_migrations WHERE version = 9998") == 0
