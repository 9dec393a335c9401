"""Versioned schema migrations: ``recovery/migrations/NNNN_name.sql``, applied in order, once.

    applied = await migrate(conn)   # the versions applied now ([] if the schema was current)

Applied versions are recorded in ``schema_migrations``. Everything runs in one
transaction under a transaction-scoped advisory lock, so concurrent starts
serialise (the second finds the work done) and a failed migration leaves nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
LOCK_KEY = 0x65786368_6D696772 & 0x7FFFFFFFFFFFFFFF
"""The advisory lock key of migrations (any constant; "exchmigr")."""

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str


def migrations(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration in `folder`, by version; raises ValueError on a duplicate version."""
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file name not NNNN_name.sql: {path.name}")
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"two migrations with version {version}")
        found[version] = Migration(version, match.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


async def migrate(conn: asyncpg.Connection, folder: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the migrations not yet applied; return their versions."""
    pending = migrations(folder)
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in pending:
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", migration.version, migration.name
            )
            applied_now.append(migration.version)
    return applied_now


async def migrate_url(url: str) -> list[int]:
    """`migrate` on a new connection to `url`."""
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
