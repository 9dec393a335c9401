"""Stream trimming: drop only entries that are both archived and no longer needed to rebuild any state.

For each stream the trim bound (XTRIM MINID, exact) is the lowest of:

- the persister's committed position (``archive_positions``): nothing unarchived is ever
  trimmed; a stream the persister does not archive is not trimmed at all, except
- changelog streams (``changelog.<table>:<p>``), which are not events but table state:
  their content up to a snapshot's changelog position is *in* that snapshot, so they
  are bounded by the snapshots alone;
- every registered consumer's committed position (a consumer that committed nothing
  blocks trimming of that stream), and every Redis consumer group's last delivered id and
  oldest pending entry (analytics reading with XREADGROUP);
- for a consumer that rebuilds by replay (match): the input position of its
  `keep_snapshots`-th newest snapshot, so that even if the newest snapshots are corrupt
  the one before can still be replayed from (no such snapshot: no trimming);
- for a changelog: the changelog position of the owning unit's `keep_snapshots`-th newest
  snapshot (none: no trimming);
- ``now - keep_seconds`` (entry ids are milliseconds): recent history stays for readers
  of the streams themselves (recent trades).

Every stream trimmed is recorded in the Redis hash ``trimmed`` (stream -> bound): such a
stream cannot be replayed from the beginning any more, which recovery checks.

On a Valkey/Redis Cluster (`client` a `RedisCluster`) streams are planned by their logical
names, as the transport lists them, and XTRIM / XINFO address each partition's tagged key
(``{p3}orders.accepted:3``: `pipeline.transport.slots`); ``trimmed`` keeps logical names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.snapshots.manager import TRIMMED_KEY, SnapshotRecord, Unit
from pipeline.transport import slots
from pipeline.transport.base import START, Transport, id_key

log = logging.getLogger(__name__)

CHANGELOG_PREFIX = "changelog."


@dataclass(frozen=True)
class TrimRule:
    """Which snapshots cover which streams."""

    replay_consumers: dict[str, str]
    """Consumer (agent) name -> its snapshot unit, for agents rebuilt by replaying input."""
    changelog_units: dict[str, str]
    """Table name -> the snapshot unit holding it."""

    @classmethod
    def from_units(cls, units: Mapping[str, Unit]) -> TrimRule:
        replay = {agent: unit.name for agent, unit in units.items() if unit.replay}
        tables = {table.name: unit.name for unit in units.values() for table in unit.tables}
        return cls(replay, tables)


def _partition(stream: str) -> int:
    _, _, tail = stream.rpartition(":")
    return int(tail) if tail.isdigit() else 0


def _lower(a: str, b: str) -> str:
    return a if id_key(a) <= id_key(b) else b


async def plan_trim(
    transport: Transport,
    archived: Mapping[str, str],
    coverage: Mapping[tuple[str, int], SnapshotRecord],
    rule: TrimRule,
    *,
    keep_seconds: float,
    now_ms: int | None = None,
    client: Any = None,
) -> dict[str, str]:
    """Stream -> the MINID it may be trimmed to (streams that may not be trimmed are left out)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    recent = f"{max(0, now - int(keep_seconds * 1000))}-0"
    plan: dict[str, str] = {}
    positions: dict[str, dict[str, str]] = {}
    for info in await transport.streams():
        stream = info.stream
        partition = _partition(stream)
        if stream.startswith(CHANGELOG_PREFIX):
            table = stream[len(CHANGELOG_PREFIX):].rpartition(":")[0]
            unit = rule.changelog_units.get(table)
            record = coverage.get((unit, partition)) if unit else None
            bound = record.changelogs.get(stream, START) if record else START
        else:
            bound = archived.get(stream, START)
        for consumer in await transport.consumers(stream):
            if consumer not in positions:
                positions[consumer] = {s: p.last_id for s, p in (await transport.positions(consumer)).items()}
            bound = _lower(bound, positions[consumer].get(stream, START))
            unit = rule.replay_consumers.get(consumer)
            if unit is not None:
                record = coverage.get((unit, partition))
                bound = _lower(bound, record.inputs.get(stream, START) if record else START)
        if client is not None:
            bound = _lower(bound, await _groups_bound(client, stream))
        bound = _lower(bound, recent)
        if bound != START:
            plan[stream] = bound
    return plan


def stream_key(client: Any, stream: str) -> str:
    """The key of logical stream `stream` for `client` (tagged on a cluster)."""
    from redis.asyncio.cluster import RedisCluster

    return slots.physical(stream) if isinstance(client, RedisCluster) else stream


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _groups_bound(client: Any, stream: str) -> str:
    """The lowest entry any Redis consumer group of `stream` still needs (far past the end if none)."""
    bound = f"{2**63 - 1}-0"
    key = stream_key(client, stream)
    for group in await client.xinfo_groups(key):
        info = {_text(k): v for k, v in group.items()}
        bound = _lower(bound, _text(info.get("last-delivered-id", START)))
        if int(info.get("pending", 0) or 0):
            pending = {_text(k): v for k, v in (await client.xpending(key, info["name"])).items()}
            if pending.get("min"):
                bound = _lower(bound, _text(pending["min"]))
    return bound


async def apply_trim(client: Any, plan: Mapping[str, str]) -> dict[str, int]:
    """XTRIM each stream to its bound (exact MINID), remember it in ``trimmed``; entries removed per stream."""
    removed: dict[str, int] = {}
    for stream, bound in plan.items():
        n = int(await client.xtrim(stream_key(client, stream), minid=bound, approximate=False))
        if n:
            await client.hset(TRIMMED_KEY, stream, bound)
            removed[stream] = n
    if removed:
        log.info("trimmed %s", ", ".join(f"{s}: {n}" for s, n in removed.items()))
    return removed


class StreamTrimmer:
    """Plans and applies trimming from the snapshot store's coverage and the persister's positions."""

    def __init__(self, client: Any, transport: Transport, store: Any, rule: TrimRule, *, keep_snapshots: int = 2,
                 keep_seconds: float = 3600.0) -> None:
        self.client = client
        self.transport = transport
        self.store = store
        self.rule = rule
        self.keep_snapshots = keep_snapshots
        self.keep_seconds = keep_seconds

    async def plan(self) -> dict[str, str]:
        archived = await self.store.archived()
        coverage = await self.store.coverage(self.keep_snapshots)
        return await plan_trim(self.transport, archived, coverage, self.rule, keep_seconds=self.keep_seconds,
                               client=self.client)

    async def run(self) -> dict[str, int]:
        """Trim every stream as far as is safe now; entries removed per stream."""
        return await apply_trim(self.client, await self.plan())
