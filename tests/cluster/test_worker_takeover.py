"""Three workers on a 3-master Valkey Cluster; one is SIGKILLed mid-flow; its partitions move.

Markets over 3 match partitions and accounts over 3 accounts partitions. The final
books and balances (state hashes) equal the pure core run in one process over the same
commands, in the order each market's matcher saw them; every market's events appear
exactly once and in order, every trade leg is settled once, and the surviving workers
release their leases when stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.flows import funding, order_flow
from pipeline.app import wait_for_condition
from pipeline.config import PipelineConfig
from pipeline.core.messages import FeeCharged, FeesTransferred, LegSettled, TradeExecuted
from pipeline.exchange import Exchange, build_exchange, merged_accounts, merged_engine_hash
from pipeline.transport import slots
from pipeline.transport.cluster import ClusterTransport
from tests.cluster.exchange_checks import (
    as_matched,
    by_market,
    difference,
    orders_events_by_market,
    settled,
    ten_markets,
    ten_markets_toml,
)
from tests.pipeline.oracle import StagedOracle
from tests.pipeline.test_exchange_e2e import topic_values

PARTITIONS = 3
ACCOUNT_PARTITIONS = 3
LEASE_TTL_MS = 3000
MAX_PARTITIONS = 4  # 10 leases (validate x 3, accounts x 3, match x 3, publish) over 3 workers


class Workers:
    """`exchange worker` processes with a shared environment; stdout and stderr kept in files."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        out = (self.folder / f"worker{n}.log").open("wb")
        command = [sys.executable, "-m", "infra", "worker", "--max-partitions", str(MAX_PARTITIONS)]
        proc = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).parents[2])
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.folder.glob("worker*.log")))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(tmp_path: Path, cluster_url: str, database_flush: str) -> Iterator[Workers]:
    markets_file = tmp_path / "markets.toml"
    markets_file.write_text(ten_markets_toml())
    env = dict(os.environ, REDIS_URL=cluster_url, DATABASE_URL=database_flush,
               EXCHANGE_DATA_DIR=str(tmp_path / "var"), EXCHANGE_MARKETS_FILE=str(markets_file),
               EXCHANGE_MARKET_PARTITIONS=str(PARTITIONS), EXCHANGE_ACCOUNT_PARTITIONS=str(ACCOUNT_PARTITIONS),
               EXCHANGE_LEASE_TTL_MS=str(LEASE_TTL_MS),
               EXCHANGE_SNAPSHOT_INTERVAL="1", EXCHANGE_SNAPSHOT_CAPTURE="copy")
    group = Workers(tmp_path, env)
    yield group
    group.stop_all()


async def lease_owners(transport: ClusterTransport, exchange: Exchange) -> dict[str, str | None]:
    """Lease key -> owner value (host:pid:id#token), None if free, for every partition of the exchange."""
    keys = {agent.lease_key(p) for agent in exchange.app.agents.values() for p in range(agent.partitions)}
    owners: dict[str, str | None] = {}
    for key in sorted(keys):
        value = await transport.client.get(slots.physical(key))
        owners[key] = value.decode() if value else None
    return owners


async def send(exchange: Exchange, commands: list[Any]) -> None:
    for start in range(0, len(commands), 500):
        await exchange.orders_in.send_many((getattr(c, "account_id", None), c) for c in commands[start:start + 500])


def pid_of(owner: str | None) -> int | None:
    return int(owner.split(":")[1]) if owner else None


@pytest.mark.slow
async def test_a_killed_workers_partitions_move_and_nothing_is_lost_or_doubled(
    workers: Workers, cluster_url: str
) -> None:
    markets = ten_markets()
    accounts = range(1, 41)
    commands: list[Any] = [*funding(markets, accounts), *order_flow(markets, 6000, seed=5, accounts=accounts)]
    transport = ClusterTransport(cluster_url)
    config = PipelineConfig(market_partitions=PARTITIONS, account_partitions=ACCOUNT_PARTITIONS,
                            lease_ttl_ms=LEASE_TTL_MS)
    producer = build_exchange(transport, config, markets=markets, clock=lambda: 0)
    procs = [workers.start() for _ in range(3)]
    try:
        async def all_claimed() -> bool:
            assert all(p.poll() is None for p in procs), workers.logs()
            return all((await lease_owners(transport, producer)).values())

        await wait_for_condition(all_claimed, 60, "the workers to claim every partition", interval=0.1)
        owners = await lease_owners(transport, producer)
        assert len({pid_of(o) for o in owners.values()}) >= 2, owners  # spread over the workers
        half = len(commands) // 2
        await send(producer, commands[:half])

        # kill the worker that owns a match partition and the most partitions, while it works
        owners = await lease_owners(transport, producer)
        live = {p.pid: p for p in procs}
        counts = {pid: sum(pid_of(o) == pid for o in owners.values()) for pid in live}
        matchers = {pid_of(o) for k, o in owners.items() if k.startswith("lease:match:")}
        victim = max(live, key=lambda pid: (pid in matchers, counts[pid]))
        assert counts[victim] >= 1

        async def victim_busy() -> bool:
            positions = await transport.positions("match")
            return sum(p.consumed for p in positions.values()) > 0

        await wait_for_condition(victim_busy, 30, "matching to start")
        os.kill(victim, signal.SIGKILL)
        live[victim].wait(10)
        killed_at = time.monotonic()
        await send(producer, commands[half:])

        async def taken_over() -> bool:
            values = (await lease_owners(transport, producer)).values()
            return all(o is not None and pid_of(o) != victim for o in values)

        await wait_for_condition(taken_over, 30, "the survivors to take the dead worker's partitions", interval=0.1)
        assert time.monotonic() - killed_at < 30
        await settled(producer, timeout=60)
    finally:
        workers.stop_all()
    survivors = [p for p in procs if p.pid != victim]
    assert [p.returncode for p in survivors] == [0, 0], workers.logs()
    assert not any((await lease_owners(transport, producer)).values()), "a clean shutdown releases every lease"

    # the same store, read back by one process: it restores every partition from what the workers committed
    verifier = build_exchange(transport, config, markets=markets, clock=lambda: 0)
    await verifier.app.start()
    try:
        await verifier.app.wait_running(timeout=60)
        oracle = StagedOracle(markets).run(await as_matched(verifier, commands))
        for name in ("orders.in", "orders.valid", "orders.accepted"):  # nothing doubled on the way
            values = [repr(v) for v in await topic_values(verifier, name)]
            assert len(values) == len(set(values)), (name, len(values), len(set(values)))
        assert sum(type(e).__name__ == "TradeExecuted" for e in oracle.orders_events) > 500
        events, expected = await orders_events_by_market(verifier), by_market(oracle.orders_events)
        assert events == expected, difference(events, expected)
        assert merged_engine_hash(verifier) == oracle.engine.state_hash()
        accounts = merged_accounts(verifier)
        accounts.validate_internal_state()
        assert accounts.state_hash() == oracle.accounts.state_hash()
        # every trade leg settled once, every fee charged once and paid to the fee account once
        account_events = await topic_values(verifier, "accounts.events")
        trades = [(e.symbol, e.trade_id) for e in oracle.orders_events if type(e) is TradeExecuted]
        legs = [(e.symbol, e.trade_id) for e in account_events if type(e) is LegSettled]
        assert sorted(legs) == sorted(trades * 2)
        fees = [e for e in account_events if type(e) is FeeCharged]
        assert sorted(map(repr, fees)) == sorted(repr(e) for e in oracle.accounts_events if type(e) is FeeCharged)
        assert sum(e.amount for e in account_events if type(e) is FeesTransferred) == sum(f.amount for f in fees)
        assert sorted(map(repr, await topic_values(verifier, "orders.rejected"))) == sorted(
            map(repr, oracle.orders_rejected))
    finally:
        await verifier.app.stop()
        await asyncio.sleep(0)
        await transport.close()
