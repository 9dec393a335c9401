"""How a unit of agent state becomes a snapshot payload and back: pure functions, no I/O.

Two kinds of state are snapshotted, each through a public, stable view (never the
internal layout, which the core may change):

- the matching engine (agent ``match``, recovered by replaying its input): the core's
  own `EngineSnapshot` (per market: status, next trade id, resting orders in priority
  order, reserved client ids); its hash is `MatchingEngine.state_hash()`;
- changelog tables (validate's market status, risk+settle's balances and holds, publish's
  tables): every key and value of each table partition, encoded with the table's own
  declared types (for the accounts: the core's `BalanceState` / `HoldState`); its hash
  covers every table in name order and every key in a stable order.

Payloads are msgpack, compressed with zstd (level 3 by default): measured at 100k open
orders (bench/snapshot_bench.py) zstd-3 compresses 4-8x faster than zlib-6 for the same
size, and decompresses 2x faster.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec
import zstandard

from pipeline.core.book import OpenOrder
from pipeline.core.engine import EngineSnapshot, MatchingEngine
from pipeline.core.markets import Market
from pipeline.tables.table import Table

ENGINE_FORMAT = "engine/1"
TABLES_FORMAT = "tables/1"
CODEC = "zstd"


class SnapshotDecodeError(ValueError):
    """A payload that cannot be decompressed or decoded."""


class Encoded(msgspec.Struct, frozen=True):
    """A serialised state: the compressed payload, its sizes, hash and a summary."""

    payload: bytes
    raw_size: int
    state_hash: str
    summary: dict[str, int]
    encode_s: float = 0.0
    """Seconds spent serialising and compressing (off the hot path)."""


def compress(raw: bytes, level: int = 3) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(raw)


def decompress(payload: bytes, codec: str = CODEC) -> bytes:
    if codec != CODEC:
        raise SnapshotDecodeError(f"unknown payload codec {codec!r}")
    try:
        return zstandard.ZstdDecompressor().decompress(payload)
    except zstandard.ZstdError as exc:
        raise SnapshotDecodeError(f"payload does not decompress: {exc}") from None


class StateCodec(Protocol):
    """Serialises one kind of state."""

    format: str

    def encode(self, source: Any, level: int) -> Encoded:
        """Serialise `source` (the live object in a forked child, or a captured copy)."""
        ...

    def decode(self, raw: bytes) -> Any:
        """The state data of an uncompressed payload; raises `SnapshotDecodeError`."""
        ...

    def state_hash(self, state: Any) -> str:
        """The hash of decoded state, as the live state would report it."""
        ...

    def summary(self, state: Any) -> dict[str, int]:
        """Counts an operator wants to see (orders, levels, balances...)."""
        ...


def _timed_encode(raw: bytes, state_hash: str, summary: dict[str, int], level: int, started: float) -> Encoded:
    import time

    payload = compress(raw, level)
    return Encoded(payload, len(raw), state_hash, summary, time.perf_counter() - started)


class EngineCodec:
    """The matching engine as its `EngineSnapshot`."""

    format = ENGINE_FORMAT

    def __init__(self, markets: Mapping[str, Market]) -> None:
        self.markets = dict(markets)
        self._decoder = msgspec.msgpack.Decoder(EngineSnapshot)

    def capture(self, engine: MatchingEngine) -> EngineSnapshot:
        """A consistent copy of the engine (costly: used only without fork)."""
        return self.snapshot_of(engine)

    def snapshot_of(self, engine: MatchingEngine) -> EngineSnapshot:
        """`engine.snapshot()`, each market's orders listed in an order they could have arrived in.

        Restoring re-adds orders one by one, which rebuilds both each level's queue and each
        account's list of open orders (the order `CancelAll` cancels in) only if the orders come
        in an arrival-consistent order; priority order would reorder the accounts' lists,
        which `state_hash()` does not see.
        """
        markets = []
        for market in engine.snapshot().markets:
            book = engine.book(market.symbol)
            accounts = {o.account_id for o in market.orders}
            lists = {a: [o.order_id for o in book.account_orders(a)] for a in sorted(accounts)}
            markets.append(msgspec.structs.replace(market, orders=arrival_order(market.orders, lists)))
        return EngineSnapshot(markets)

    def encode(self, source: MatchingEngine | EngineSnapshot, level: int) -> Encoded:
        import time

        started = time.perf_counter()
        if isinstance(source, MatchingEngine):
            snapshot, state_hash = self.snapshot_of(source), source.state_hash()
        else:
            snapshot, state_hash = source, self.state_hash(source)
        return _timed_encode(msgspec.msgpack.encode(snapshot), state_hash, self.summary(snapshot), level, started)

    def decode(self, raw: bytes) -> EngineSnapshot:
        try:
            return self._decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SnapshotDecodeError(f"not an engine snapshot: {exc}") from None

    def build(self, snapshot: EngineSnapshot) -> MatchingEngine:
        """The engine a snapshot describes."""
        try:
            return MatchingEngine.restore(self.markets, snapshot)
        except KeyError as exc:
            raise SnapshotDecodeError(f"snapshot of an unknown market {exc}") from None

    def state_hash(self, state: EngineSnapshot) -> str:
        return self.build(state).state_hash()

    def summary(self, state: EngineSnapshot) -> dict[str, int]:
        orders = levels = ended = trades = 0
        for market in state.markets:
            orders += len(market.orders)
            levels += len({(o.side, o.price_ticks) for o in market.orders})
            ended += len(market.ended_client_ids)
            trades += market.next_trade_id - 1
        return {"markets": len(state.markets), "orders": orders, "levels": levels, "trades": trades,
                "ended_client_ids": ended}


def arrival_order(orders: list[OpenOrder], accounts: Mapping[int, list[int]]) -> list[OpenOrder]:
    """`orders` (priority order) re-sequenced so that every level's queue and every account's list
    (`accounts`: account -> its order ids, oldest first) keep their order; ties by (ts, order id)."""
    by_id = {o.order_id: o for o in orders}
    after: dict[int, list[int]] = {}
    waiting = dict.fromkeys(by_id, 0)

    def edge(first: int, second: int) -> None:
        after.setdefault(first, []).append(second)
        waiting[second] += 1

    last_at: dict[tuple[str, int], int] = {}
    for o in orders:
        level = (o.side, o.price_ticks)
        if level in last_at:
            edge(last_at[level], o.order_id)
        last_at[level] = o.order_id
    for ids in accounts.values():
        for first, second in itertools.pairwise(ids):
            edge(first, second)
    ready = [(by_id[i].ts, i) for i, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    out: list[OpenOrder] = []
    while ready:
        _, order_id = heapq.heappop(ready)
        out.append(by_id[order_id])
        for nxt in after.get(order_id, ()):
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                heapq.heappush(ready, (by_id[nxt].ts, nxt))
    if len(out) != len(orders):
        raise ValueError("the book's level queues and account lists disagree on arrival order")
    return out


TableData = dict[str, dict[Any, Any]]
"""Table name -> one partition's contents."""


class TablesCodec:
    """A set of changelog tables (one partition each) as their keys and values."""

    format = TABLES_FORMAT

    def __init__(self, tables: list[Table[Any, Any]]) -> None:
        self.tables = {table.name: table for table in sorted(tables, key=lambda t: t.name)}
        self._outer = msgspec.msgpack.Decoder(dict[str, bytes])

    def capture(self, partition: int) -> TableData:
        """A consistent copy of the partitions (values are immutable: a shallow copy suffices)."""
        return {name: dict(table.partition(partition)) for name, table in self.tables.items()}

    def view(self, partition: int) -> TableData:
        """The live partitions, not copied (for a forked child, whose memory is already a copy)."""
        return {name: table.partition(partition) for name, table in self.tables.items()}

    def _encoded(self, data: TableData) -> dict[str, bytes]:
        return {name: table.encode_items(sorted(data.get(name, {}).items(), key=lambda kv: repr(kv[0])))
                for name, table in self.tables.items()}

    def encode(self, source: TableData, level: int) -> Encoded:
        import time

        started = time.perf_counter()
        parts = self._encoded(source)
        return _timed_encode(msgspec.msgpack.encode(parts), _hash_parts(parts), self.summary(source), level,
                             started)

    def decode(self, raw: bytes) -> TableData:
        try:
            parts = self._outer.decode(raw)
            if set(parts) != set(self.tables):
                raise SnapshotDecodeError(f"snapshot holds tables {sorted(parts)}, expected {sorted(self.tables)}")
            return {name: self.tables[name].decode_items(blob) for name, blob in parts.items()}
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SnapshotDecodeError(f"not a tables snapshot: {exc}") from None

    def state_hash(self, state: TableData) -> str:
        return _hash_parts(self._encoded(state))

    def summary(self, state: TableData) -> dict[str, int]:
        counts = {name: len(data) for name, data in state.items()}
        balances = state.get("balances")
        if balances is not None:
            counts["accounts"] = len({key[0] for key in balances})
        return counts


def _hash_parts(parts: dict[str, bytes]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(parts):
        digest.update(name.encode())
        digest.update(len(parts[name]).to_bytes(8, "big"))
        digest.update(parts[name])
    return digest.hexdigest()
