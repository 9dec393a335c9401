"""`exchange worker`: run some (or all) of the exchange's agents in this process, without the API.

Each (agent, partition) is claimed through its lease: a worker runs the partitions that
are free, stands by for the others and takes one over when its owner's lease expires
(the owner died), restoring it from the snapshot and changelog; on SIGINT/SIGTERM it
commits the batch in hand and releases its leases, so a standby takes over at once.
Live workers announce themselves; one holding more than ceil(leases / live workers) hands
the extra ones over the same clean way, so a worker added later gets its share.
Several workers on several machines share the partitions this way (docs/scaling.md);
``REDIS_URL=redis+cluster://host:port`` points them at a Valkey/Redis Cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import Any

from infra.cli.common import ToolError, database_url, redis_url


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("worker", help="run agents in this process (partitions are leased)")
    parser.add_argument("--agents", default="", help="comma-separated agent names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the agents and exit")
    parser.add_argument("--max-partitions", type=int, default=None, metavar="N",
                        help="claim at most N leases while other workers want them (spreads partitions over "
                             "workers; past N only partitions left unclaimed for 2 lease lifetimes)")
    parser.add_argument("--no-rebalance", action="store_true",
                        help="keep every lease claimed (default: announce this worker and hand leases above "
                             "ceil(leases / live workers running the same agents) over to them, so a worker added "
                             "later gets its share)")
    parser.set_defaults(func=cmd_worker)


class OwnershipReport:
    """Prints which partitions this worker runs whenever that changes (claimed, taken over, lost)."""

    def __init__(self, app: Any, interval: float = 0.5) -> None:
        self.app = app
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._last: tuple[list[str], list[str]] | None = None

    def current(self) -> tuple[list[str], list[str]]:
        """(agent:partition running here, agent:partition on standby), sorted."""
        running = sorted(f"{a}:{p}" for (a, p), runner in self.app.runners.items() if runner.ready)
        standby = sorted(f"{a}:{p}" for a, p in self.app.standby)
        return running, standby

    def report(self) -> None:
        now = self.current()
        if now != self._last:
            self._last = now
            running, standby = now
            print(f"worker owns: {', '.join(running) or '-'}; standby: {', '.join(standby) or '-'}", flush=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.report()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def cmd_worker(args: argparse.Namespace) -> int:
    from infra.runner import run_exchange, run_loop
    from pipeline.config import PipelineConfig
    from pipeline.exchange import build_exchange
    from pipeline.transport.cluster import open_transport

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        url = redis_url()
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    exchange = build_exchange(open_transport(url), PipelineConfig.from_env())
    if args.list:
        for name, agent in exchange.app.agents.items():
            inputs = ", ".join(t.name for t in agent.topics)
            print(f"{name:<10} reads {inputs} ({agent.partitions} partition(s), lease {agent.lease_key(0)[:-2]})")
        return 0
    names = [n.strip() for n in args.agents.split(",") if n.strip()] or None
    unknown = set(names or ()) - set(exchange.app.agents)
    if unknown:
        print(f"error: unknown agents {sorted(unknown)}; known: {', '.join(exchange.app.agents)}",
              file=sys.stderr)
        return 2
    if names and ("risk" in names) != ("settle" in names):
        print("error: risk and settle share the accounts state: run them in the same worker", file=sys.stderr)
        return 2


    from recovery.snapshots import attach_snapshots

    try:  # snapshots (and restoring from them) need PostgreSQL: without it, agents replay their input
        database: str | None = database_url()
    except ToolError as exc:
        database = None
        print(f"warning: no snapshots ({exc}): agents rebuild from the streams", file=sys.stderr)
    attach_snapshots(exchange, database)  # trimming included: the trimmer handles tagged (cluster) streams
    report = OwnershipReport(exchange.app)
    exchange.app.max_leases = args.max_partitions
    exchange.app.rebalance = not args.no_rebalance

    def ready(_: str | None) -> None:
        print(f"worker running: {', '.join(names or exchange.app.agents)}", flush=True)
        report.report()

    run_loop(run_exchange(exchange, agents=names, on_ready=ready, services=[report], standby=True))
    return 0
