"""`exchange up`: the whole exchange in the foreground on the embedded services (or yours).

``REDIS_URL=redis+cluster://host:port`` runs it on a Valkey/Redis Cluster (the cluster
transport, as `exchange worker`): every agent's partitions (EXCHANGE_MARKET_PARTITIONS,
EXCHANGE_ACCOUNT_PARTITIONS), the persister, the API and the market maker in this one
process, which takes every lease (docs/scaling.md).
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--no-noise", action="store_true",
                        help="market maker without its noise trader (no taker flow, so no trades print by themselves)")
    parser.set_defaults(func=cmd_up)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    from infra.runner import run_exchange, run_loop
    from pipeline.config import PipelineConfig
    from pipeline.exchange import build_exchange
    from pipeline.snapshots.config import SnapshotConfig
    from pipeline.transport.cluster import open_transport
    from recovery.persister import Persister, PersisterConfig, app_streams
    from recovery.snapshots import attach_snapshots

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ServicesConfig.from_env()
        pipeline_config = PipelineConfig.from_env()
        persister_config = PersisterConfig.from_env()
        snapshot_config = SnapshotConfig.from_env()
        mm_config = None if args.no_mm else _mm_config(no_noise=args.no_noise)
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
    # redis+cluster:// -> ClusterTransport (tagged keys, outboxes), as `exchange worker` and `exchange api`
    exchange = build_exchange(open_transport(urls.redis_url), pipeline_config)
    attach_snapshots(exchange, urls.database_url, snapshot_config)  # restore at start, snapshot, trim
    persister = Persister(exchange.app.transport, urls.database_url, app_streams(exchange.app), persister_config)
    clients = [] if mm_config is None else [_market_maker(exchange, mm_config)]

    def ready(address: str | None) -> None:
        agents = ", ".join(exchange.app.agents)
        print(f"exchange is up: {address}  (agents: {agents}; Ctrl-C stops it)", flush=True)

    try:
        run_loop(run_exchange(exchange, host=args.host, port=args.port, on_ready=ready, services=[persister],
                              clients=clients, database_url=urls.database_url))  # uvloop with EXCHANGE_UVLOOP=1
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


def _mm_config(*, no_noise: bool) -> Any:
    """The market maker's config (EXCHANGE_MM_CONFIG, if set); `--no-noise` turns the taker flow off."""
    import msgspec

    from infra.mm.config import load_config

    config = load_config()
    if no_noise:
        config = msgspec.structs.replace(config, noise=msgspec.structs.replace(config.noise, enabled=False))
    return config


def _market_maker(exchange: Any, config: Any) -> Any:
    from infra.mm.service import MarketMakerService

    return MarketMakerService(exchange, config)
