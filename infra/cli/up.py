"""`exchange up`: the whole exchange in the foreground on the embedded services (or yours)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from infra.config import ConfigError, ServicesConfig
from infra.services import EmbeddedServices, ServiceError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("up", help="run the whole exchange in the foreground (Ctrl-C stops it)")
    parser.add_argument("--host", default="127.0.0.1", help="address the API listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    parser.add_argument("--no-mm", action="store_true", help="do not start the market maker")
    parser.set_defaults(func=cmd_up)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    from infra.runner import run_exchange
    from pipeline.config import PipelineConfig
    from pipeline.exchange import build_exchange
    from pipeline.transport.redis import RedisTransport
    from recovery.persister import Persister, PersisterConfig, app_streams

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ServicesConfig.from_env()
        pipeline_config = PipelineConfig.from_env()
        persister_config = PersisterConfig.from_env()
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    services = EmbeddedServices(config, progress=_progress)
    was_running = {s.name for s in services.status() if s.pid is not None}
    try:
        urls = services.up()
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    started_here = {s.name for s in services.status() if s.pid is not None} - was_running
    exchange = build_exchange(RedisTransport(urls.redis_url), pipeline_config)
    persister = Persister(exchange.app.transport, urls.database_url, app_streams(exchange.app), persister_config)

    def ready(address: str | None) -> None:
        agents = ", ".join(exchange.app.agents)
        print(f"exchange is up: {address}  (agents: {agents}; Ctrl-C stops it)", flush=True)

    try:
        asyncio.run(run_exchange(exchange, host=args.host, port=args.port, on_ready=ready, services=[persister]))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if started_here:
            _progress(f"stopping the services this command started: {', '.join(sorted(started_here))}")
            if "postgres" in started_here:
                services.postgres.stop()
            if "valkey" in started_here:
                services.valkey.stop()
    print("exchange stopped", file=sys.stderr)
    return 0
