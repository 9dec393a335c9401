"""`exchange api`: the HTTP/WebSocket API alone, with no agents (stateless; run as many as you like).

Every API process writes orders into `orders.in` and reads the read models the publish
agent keeps in Redis, so replicas behind any load balancer need nothing from each other.
Uses REDIS_URL (``redis+cluster://`` for a Valkey Cluster), else the running embedded Valkey
(it never starts one).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from infra.cli.common import ToolError, redis_url


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("api", help="run the API only (no agents): a stateless replica")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.set_defaults(func=cmd_api)


def cmd_api(args: argparse.Namespace) -> int:
    from infra.runner import run_exchange, run_loop
    from pipeline.config import PipelineConfig
    from pipeline.exchange import build_exchange
    from pipeline.transport.cluster import open_transport

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        url = redis_url()
        config = PipelineConfig.from_env()
    except (ToolError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    exchange = build_exchange(open_transport(url), config)  # redis+cluster:// -> ClusterTransport

    def ready(address: str | None) -> None:
        print(f"api is up: {address}", flush=True)

    try:
        run_loop(run_exchange(exchange, agents=[], host=args.host, port=args.port, on_ready=ready))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
