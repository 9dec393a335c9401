"""EmbeddedServices and `exchange services`: external URLs start nothing; the CLI's tables and exit codes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from infra.cli import main
from infra.config import ServicesConfig
from infra.services import EmbeddedServices, ServiceState
from infra.services.postgres import pginstall


def test_given_urls_start_nothing_and_status_reports_them(service_dir: Path, redis_url: str, database_url: str) -> None:
    config = ServicesConfig(data_dir=service_dir, redis_url=redis_url, database_url=database_url)
    services = EmbeddedServices(config)
    urls = services.up()
    assert (urls.redis_url, urls.database_url) == (redis_url, database_url)
    assert list(service_dir.iterdir()) == []  # no embedded server touched the data dir
    rows = services.status()
    assert [(r.name, r.state) for r in rows] == [
        ("valkey", ServiceState.EXTERNAL_UP),
        ("postgres", ServiceState.EXTERNAL_UP),
    ]
    assert services.down() == []


def test_only_the_missing_service_is_embedded(service_dir: Path, redis_url: str) -> None:
    services = EmbeddedServices(ServicesConfig(data_dir=service_dir, redis_url=redis_url))
    assert services.config.database_url is None
    assert services.status()[0].state is ServiceState.EXTERNAL_UP
    assert services.status()[1].state is ServiceState.STOPPED
    assert not (service_dir / "valkey").exists()


def test_unreachable_external_server_is_reported_without_its_password(service_dir: Path) -> None:
    config = ServicesConfig(
        data_dir=service_dir,
        redis_url="redis://:hunter2@127.0.0.1:1/0",
        database_url="postgresql://u:hunter2@127.0.0.1:1/x",
    )
    rows = EmbeddedServices(config).status()
    assert [r.state for r in rows] == [ServiceState.EXTERNAL_DOWN, ServiceState.EXTERNAL_DOWN]
    assert all("hunter2" not in (r.url or "") for r in rows)


def test_cli_up_status_down(
    service_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("REDIS_URL", "DATABASE_URL", "EXCHANGE_APPENDFSYNC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EXCHANGE_DATA_DIR", str(service_dir))
    try:
        assert main(["services", "status"]) == 3
        assert main(["services", "up"]) == 0
        first = EmbeddedServices(ServicesConfig.from_env()).status()
        assert [r.state for r in first] == [ServiceState.RUNNING, ServiceState.RUNNING]
        assert main(["services", "up"]) == 0  # reuse
        assert [r.pid for r in EmbeddedServices(ServicesConfig.from_env()).status()] == [r.pid for r in first]
        capsys.readouterr()
        assert main(["services", "status"]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["SERVICE", "STATE", "PID", "PORT", "URL", "DETAIL"]
        assert [line.split()[:2] for line in table[1:]] == [["valkey", "running"], ["postgres", "running"]]
        assert len({line.index("running") for line in table[1:]}) == 1  # aligned columns
    finally:
        assert main(["services", "down"]) == 0
    assert main(["services", "status"]) == 3


def test_cli_bad_config_exits_2(monkeypatch: pytest.MonkeyPatch, service_dir: Path) -> None:
    monkeypatch.setenv("EXCHANGE_DATA_DIR", str(service_dir))
    monkeypatch.setenv("EXCHANGE_APPENDFSYNC", "sometimes")
    assert main(["services", "status"]) == 2


def test_cli_status_is_read_only(service_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "DATABASE_URL", "EXCHANGE_APPENDFSYNC"):
        monkeypatch.delenv(name, raising=False)
    elsewhere = service_dir / "elsewhere"
    assert main(["services", "status", "--data-dir", str(elsewhere)]) == 3
    assert not elsewhere.exists()


def test_flush_fixtures_give_empty_servers(redis_flush: str, database_flush: str) -> None:
    client = redis.Redis.from_url(redis_flush)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()
    proc = subprocess.run(
        [str(pginstall() / "bin" / "psql"), "-X", "-tA", "-d", database_flush, "-c",
         "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert proc.stdout.strip() == "0"
