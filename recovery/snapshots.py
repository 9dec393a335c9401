"""Wiring snapshots into a running exchange: PostgreSQL store, engine codec, trimming after each snapshot.

    manager = attach_snapshots(exchange, database_url)   # before exchange.app.start()

`exchange up` and `exchange worker` call this; the config comes from the environment
(`pipeline.snapshots.config`).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from pipeline.config import PipelineConfig
from pipeline.exchange import Exchange
from pipeline.snapshots.codec import EngineCodec, SnapshotDecodeError, decompress
from pipeline.snapshots.config import SnapshotConfig
from pipeline.snapshots.manager import (
    MemorySnapshotStore,
    SnapshotManager,
    SnapshotRecord,
    SnapshotStore,
    Unit,
    build_units,
)
from recovery.snapshot_store import PostgresSnapshotStore
from recovery.trim import StreamTrimmer, TrimRule

ENGINE_AGENT = "match"
"""The agent whose in-memory state is the matching engine."""


def attach_snapshots(exchange: Exchange, database_url: str | None, config: SnapshotConfig | None = None,
                     ) -> SnapshotManager:
    """Make `exchange`'s agents snapshot into (and restore from) the database at `database_url`.

    Without a database (None) agents rebuild from the streams alone, and refuse to if the
    streams were trimmed (their state would be incomplete).
    """
    config = config or SnapshotConfig.from_env()
    app = exchange.app
    store: SnapshotStore
    if database_url is None:
        store = MemorySnapshotStore()
        store.down = True
        config = msgspec.structs.replace(config, interval_s=0)
    else:
        store = PostgresSnapshotStore(database_url)
    client = getattr(app.transport, "client", None)
    manager = SnapshotManager(app, store, config, engine_codecs={ENGINE_AGENT: EngineCodec(exchange.markets)},
                              redis=client)
    if config.trim and client is not None and database_url is not None:
        trimmer = StreamTrimmer(client, app.transport, store, TrimRule.from_units(manager.units),
                                keep_snapshots=config.trim_keep_snapshots, keep_seconds=config.trim_keep_seconds)
        manager.after_snapshot = trimmer.run
    app.snapshots = manager
    # recovery times and snapshot results are worth seeing at the default WARNING level of the tools
    logging.getLogger("pipeline.snapshots.manager").setLevel(logging.INFO)
    logging.getLogger("recovery.trim").setLevel(logging.INFO)
    return manager


def tool_units(config: PipelineConfig | None = None) -> dict[str, Unit]:
    """Unit name -> unit, as the exchange declares them (for tools decoding snapshots; no I/O)."""
    from pipeline.exchange import build_exchange
    from pipeline.transport.memory import MemoryTransport

    exchange = build_exchange(MemoryTransport(), config or PipelineConfig.from_env())
    units = build_units(exchange.app, {ENGINE_AGENT: EngineCodec(exchange.markets)})
    return {unit.name: unit for unit in units.values()}


def decode_record(record: SnapshotRecord, units: dict[str, Unit]) -> tuple[Any, str]:
    """A snapshot's state (an engine, or table name -> contents) and its recomputed hash.

    Raises `SnapshotDecodeError` if the payload does not decode or the unit is unknown.
    """
    unit = units.get(record.unit)
    if unit is None:
        raise SnapshotDecodeError(f"unknown unit {record.unit!r} (known: {', '.join(sorted(units))})")
    codec: Any = unit.codec
    state = codec.decode(decompress(record.payload, record.codec))
    if isinstance(codec, EngineCodec):
        engine = codec.build(state)
        return engine, engine.state_hash()
    return state, codec.state_hash(state)
