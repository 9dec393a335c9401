"""Shared helpers of the command-line tools: finding the stream store, printing tables."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TextIO

from infra.config import ServicesConfig
from infra.services.embedded import EmbeddedServices
from infra.services.postgres import PostgresService
from infra.services.valkey import ValkeyService
from pipeline.errors import ExchangeError


class ToolError(ExchangeError):
    """A command-line tool cannot do what was asked (printed without a traceback)."""


def redis_url(config: ServicesConfig | None = None) -> str:
    """The stream store's URL: REDIS_URL, or the running embedded Valkey (never starts one)."""
    config = config or ServicesConfig.from_env()
    if config.redis_url:
        return config.redis_url
    return _running_url("Valkey", EmbeddedServices(config).valkey, config, "REDIS_URL")


def database_url(config: ServicesConfig | None = None) -> str:
    """The history database's URL: DATABASE_URL, or the running embedded PostgreSQL (never starts one)."""
    config = config or ServicesConfig.from_env()
    if config.database_url:
        return config.database_url
    return _running_url("PostgreSQL", EmbeddedServices(config).postgres, config, "DATABASE_URL")


def _running_url(name: str, service: ValkeyService | PostgresService, config: ServicesConfig, variable: str) -> str:
    if service.pid is None or service.url is None:
        raise ToolError(
            f"no {name} is running for data dir {config.data_dir}: "
            f"start it with `exchange services up` (or set {variable})"
        )
    return service.url


def async_tool(
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]], *, unreachable: bool = False,
    errors: tuple[type[Exception], ...] = (ToolError,), error_code: int = 1,
) -> Callable[[argparse.Namespace], int]:
    """An argparse `func` running an async command; one of `errors` (and, with `unreachable`,
    an OSError from a server connection) prints `error: ...` and exits `error_code` instead of a
    traceback."""
    caught: tuple[type[Exception], ...] = (*errors, OSError) if unreachable else errors

    def run(args: argparse.Namespace) -> int:
        try:
            return int(asyncio.run(command(args)))
        except caught as exc:
            prefix = "cannot reach a server: " if isinstance(exc, OSError) else ""
            print(f"error: {prefix}{exc}", file=sys.stderr)
            return error_code

    return run


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    """Print rows as aligned columns (to `out`, default the current `sys.stdout`); numbers align right."""
    out = sys.stdout if out is None else out
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [bool(rows) and all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [cell.rjust(w) if numeric[i] else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                   strict=True))]
        return "  ".join(parts).rstrip()

    print(line(cells[0]), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells[1:]:
        print(line(row), file=out)
    if not rows:
        print("(none)", file=out)
