"""How far the persister's archive is behind the streams, and how old the latest snapshots are,
read from outside the processes that write them.

The persister keeps its positions in PostgreSQL (``archive_positions.messages``) and the
streams count what was added (``meta:<stream>``), so any process that reaches both can
tell the archive's lag, whichever process runs the persister (`exchange status`, the
API's `/metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from pipeline.transport.base import Transport


@dataclass(frozen=True, slots=True)
class SnapshotAge:
    """The latest snapshot of one unit (agent) and partition."""

    unit: str
    partition: int
    age_s: float
    capture_ms: float
    """How long the agent paused to capture it."""
    encode_ms: float
    size: int


async def archived_messages(database_url: str, timeout: float = 3.0) -> dict[str, int]:
    """Messages archived per stream (empty if the persister never ran: no table yet)."""
    conn = await asyncpg.connect(database_url, timeout=timeout, command_timeout=timeout)
    try:
        if await conn.fetchval("SELECT to_regclass('archive_positions')") is None:
            return {}
        rows = await conn.fetch("SELECT stream, messages FROM archive_positions")
    finally:
        await conn.close()
    return {row["stream"]: int(row["messages"]) for row in rows}


async def archive_lag(transport: Transport, database_url: str, streams: list[str] | None = None) -> dict[str, int]:
    """Messages added to each stream (every stream, or `streams`) that are not archived yet."""
    archived = await archived_messages(database_url)
    added = {info.stream: info.added for info in await transport.streams()}
    names = streams if streams is not None else sorted(added)
    return {s: max(0, added.get(s, 0) - archived.get(s, 0)) for s in names}


async def latest_snapshots(database_url: str, timeout: float = 3.0) -> list[SnapshotAge]:
    """The newest snapshot of every unit and partition (empty if there is no snapshot table yet)."""
    conn = await asyncpg.connect(database_url, timeout=timeout, command_timeout=timeout)
    try:
        if await conn.fetchval("SELECT to_regclass('snapshots')") is None:
            return []
        rows = await conn.fetch(
            "SELECT DISTINCT ON (agent, partition) agent, partition,"
            " extract(epoch from now() - taken_at)::float8 AS age, capture_ms, encode_ms, size"
            " FROM snapshots ORDER BY agent, partition, id DESC")
    finally:
        await conn.close()
    return [SnapshotAge(r["agent"], int(r["partition"]), float(r["age"]), float(r["capture_ms"]),
                        float(r["encode_ms"]), int(r["size"])) for r in rows]
