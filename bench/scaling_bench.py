"""Throughput of the exchange with 1, 2 and 3 worker processes on a local 3-master Valkey Cluster.

    .venv/bin/python -m bench.scaling_bench [--orders 20000] [--workers 1,2,3] [--partitions 3]
                                            [--account-partitions 1]

Cases, each on freshly emptied servers, agents in `exchange worker` processes (every
worker runs every agent; the partitions' leases are spread with ``--max-partitions`` =
leases / workers, rounded up), orders injected here
at `orders.in` (entries of 100, as the API's group commit writes them), no AOF:

- reference: 1 worker on one plain Valkey, one match partition (today's deployment);
- the same worker on the same Valkey with the cluster cases' partitions (what partitioning
  itself costs, without a cluster);
- N workers on the cluster, `--partitions` match partitions (markets dealt round-robin) and
  `--account-partitions` accounts partitions (validate, risk and settle per partition;
  accounts dealt by id).

Orders/s are from the first order in until every agent committed everything and every
outbox was forwarded. The table also gives the CPU time (user + system, /proc) per order
of all workers together and of the Valkey server(s): on a 2-core machine the sum of
the two, not the number of workers, bounds throughput. Ratios are against the 1-worker
cluster case of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._valkey import running_valkey
from bench.flows import funding, order_flow
from bench.pipeline_bench import cpu_seconds
from infra.cli.common import print_table
from infra.services.cluster import ValkeyCluster, free_cluster_ports
from pipeline.app import wait_for_condition
from pipeline.config import PipelineConfig
from pipeline.errors import BackpressureError
from pipeline.exchange import Exchange, build_exchange
from pipeline.transport.cluster import ClusterTransport, open_transport


async def settled(exchange: Exchange) -> bool:
    """Every agent committed all its input and no outbox holds anything."""
    transport = exchange.app.transport
    if isinstance(transport, ClusterTransport) and await transport.undelivered():
        return False
    return all(v == 0 for v in (await exchange.app.lag()).values())


async def all_claimed(exchange: Exchange) -> bool:
    keys = {agent.lease_key(p) for agent in exchange.app.agents.values() for p in range(agent.partitions)}
    return all([await exchange.app.transport.get(key) for key in keys])


async def run_case(url: str, workers: int, partitions: int, orders: int, server_pids: list[int],
                   account_partitions: int = 1) -> dict[str, Any]:
    """Start `workers` workers, inject the flow, wait until everything settled; orders/s and CPU per order."""
    transport = open_transport(url)
    exchange = build_exchange(transport, PipelineConfig(market_partitions=partitions,
                                                        account_partitions=account_partitions))
    markets = exchange.markets
    commands: list[Any] = [*funding(markets, range(1, 201)),
                           *order_flow(markets, orders, seed=1, accounts=range(1, 201), mid=100_000)]
    env = {**os.environ, "REDIS_URL": url, "EXCHANGE_MARKET_PARTITIONS": str(partitions),
           "EXCHANGE_ACCOUNT_PARTITIONS": str(account_partitions),
           "EXCHANGE_DATA_DIR": tempfile.mkdtemp(prefix="scaling-bench-")}  # no PostgreSQL there: no snapshots
    env.pop("DATABASE_URL", None)
    leases = {agent.lease_key(p) for agent in exchange.app.agents.values() for p in range(agent.partitions)}
    share = str(-(-len(leases) // workers))  # each worker claims its share first (`--max-partitions`)
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-m", "infra", "worker", "--max-partitions", share,
                                                  env=env,
                                                  stdout=asyncio.subprocess.DEVNULL,
                                                  stderr=asyncio.subprocess.DEVNULL)
             for _ in range(workers)]
    try:
        await wait_for_condition(lambda: all_claimed(exchange), 120, "the workers to claim every partition", 0.1)
        owners = [(await transport.get(key) or b"").decode().split(":")[1] for key in sorted(leases)]
        spread = "/".join(str(owners.count(str(p.pid))) for p in procs)
        pids = {"workers": [p.pid for p in procs], "valkey": server_pids}
        before = {name: sum(cpu_seconds(pid) for pid in group) for name, group in pids.items()}
        start = time.perf_counter()
        for i in range(0, len(commands), 100):
            chunk = commands[i:i + 100]
            while True:
                try:
                    await exchange.orders_in.send_many((getattr(c, "account_id", None), c) for c in chunk)
                    break
                except BackpressureError:
                    await asyncio.sleep(0.005)
        await wait_for_condition(lambda: settled(exchange), 600, "the pipeline to drain", interval=0.1)
        elapsed = time.perf_counter() - start
        after = {name: sum(cpu_seconds(pid) for pid in group) for name, group in pids.items()}
        return {"orders/s": len(commands) / elapsed, "leases": spread,
                **{f"{name} cpu us/order": (after[name] - before[name]) / len(commands) * 1e6 for name in pids}}
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 60)
        shutil.rmtree(env["EXCHANGE_DATA_DIR"], ignore_errors=True)
        await transport.close()


def flush(ports: list[int]) -> None:
    import redis

    for port in ports:
        client = redis.Redis(port=port)
        try:
            client.flushall()
        finally:
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2,3", help="worker counts to measure on the cluster")
    parser.add_argument("--partitions", type=int, default=3, help="match partitions on the cluster")
    parser.add_argument("--account-partitions", type=int, default=1,
                        help="accounts partitions (validate, risk, settle) on the cluster")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    rows: list[tuple[str, dict[str, Any]]] = []
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    with running_valkey() as server:
        print("reference: 1 worker, one Valkey, 1 partition ...", flush=True)
        rows.append(("1 worker, single Valkey, 1 partition",
                     asyncio.run(run_case(server.url, 1, 1, args.orders, [server.process.pid]))))
        if args.partitions > 1 or args.account_partitions > 1:
            flush([server.port])
            name = f"1 worker, single Valkey, {args.partitions} match / {args.account_partitions} accounts partitions"
            print(f"{name} ...", flush=True)
            rows.append((name, asyncio.run(run_case(server.url, 1, args.partitions, args.orders,
                                                    [server.process.pid], args.account_partitions))))
    folder = Path(tempfile.mkdtemp(prefix="scaling-bench-cluster-"))
    cluster = ValkeyCluster(folder, free_cluster_ports(3))
    try:
        cluster.start()
        pids = [pid for port in cluster.ports if (pid := cluster.pid(port)) is not None]
        for n in counts:
            flush(cluster.ports)
            name = (f"{n} worker(s), 3-master cluster, {args.partitions} match / "
                    f"{args.account_partitions} accounts partitions")
            print(f"{name} ...", flush=True)
            rows.append((name, asyncio.run(run_case(cluster.url, n, args.partitions, args.orders, pids,
                                                    args.account_partitions))))
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
    base = next((r["orders/s"] for name, r in rows if name.startswith("1 worker(s)")), rows[0][1]["orders/s"])
    print(f"\n{args.orders:,} orders (+ funding), no AOF; load average after: {os.getloadavg()[0]:.2f}")
    print_table(["case", "leases per worker", "orders/s", "vs 1 worker on the cluster", "workers cpu us/order",
                 "valkey cpu us/order"],
                [[name, r["leases"], f"{r['orders/s']:,.0f}", f"{r['orders/s'] / base:.2f}x",
                  f"{r['workers cpu us/order']:.0f}", f"{r['valkey cpu us/order']:.0f}"] for name, r in rows])


if __name__ == "__main__":
    main()
