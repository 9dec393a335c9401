"""The embedded PostgreSQL: real initdb/start/stop in temporary folders (as root: as exchange-pg)."""

from __future__ import annotations

import importlib
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from infra.config import ServicesConfig
from infra.services import EmbeddedServices, PostgresService, ServiceError, ServiceState, ValkeyService
from infra.services.postgres import pginstall
from infra.services.process import pid_alive, wait_for
from infra.services.runas import SYSTEM_USER, check_access, ensure_system_user
from tests.conftest import make_service_dir

AS_ROOT = os.geteuid() == 0


def psql(url: str, sql: str) -> str:
    """Run SQL with the wheel's psql; return the unaligned output."""
    proc = subprocess.run(
        [str(pginstall() / "bin" / "psql"), "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def pg_dir() -> Iterator[Path]:
    """One cluster for the module (initdb once); every test starts from `start()`."""
    path = make_service_dir("exchange-test-pg-")
    yield path
    PostgresService(path).stop()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pg(pg_dir: Path) -> PostgresService:
    return PostgresService(pg_dir)


def test_start_creates_the_exchange_database_on_loopback(pg: PostgresService) -> None:
    url = pg.start()
    assert url.startswith("postgresql://postgres@127.0.0.1:") and url.endswith("/exchange")
    assert psql(url, "SELECT current_database()") == "exchange"
    assert psql(url, "SHOW listen_addresses") == "127.0.0.1"
    status = pg.status()
    assert status.state is ServiceState.RUNNING
    assert status.pid == pg.pid is not None


def test_data_survives_a_restart(pg: PostgresService) -> None:
    url = pg.start()
    psql(url, "CREATE TABLE IF NOT EXISTS kept (v text); INSERT INTO kept VALUES ('row')")
    assert pg.stop()
    assert pg.status().state is ServiceState.STOPPED
    assert pg.pid is None
    assert pg.start() == url
    assert "row" in psql(url, "SELECT v FROM kept").splitlines()


def test_second_start_reuses_the_running_server(pg: PostgresService, pg_dir: Path) -> None:
    url = pg.start()
    pid = pg.pid
    again = PostgresService(pg_dir)
    assert again.start() == url
    assert again.pid == pid


def test_start_after_kill_9_of_the_postmaster(pg: PostgresService) -> None:
    url = pg.start()
    psql(url, "CREATE TABLE IF NOT EXISTS crash (v int); INSERT INTO crash VALUES (1)")
    pid = pg.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(pid), 10)
    assert (pg.pgdata / "postmaster.pid").exists()  # stale
    assert pg.status().state is ServiceState.STOPPED
    assert pg.start() == url
    assert pg.pid not in (None, pid)
    assert int(psql(url, "SELECT count(*) FROM crash")) >= 1


@pytest.mark.skipif(not AS_ROOT, reason="only root hands PostgreSQL to a system user")
def test_as_root_it_runs_as_the_system_user_and_opens_nothing_else(pg: PostgresService, pg_dir: Path) -> None:
    parents = {p: p.stat().st_mode for p in pg_dir.parents}
    pg.start()
    user = pwd.getpwnam(SYSTEM_USER)
    assert user.pw_shell.endswith("nologin") or user.pw_shell == "/bin/false"
    pid = pg.pid
    assert pid is not None
    assert psutil.Process(pid).uids().effective == user.pw_uid
    assert pg.pgdata.stat().st_uid == user.pw_uid
    assert pg.pgdata.stat().st_mode & 0o077 == 0
    assert pg_dir.stat().st_uid == 0  # only <data_dir>/postgres was given away
    assert {p: p.stat().st_mode for p in pg_dir.parents} == parents


@pytest.mark.skipif(not AS_ROOT, reason="needs root to make a folder exchange-pg cannot enter")
def test_as_root_an_unreachable_data_dir_is_a_clear_error(service_dir: Path) -> None:
    locked = service_dir / "locked"
    locked.mkdir(mode=0o700)
    data_dir = locked / "var"
    with pytest.raises(ServiceError) as info:
        PostgresService(data_dir).start()
    message = str(info.value)
    assert "EXCHANGE_DATA_DIR" in message
    assert f"cannot enter {locked} " in message
    assert not (data_dir / "postgres").exists()
    assert locked.stat().st_mode & 0o777 == 0o700


_LAZY_IMPORTS = ("secrets", "encodings.idna", "encodings.ascii", "encodings.latin_1")


@pytest.mark.skipif(not AS_ROOT, reason="runs the services as the unprivileged user 'nobody'")
def test_works_as_a_normal_user() -> None:
    """A forked child drops to 'nobody' (no exec, so the venv's interpreter path does not matter)."""
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    for module in _LAZY_IMPORTS:  # the child may not be able to read the stdlib (e.g. under /root)
        importlib.import_module(module)
    folder = make_service_dir("exchange-test-nobody-")
    os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            code = _start_both_and_stop(folder, write_end)
        except BaseException as exc:
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            report = pipe.read().decode(errors="replace")
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, report
        assert report == "running running", report
        assert (folder / "postgres" / "data").stat().st_uid == nobody.pw_uid
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _start_both_and_stop(folder: Path, out: int) -> int:
    pg, vk = PostgresService(folder), ValkeyService(folder)
    try:
        vk.start()
        pg.start()
        os.write(out, f"{pg.status().state} {vk.status().state}".encode())
    finally:
        pg.stop()
        vk.stop()
    return 0


@pytest.mark.skipif(not AS_ROOT, reason="the access check applies to the system user, i.e. as root")
def test_as_root_unreadable_binaries_are_reported(service_dir: Path) -> None:
    fake = service_dir / "pginstall"
    for sub in ("bin", "lib", "share"):
        (fake / sub).mkdir(parents=True)
        (fake / sub).chmod(0o755)
    fake.chmod(0o755)
    for exe in ("postgres", "initdb", "pg_ctl"):
        (fake / "bin" / exe).write_text("")
        (fake / "bin" / exe).chmod(0o700)  # root only
    with pytest.raises(ServiceError, match="chmod -R o\\+rX"):
        check_access(ensure_system_user(SYSTEM_USER), service_dir / "var", fake, service_dir / "nolibs")


@pytest.mark.skipif(not AS_ROOT, reason="needs root to make a folder exchange-pg cannot enter")
def test_as_root_up_fails_before_starting_anything(service_dir: Path) -> None:
    locked = service_dir / "locked"
    locked.mkdir(mode=0o700)
    services = EmbeddedServices(ServicesConfig(data_dir=locked / "var"))
    with pytest.raises(ServiceError, match=f"cannot enter {locked} "):
        services.up()
    assert not (locked / "var").exists()
