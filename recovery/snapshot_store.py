"""Snapshots in PostgreSQL (table ``snapshots``, migration 0002): the store the agents write and tools read.

    store = PostgresSnapshotStore(database_url)
    await store.save(record); await store.recent("match", 0, 3); await store.get(12)

Connects lazily (applying migrations) and reconnects after a failure, so a store
created while PostgreSQL is down works once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import asyncpg

from pipeline.snapshots.manager import SnapshotRecord
from recovery.migrate import migrate

_COLUMNS = ("id, agent, partition, extract(epoch from taken_at) AS taken_at, offsets, state_hash, raw_size, format,"
            " codec, reason, request_id, summary, capture_ms, encode_ms, size")


class PostgresSnapshotStore:
    """The `SnapshotStore` of production."""

    def __init__(self, database_url: str, *, timeout: float = 5.0) -> None:
        self.database_url = database_url
        self.timeout = timeout
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await asyncpg.connect(self.database_url, timeout=self.timeout, command_timeout=60)
            try:
                await migrate(conn)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _run(self, fn: Any) -> Any:
        async with self._lock:
            try:
                return await fn(await self._connection())
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                await self._drop()
                raise

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    async def save(self, record: SnapshotRecord) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            row = await conn.fetchrow(
                "INSERT INTO snapshots (agent, partition, offsets, state_hash, size, raw_size, format, codec, reason,"
                " request_id, summary, capture_ms, encode_ms, payload)"
                " VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14)"
                " RETURNING id, extract(epoch from taken_at) AS taken_at",
                record.unit, record.partition,
                json.dumps({"inputs": record.inputs, "changelogs": record.changelogs}), record.state_hash,
                len(record.payload), record.raw_size, record.format, record.codec, record.reason,
                record.request_id, json.dumps(record.summary), record.capture_ms, record.encode_ms,
                record.payload)
            record.id, record.taken_at = int(row["id"]), float(row["taken_at"])
            return record.id

        result: int = await self._run(run)
        return result

    async def recent(self, unit: str, partition: int, limit: int) -> list[SnapshotRecord]:
        async def run(conn: asyncpg.Connection) -> list[SnapshotRecord]:
            rows = await conn.fetch(f"SELECT {_COLUMNS}, payload FROM snapshots WHERE agent = $1 AND partition = $2"
                                    " ORDER BY id DESC LIMIT $3", unit, partition, limit)
            return [to_record(r) for r in rows]

        result: list[SnapshotRecord] = await self._run(run)
        return result

    async def prune(self, unit: str, partition: int, keep: int) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            status = await conn.execute(
                "DELETE FROM snapshots WHERE agent = $1 AND partition = $2 AND id < ("
                " SELECT min(id) FROM (SELECT id FROM snapshots WHERE agent = $1 AND partition = $2"
                " ORDER BY id DESC LIMIT $3) newest)", unit, partition, keep)
            return int(status.split()[-1])

        result: int = await self._run(run)
        return result

    async def get(self, snapshot_id: int, *, payload: bool = True) -> SnapshotRecord | None:
        """One snapshot by id."""
        async def run(conn: asyncpg.Connection) -> SnapshotRecord | None:
            extra = ", payload" if payload else ""
            row = await conn.fetchrow(f"SELECT {_COLUMNS}{extra} FROM snapshots WHERE id = $1", snapshot_id)
            return None if row is None else to_record(row)

        result: SnapshotRecord | None = await self._run(run)
        return result

    async def listing(self, limit: int = 50, request_id: int | None = None) -> list[SnapshotRecord]:
        """The newest snapshots (without payloads), newest first; only one request's with `request_id`."""
        async def run(conn: asyncpg.Connection) -> list[SnapshotRecord]:
            if request_id is not None:
                rows = await conn.fetch(f"SELECT {_COLUMNS} FROM snapshots WHERE request_id = $1 ORDER BY id",
                                        request_id)
            else:
                rows = await conn.fetch(f"SELECT {_COLUMNS} FROM snapshots ORDER BY id DESC LIMIT $1", limit)
            return [to_record(r) for r in rows]

        result: list[SnapshotRecord] = await self._run(run)
        return result

    async def coverage(self, keep: int) -> dict[tuple[str, int], SnapshotRecord]:
        """Per unit partition, the `keep`-th newest snapshot (without payload): what trimming must keep."""
        async def run(conn: asyncpg.Connection) -> dict[tuple[str, int], SnapshotRecord]:
            rows = await conn.fetch(
                f"SELECT * FROM (SELECT {_COLUMNS}, row_number() OVER (PARTITION BY agent, partition ORDER BY id DESC)"
                " AS n FROM snapshots) ranked WHERE n = $1", keep)
            return {(r["agent"], r["partition"]): to_record(r) for r in rows}

        result: dict[tuple[str, int], SnapshotRecord] = await self._run(run)
        return result

    async def archived(self) -> dict[str, str]:
        """The persister's committed positions: stream -> last archived entry id."""
        async def run(conn: asyncpg.Connection) -> dict[str, str]:
            rows = await conn.fetch("SELECT stream, last_id FROM archive_positions")
            return {r["stream"]: r["last_id"] for r in rows}

        result: dict[str, str] = await self._run(run)
        return result

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
            if not conn.is_closed():
                conn.terminate()


def to_record(row: Any) -> SnapshotRecord:
    """A `SnapshotRecord` from a row of ``snapshots`` (payload empty if not selected)."""
    offsets = row["offsets"]
    offsets = json.loads(offsets) if isinstance(offsets, str) else offsets
    summary = row["summary"]
    summary = json.loads(summary) if isinstance(summary, str) else summary
    keys = row.keys()
    return SnapshotRecord(
        id=row["id"], unit=row["agent"], partition=row["partition"], taken_at=float(row["taken_at"]),
        inputs=offsets.get("inputs", {}), changelogs=offsets.get("changelogs", {}), state_hash=row["state_hash"],
        format=row["format"], codec=row["codec"], payload=bytes(row["payload"]) if "payload" in keys else b"",
        raw_size=row["raw_size"], summary=summary, reason=row["reason"], request_id=row["request_id"],
        capture_ms=row["capture_ms"], encode_ms=row["encode_ms"], size=row["size"])
