"""`exchange services up|down|status`: the backing servers (embedded Valkey and PostgreSQL).

Configuration comes from the environment (`infra.config.ServicesConfig`); `--data-dir`
overrides `EXCHANGE_DATA_DIR`. Progress goes to stderr, the status table to stdout.

Exit codes: 0 success (for `status`: every service usable); 1 a server failed to start or stop;
2 bad configuration or usage; 3 (`status` only) some service is not running or not answering.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from infra.config import ConfigError, ServicesConfig
from infra.services import EmbeddedServices, ServiceError, ServiceStatus

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_NOT_RUNNING = 3

COLUMNS = ("SERVICE", "STATE", "PID", "PORT", "URL", "DETAIL")


def register(subparsers: Any) -> None:
    """Add `services` and its actions to the `exchange` parser."""
    parser = subparsers.add_parser(
        "services",
        help="start, stop or show the backing servers (Valkey, PostgreSQL)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, func, help_text in (
        ("up", _up, "start the embedded servers (reusing running ones) and show where they are"),
        ("down", _down, "stop the embedded servers (external ones are never touched)"),
        ("status", _status, "show each server's state; exit 3 if one is not usable"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="folder of the embedded servers' files (default: $EXCHANGE_DATA_DIR or ./var)",
        )
        action.set_defaults(func=func)


def _services(args: argparse.Namespace) -> EmbeddedServices:
    config = ServicesConfig.from_env()
    if args.data_dir is not None:
        config = msgspec.structs.replace(config, data_dir=args.data_dir)
    return EmbeddedServices(config, progress=_progress)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(args: argparse.Namespace, action: str) -> int:
    try:
        services = _services(args)
        if action == "up":
            services.up()
        elif action == "down":
            stopped = services.down()
            if not stopped:
                _progress("nothing embedded was running")
        rows = services.status()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (ServiceError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(format_table(rows))
    if action == "status" and not all(row.state.ok for row in rows):
        return EXIT_NOT_RUNNING
    if action == "up" and not all(row.state.ok for row in rows):
        return EXIT_FAILED
    return EXIT_OK


def _up(args: argparse.Namespace) -> int:
    return _run(args, "up")


def _down(args: argparse.Namespace) -> int:
    return _run(args, "down")


def _status(args: argparse.Namespace) -> int:
    return _run(args, "status")


def format_table(rows: Sequence[ServiceStatus]) -> str:
    """Plain-text table with aligned columns (URLs are already redacted)."""
    cells = [COLUMNS] + [
        (row.name, str(row.state), _text(row.pid), _text(row.port), row.url or "-", row.detail or "-") for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in cells
    )


def _text(value: int | None) -> str:
    return "-" if value is None else str(value)
