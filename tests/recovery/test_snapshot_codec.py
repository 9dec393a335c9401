"""Snapshot payloads round-trip exactly, without any I/O: same state hash, same future behaviour."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from bench.flows import funding, order_flow
from pipeline.core.accounts import BalanceState, HoldState
from pipeline.core.engine import MatchingEngine
from pipeline.core.exchange import ExchangeCore
from pipeline.core.markets import Market
from pipeline.core.messages import CancelAll, Deposit, PlaceOrder, Withdraw
from pipeline.exchange import build_exchange
from pipeline.snapshots.codec import (
    EngineCodec,
    SnapshotDecodeError,
    TablesCodec,
    arrival_order,
    compress,
    decompress,
)
from pipeline.snapshots.manager import build_units
from pipeline.tables.table import Table
from pipeline.transport.memory import MemoryTransport
from tests.core.core_helpers import sample_markets


def _engine_after(markets: dict[str, Market], n: int, seed: int = 5) -> tuple[MatchingEngine, list[Any]]:
    commands = [c for c in order_flow(markets, n, seed=seed) if not isinstance(c, Deposit | Withdraw)]
    engine = MatchingEngine(markets)
    half = len(commands) // 2
    for command in commands[:half]:
        engine.process(command)
    return engine, commands[half:]


def test_engine_round_trip_keeps_hash_and_future_events() -> None:
    markets = sample_markets()
    engine, rest = _engine_after(markets, 4000)
    codec = EngineCodec(markets)
    encoded = codec.encode(engine, 3)
    assert encoded.state_hash == engine.state_hash()
    assert encoded.summary["orders"] == sum(len(engine.book(s)) for s in markets) > 0
    restored = codec.build(codec.decode(decompress(encoded.payload)))
    assert restored.state_hash() == engine.state_hash()
    restored.validate_internal_state()
    for command in rest:  # the same commands give the same events (CancelAll order included)
        assert restored.process(command) == engine.process(command)
    assert restored.state_hash() == engine.state_hash()


def test_cancel_all_after_restore_cancels_in_arrival_order() -> None:
    """Orders of one account resting at several levels: priority order differs from arrival order."""
    markets = sample_markets()
    engine = MatchingEngine(markets)
    prices = [100, 105, 101, 103]
    for i, price in enumerate(prices, start=1):
        engine.process(PlaceOrder(ts=i, account_id=1, symbol="TSTUSD", order_id=i, client_order_id=f"c{i}",
                                  side="BUY", price_ticks=price, qty_lots=1))
    codec = EngineCodec(markets)
    restored = codec.build(codec.decode(decompress(codec.encode(engine, 1).payload)))
    cancel = CancelAll(ts=10, account_id=1, symbol="TSTUSD")
    expected = [e.order_id for e in engine.process(cancel)]
    assert [e.order_id for e in restored.process(cancel)] == expected == [1, 2, 3, 4]


def test_copy_capture_encodes_the_same_state() -> None:
    markets = sample_markets()
    engine, _ = _engine_after(markets, 1000)
    codec = EngineCodec(markets)
    from_copy = codec.encode(codec.capture(engine), 3)
    assert from_copy.state_hash == engine.state_hash() == codec.encode(engine, 3).state_hash


def test_arrival_order_refuses_contradictory_constraints() -> None:
    markets = sample_markets()
    engine, _ = _engine_after(markets, 300)
    orders = engine.open_orders("TSTUSD")
    assert len(orders) >= 2
    by_account: dict[int, list[int]] = {}
    for order in orders:
        by_account.setdefault(order.account_id, []).append(order.order_id)
    assert sorted(o.order_id for o in arrival_order(orders, by_account)) == sorted(o.order_id for o in orders)
    first, second = orders[0], orders[1]
    if (first.side, first.price_ticks) == (second.side, second.price_ticks):
        with pytest.raises(ValueError):
            arrival_order(orders, {0: [second.order_id, first.order_id]})


def _table_pair() -> tuple[Table[Any, Any], Table[Any, Any]]:
    return (Table("balances", tuple[int, str], BalanceState), Table("holds", tuple[str, int], HoldState))


async def test_tables_round_trip_keeps_types_and_hash() -> None:
    balances, holds = _table_pair()
    core = ExchangeCore(sample_markets())
    markets = sample_markets()
    for command in [*funding(markets, range(1, 5)), *order_flow(markets, 1500, seed=2, accounts=range(1, 5))]:
        core.process(command)
    snapshot = core.accounts.snapshot()
    await balances.restore(MemoryTransport(), 0, base={(b.account_id, b.asset): b for b in snapshot.balances})
    await holds.restore(MemoryTransport(), 0, base={(h.symbol, h.order_id): h for h in snapshot.holds})
    codec = TablesCodec([holds, balances])
    encoded = codec.encode(codec.capture(0), 3)
    decoded = codec.decode(decompress(encoded.payload))
    assert decoded["balances"] == balances.partition(0) and decoded["holds"] == holds.partition(0)
    assert all(isinstance(k, tuple) and isinstance(v, BalanceState) for k, v in decoded["balances"].items())
    assert codec.state_hash(decoded) == encoded.state_hash
    assert encoded.summary["accounts"] == len({a for a, _ in balances.partition(0)})
    changed = dict(decoded["balances"])
    key = next(iter(changed))
    changed[key] = msgspec.structs.replace(changed[key], available=changed[key].available + 1)
    assert codec.state_hash({**decoded, "balances": changed}) != encoded.state_hash


def test_corrupt_payloads_are_refused() -> None:
    markets = sample_markets()
    codec = EngineCodec(markets)
    engine, _ = _engine_after(markets, 200)
    payload = codec.encode(engine, 3).payload
    with pytest.raises(SnapshotDecodeError):
        decompress(payload[: len(payload) // 2])
    with pytest.raises(SnapshotDecodeError):
        codec.decode(decompress(compress(b"\x93not an engine")))
    with pytest.raises(SnapshotDecodeError):
        decompress(payload, "lz4")


def test_units_group_agents_that_share_tables() -> None:
    exchange = build_exchange(MemoryTransport(), markets=sample_markets())
    units = build_units(exchange.app, {"match": EngineCodec(exchange.markets)})
    assert units["risk"] is units["settle"]
    assert units["risk"].name == "risk+settle"
    assert {"balances", "holds"} <= {t.name for t in units["risk"].tables}
    assert units["match"].replay and not units["validate"].replay
    assert {u.name for u in units.values()} == {"validate", "risk+settle", "match", "publish"}


def test_state_diff_reports_orders_levels_balances_and_counters(capsys: pytest.CaptureFixture[str]) -> None:
    from infra.cli.snapshot import human_age, human_size
    from infra.cli.state import StateView, accounts_view, engine_view, print_diff

    markets = sample_markets()
    engine, rest = _engine_after(markets, 600)
    a = StateView("A")
    engine_view(a, engine)
    accounts_view(a, [BalanceState(1, "USD", 100, 5)], [])
    for command in rest[:50]:
        engine.process(command)
    b = StateView("B")
    engine_view(b, engine)
    accounts_view(b, [BalanceState(1, "USD", 90, 15)], [])
    assert print_diff(a, b) > 0
    out = capsys.readouterr().out
    assert "orders (" in out and "levels (" in out and "balances (" in out and "1 difference(s)" in out
    assert print_diff(a, a) == 0 and "identical" in capsys.readouterr().out
    assert (human_age(0, 30), human_age(0, 7300), human_size(5000)) == ("30s", "2h", "4.9 KiB")
