"""`exchange mm`: the market maker (and optional noise trader) against any Binance-compatible exchange.

It trades only through the REST API, with the keys it is given (`--api-key`/`--api-secret`
or `EXCHANGE_MM_API_KEY`/`EXCHANGE_MM_API_SECRET`; the noise trader's with `--taker-*` or
`EXCHANGE_MM_TAKER_API_KEY`/`EXCHANGE_MM_TAKER_API_SECRET`). Create and fund accounts with
`exchange admin create-account` and `exchange admin deposit` (`exchange up` does that itself).
Ctrl-C / SIGTERM stops it after cancelling its orders.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

# QuoteParams field -> (type, help) of its option
QUOTE_OPTIONS: dict[str, tuple[type, str]] = {
    "bid_spread_bps": (int, "first bid's distance below the reference (10)"),
    "ask_spread_bps": (int, "first ask's distance above the reference (10)"),
    "order_levels": (int, "orders per side (3)"),
    "level_spacing_bps": (int, "extra distance of each further level (10)"),
    "order_amount": (str, "base quantity of a first-level order (default: by --order-notional-multiple)"),
    "order_notional_multiple": (int, "first-level order value in multiples of the min notional (4)"),
    "level_amount_step_pct": (int, "each further level is this %% of the first larger (50)"),
    "refresh_seconds": (float, "seconds between refreshes (5)"),
    "refresh_tolerance_bps": (int, "keep an order this close to its wanted price (2)"),
    "target_base_pct": (int, "target base inventory, %% of its limit range (50)"),
    "skew_price_bps": (int, "price shift at full inventory skew (5)"),
    "inventory_range_pct": (int, "inventory limits: start balance +- this %% (50)"),
    "reference": (str, "'walk' (seeded random walk) or a SYMBOL whose mid price to follow"),
    "reference_url": (str, "base URL of the exchange with the followed symbol (default: --base-url)"),
    "start_price": (str, "walk's start price (default: last price, else a built-in one, else the mid)"),
    "walk_step_bps": (int, "largest random step per refresh (3)"),
    "walk_reversion_ppm": (int, "pull toward the start price per refresh (5000)"),
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mm", help="run the market maker (pure market making over the public API; Ctrl-C stops it)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="the exchange's API (default %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("EXCHANGE_MM_API_KEY"), help="market maker's API key")
    parser.add_argument("--api-secret", default=os.environ.get("EXCHANGE_MM_API_SECRET"),
                        help="and its secret (prefer the environment variable: arguments show in `ps`)")
    parser.add_argument("--taker-api-key", default=os.environ.get("EXCHANGE_MM_TAKER_API_KEY"),
                        help="noise trader's API key (a second account); without it there is no noise flow")
    parser.add_argument("--taker-api-secret", default=os.environ.get("EXCHANGE_MM_TAKER_API_SECRET"))
    parser.add_argument("--markets", help="comma-separated symbols (default: every TRADING market)")
    parser.add_argument("--config", help="TOML file with the full config and per-market overrides "
                                         "(default EXCHANGE_MM_CONFIG); options below override it")
    parser.add_argument("--seed", type=int, help="seed of the random walks and the noise trader")
    parser.add_argument("--status-seconds", type=float, help="seconds between status lines (0: none; default 30)")
    parser.add_argument("--no-noise", action="store_true", help="no taker flow even with taker keys")
    parser.add_argument("--noise-interval", type=float, help="mean seconds between taker orders per market (3)")
    parser.add_argument("--no-skew", action="store_true", help="no inventory skew")
    strategy = parser.add_argument_group("strategy, per market in --config (bps = 0.01 %; defaults in parentheses)")
    for name, (kind, text) in QUOTE_OPTIONS.items():
        strategy.add_argument("--" + name.replace("_", "-"), type=kind, dest=name, help=text)
    parser.set_defaults(func=cmd_mm)


def build_config(args: argparse.Namespace) -> Any:
    """The MarketMakerConfig of the file (if any) with the command line's options applied."""
    import msgspec

    from infra.mm.config import load_config

    config = load_config(args.config)
    quote = {name: getattr(args, name) for name in QUOTE_OPTIONS if getattr(args, name) is not None}
    if args.no_skew:
        quote["inventory_skew"] = False
    noise: dict[str, Any] = {}
    if args.no_noise or not (args.taker_api_key and args.taker_api_secret):
        noise["enabled"] = False
    if args.noise_interval is not None:
        noise["interval_seconds"] = args.noise_interval
    top: dict[str, Any] = {"quote": msgspec.structs.asdict(config.quote) | quote,
                           "noise": msgspec.structs.asdict(config.noise) | noise}
    if args.markets:
        top["markets"] = tuple(s.strip().upper() for s in args.markets.split(",") if s.strip())
    if args.seed is not None:
        top["seed"] = args.seed
    if args.status_seconds is not None:
        top["status_seconds"] = args.status_seconds
    return msgspec.convert(msgspec.structs.asdict(config) | top, type(config))


def cmd_mm(args: argparse.Namespace) -> int:
    import msgspec

    if not args.api_key or not args.api_secret:
        print("error: the market maker needs --api-key and --api-secret (or EXCHANGE_MM_API_KEY / "
              "EXCHANGE_MM_API_SECRET); create them with `exchange admin create-account market-maker`",
              file=sys.stderr)
        return 2
    try:
        config = build_config(args)
    except (ValueError, msgspec.ValidationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, config))
    except KeyboardInterrupt:
        return 130


async def _run(args: argparse.Namespace, config: Any) -> int:
    from infra.mm.bot import MarketMaker, stderr_line
    from infra.mm.client import BinanceClient, BinanceError, quiet_http_logs
    from infra.mm.noise import NoiseTrader

    quiet_http_logs()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = BinanceClient(args.base_url, args.api_key, args.api_secret, timeout=config.request_timeout_seconds)
    taker = BinanceClient(args.base_url, args.taker_api_key, args.taker_api_secret,
                          timeout=config.request_timeout_seconds)
    maker = MarketMaker(client, config)
    try:
        await maker.prepare()
        if not maker.markets:
            print("error: no market to quote", file=sys.stderr)
            return 1
        stderr_line(f"market maker: quoting {', '.join(maker.markets)} on {args.base_url} "
                    f"(refresh {maker.refresh_seconds():g}s; noise trader {'on' if config.noise.enabled else 'off'})")
        tasks = [asyncio.create_task(maker.run(stop))]
        if config.noise.enabled:
            noise = NoiseTrader(taker, {s: m.rules for s, m in maker.markets.items()}, config.noise,
                                seed=config.seed)
            tasks.append(asyncio.create_task(noise.run(stop)))
        await asyncio.gather(*tasks)
    except BinanceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(Exception):
            await maker.close()
        await client.close()
        await taker.close()
    stderr_line("market maker stopped (its orders cancelled)")
    return 0
