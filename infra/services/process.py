"""Process, port and file helpers shared by the embedded servers.

Everything waits for a condition with a deadline (`wait_for`); nothing sleeps a
guessed time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from infra.services.errors import ServiceError

LOOPBACK = "127.0.0.1"
REUSE_WAIT = 2.0
"""Seconds to wait for a remembered port to become free before choosing another one."""

Progress = Callable[[str], None]
"""Receives one human-readable progress line (the CLI prints them)."""


def silent(_message: str) -> None:
    """A `Progress` that drops every message."""


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `condition` until it is true (True) or `timeout` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as dead and is reaped if it is our child)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE:
            return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return False


def process_cmdline(pid: int) -> list[str]:
    """The command line of `pid`, or [] when it cannot be read."""
    try:
        return psutil.Process(pid).cmdline()
    except (psutil.Error, OSError):
        return []


def read_pid(path: Path) -> int | None:
    """The pid in a pid file (its first line), or None if missing or unreadable."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first) if first else None
    except (OSError, ValueError):
        return None


def terminate(pid: int, timeout: float, progress: Progress = silent) -> bool:
    """SIGTERM `pid`, wait for it to exit, SIGKILL after `timeout`; True if it is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError as exc:
            raise ServiceError(f"not permitted to signal pid {pid} (started by another user?)") from exc
        if wait_for(lambda: not pid_alive(pid), wait):
            return True
        if sig == signal.SIGTERM:
            progress(f"pid {pid} did not exit within {timeout:.0f}s of SIGTERM; sending SIGKILL")
    return not pid_alive(pid)


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could listen on host:port now (SO_REUSEADDR, as the servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = LOOPBACK) -> int:
    """A port the kernel considers free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def remembered_port(port_file: Path, requested: int | None = None) -> int:
    """The port to start on: `requested`, else the remembered one if free, else a new one (remembered)."""
    if requested is not None:
        port = requested
    else:
        port = read_pid(port_file) or 0  # same format: one integer on the first line
        # A just-killed server's socket can linger for a moment after its process is gone.
        if not port or not wait_for(lambda: port_is_free(port), REUSE_WAIT, 0.05):
            port = free_port()
    if read_pid(port_file) != port:
        port_file.write_text(f"{port}\n")
    return port


def port_answers(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file ('' if it cannot be read)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16_384))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 60.0) -> Iterator[None]:
    """An exclusive advisory lock on `path` (serialises concurrent start/stop of one server)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:

        def acquired() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    return False
                raise
            return True

        if not wait_for(acquired, timeout, interval=0.05):
            raise ServiceError(f"another process holds {path} for more than {timeout:.0f}s")
        yield
    finally:
        os.close(fd)
