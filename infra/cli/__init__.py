"""The `exchange` command line.

Each subcommand lives in its own module under `infra/cli/` and exposes
`register(subparsers)`, which adds its parser and sets `func` to a callable
taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pipeline.layout import LayoutMismatchError

# Modules that contribute subcommands, in the order `exchange --help` lists them.
SUBCOMMAND_MODULES = (
    "infra.cli.up",
    "infra.cli.services",
    "infra.cli.topics",
    "infra.cli.worker",
    "infra.cli.api",
    "infra.cli.admin",
    "infra.cli.persister",
    "infra.cli.status",
    "infra.cli.bench",
    "infra.cli.replay",
    "infra.cli.snapshot",
    "infra.cli.state",
    "infra.cli.mm",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="exchange",
        description="A real-time crypto exchange over Redis Streams.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # not written yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `exchange` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code = func(args)
    except KeyboardInterrupt:
        return 130
    except LayoutMismatchError as exc:  # a worker, API or `up` started with another partition layout
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `exchange topics tail ... | head`
        sys.stderr.close()
        return 0
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
