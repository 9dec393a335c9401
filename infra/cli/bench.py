"""`exchange bench`: open-loop load (orders and cancels over many accounts) with latency percentiles.

    exchange bench --via http --rate 5000 --duration 30            # starts an exchange of its own
    exchange bench --via stream --rate 20000 --base-url http://127.0.0.1:8000   # a running one (REDIS_URL)

Reports ack, order-to-trade-published and order-to-WebSocket-delivery latency
(p50/p95/p99/p99.9/max, HDR histograms, measured from each request's *scheduled* send
time) and throughput; writes JSON and a PNG plot. Needs the bench extra
(``pip install -e '.[bench]'``: hdrhistogram, matplotlib).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="open-loop load generator with latency percentiles (JSON + PNG)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--via", choices=["http", "ws", "stream"], default="http",
                        help="HTTP REST, WebSocket API (/ws-api/v3), or straight into orders.in")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests offered per second (default 1000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of offered load (default 10)")
    parser.add_argument("--accounts", type=int, default=50, help="accounts to create and fund (default 50)")
    parser.add_argument("--symbols", default="BTCUSDT,ETHUSDT", help="markets to trade (comma-separated)")
    parser.add_argument("--connections", type=int, default=None,
                        help="HTTP or WebSocket API connections (default: HTTP rate x 50 ms, 16-256; WebSocket 16)")
    parser.add_argument("--base-url", default=None,
                        help="a running exchange's API (with REDIS_URL or its data dir); default: start one")
    parser.add_argument("--port", type=int, default=0, help="port of the exchange it starts (default: a free one)")
    parser.add_argument("--mm", action="store_true", help="start the market maker in the exchange it starts")
    parser.add_argument("--no-ws-watch", action="store_true", help="do not measure WebSocket delivery")
    parser.add_argument("--baseline", action="store_true",
                        help="first measure a plain redis-py hop on the same server (the same-run yardstick)")
    parser.add_argument("--baseline-events", type=int, default=50_000,
                        help="messages the baseline hop moves (default 50000)")
    parser.add_argument("--cancel-share", type=float, default=0.10, help="share of requests that are cancels")
    parser.add_argument("--max-in-flight", type=int, default=20_000,
                        help="requests without an answer before the generator sheds (counted as dropped)")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for the system to catch up")
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="py-spy the exchange process it started during the run (needs py-spy)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=None,
                        help="output path without extension (default bench-results/load-<via>-<time>)")
    parser.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from bench.load.mix import MixConfig
        from bench.load.report import print_report, write_json, write_plot
        from bench.load.run import LoadConfig, run_load
    except ModuleNotFoundError as exc:
        print(f"error: {exc.name} is missing: install the bench extra (pip install -e '.[bench]')", file=sys.stderr)
        return 2
    if args.rate <= 0 or args.duration <= 0 or args.accounts <= 0 or args.baseline_events <= 0:
        print("error: --rate, --duration, --accounts and --baseline-events must be positive", file=sys.stderr)
        return 2
    config = LoadConfig(
        via=args.via, rate=args.rate, duration=args.duration, accounts=args.accounts,
        symbols=[s.strip().upper() for s in args.symbols.split(",") if s.strip()], connections=args.connections,
        base_url=args.base_url, port=args.port, market_maker=args.mm, ws_watch=not args.no_ws_watch,
        baseline=args.baseline, baseline_events=args.baseline_events, max_in_flight=args.max_in_flight,
        drain_s=args.drain, seed=args.seed,
        mix=MixConfig(cancel=args.cancel_share), profile=args.profile,
    )
    out = Path(args.out or f"bench-results/load-{args.via}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        report = asyncio.run(run_load(config))
    except (ValueError, TimeoutError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_report(report, sys.stdout)
    write_json(report, out.with_suffix(".json"))
    write_plot(report, out.with_suffix(".png"))
    print(f"\nwrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0
