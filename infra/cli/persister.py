"""`exchange persister`: archive every exchange stream into PostgreSQL (what `exchange up` runs inside).

Uses REDIS_URL / DATABASE_URL, else the running embedded Valkey and PostgreSQL (it never
starts them: `exchange services up`). Runs in the foreground until Ctrl-C / SIGTERM;
``--once`` archives what the streams hold now and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from infra.cli.common import ToolError, database_url, redis_url
from infra.config import ConfigError, ServicesConfig
from pipeline.errors import ExchangeError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("persister", help="archive every stream into PostgreSQL (foreground)")
    parser.add_argument("--once", action="store_true", help="archive what is there now, print the lag, exit")
    parser.set_defaults(func=cmd_persister)


def cmd_persister(args: argparse.Namespace) -> int:
    from pipeline.config import PipelineConfig
    from pipeline.exchange import build_exchange
    from pipeline.transport.cluster import open_transport
    from recovery.persister import Persister, PersisterConfig, app_streams

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ServicesConfig.from_env()
        persister_config = PersisterConfig.from_env()
        redis, database = redis_url(config), database_url(config)
        pipeline_config = PipelineConfig.from_env()
    except (ConfigError, ValueError, ToolError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        transport = open_transport(redis)  # redis+cluster:// -> ClusterTransport (tagged stream keys)
        # every partition of every topic, as the exchange is configured (EXCHANGE_MARKET_PARTITIONS)
        streams = app_streams(build_exchange(transport, pipeline_config).app)
        persister = Persister(transport, database, streams, persister_config)
        try:
            if args.once:
                try:
                    while await persister.step(block_ms=0):
                        pass
                except ExchangeError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
                lag = await persister.lag()
                print(f"archived {persister.status.messages} messages; behind: "
                      f"{sum(lag.values())}", flush=True)
                return 0 if not any(lag.values()) else 1
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await persister.start()
            print(f"persister is up: {len(streams)} streams -> PostgreSQL (Ctrl-C stops it)", flush=True)
            await stop.wait()
            await persister.stop()
            print(f"persister stopped: {persister.status.messages} messages archived", file=sys.stderr)
            return 0
        finally:
            await persister.stop()
            await transport.close()

    try:
        return asyncio.run(main())
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
