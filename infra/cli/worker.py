"""`exchange worker`: run some (or all) of the exchange's agents in this process, without the API."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from infra.cli.common import ToolError, database_url, redis_url


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("worker", help="run agents in this process (partitions are leased)")
    parser.add_argument("--agents", default="", help="comma-separated agent names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the agents and exit")
    parser.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from infra.runner import run_exchange, run_loop
    from pipeline.config import PipelineConfig
    from pipeline.exchange import build_exchange
    from pipeline.transport.redis import RedisTransport

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        url = redis_url()
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    exchange = build_exchange(RedisTransport(url), PipelineConfig.from_env())
    if args.list:
        for name, agent in exchange.app.agents.items():
            inputs = ", ".join(t.name for t in agent.topics)
            print(f"{name:<10} reads {inputs} ({agent.partitions} partition(s))")
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
    attach_snapshots(exchange, database)

    def ready(_: str | None) -> None:
        print(f"worker running: {', '.join(names or exchange.app.agents)}", flush=True)

    run_loop(run_exchange(exchange, agents=names, on_ready=ready))
    return 0
