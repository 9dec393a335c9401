"""The embedded Valkey: real start/stop in temporary folders."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from infra.services import ServiceStartError, ServiceState, ValkeyService
from infra.services.process import pid_alive, wait_for


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[ValkeyService]:
    service = ValkeyService(tmp_path, appendfsync="everysec")
    yield service
    service.stop()


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def test_start_serves_on_loopback_with_aof(valkey: ValkeyService) -> None:
    url = valkey.start()
    assert url.startswith("redis://127.0.0.1:")
    client = _client(url)
    assert client.ping()
    config = client.config_get("*")
    assert config["bind"] == "127.0.0.1"
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["protected-mode"] == "yes"
    assert config["save"] == ""
    assert config["dir"] == str(valkey.dir)
    client.close()
    status = valkey.status()
    assert status.state is ServiceState.RUNNING
    assert status.pid == valkey.pid
    assert (valkey.dir / "valkey.pid").exists()


def test_appendfsync_comes_from_config(tmp_path: Path) -> None:
    service = ValkeyService(tmp_path, appendfsync="always")
    try:
        client = _client(service.start())
        assert client.config_get("appendfsync")["appendfsync"] == "always"
        client.close()
    finally:
        service.stop()


def test_data_survives_a_restart_on_the_same_port(valkey: ValkeyService) -> None:
    url = valkey.start()
    client = _client(url)
    client.set("k", "v")
    client.xadd("orders.in", {"n": "1"})
    client.close()
    assert valkey.stop()
    assert valkey.status().state is ServiceState.STOPPED
    assert valkey.start() == url
    client = _client(url)
    assert client.get("k") == "v"
    assert client.xlen("orders.in") == 1
    client.close()


def test_second_start_reuses_the_running_server(valkey: ValkeyService, tmp_path: Path) -> None:
    url = valkey.start()
    pid = valkey.pid
    again = ValkeyService(tmp_path, appendfsync="everysec")  # e.g. another process
    assert again.start() == url
    assert again.pid == pid


def test_start_after_kill_9_cleans_the_stale_pid_file(valkey: ValkeyService) -> None:
    url = valkey.start()
    client = _client(url)
    client.set("durable", "yes")
    client.close()
    pid = valkey.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(pid), 10)
    assert valkey.status().state is ServiceState.STOPPED
    assert (valkey.dir / "valkey.pid").exists()  # stale
    assert valkey.start() == url
    assert valkey.pid not in (None, pid)
    client = _client(url)
    assert client.get("durable") == "yes"
    client.close()


def test_a_busy_remembered_port_is_replaced(valkey: ValkeyService) -> None:
    url = valkey.start()
    old_port = valkey.port
    assert old_port is not None
    valkey.stop()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        new_url = valkey.start()
    assert new_url != url
    assert valkey.port != old_port
    assert int((valkey.dir / "port").read_text()) == valkey.port


def test_failure_shows_the_log_tail(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        service = ValkeyService(tmp_path, port=port, start_timeout=10)
        with pytest.raises(ServiceStartError) as info:
            service.start()
    assert info.value.log_tail  # the server's own words are in the error
    assert service.status().state is ServiceState.STOPPED


def test_stop_when_nothing_runs(tmp_path: Path) -> None:
    service = ValkeyService(tmp_path)
    assert service.stop() is False
    assert service.status().state is ServiceState.STOPPED
    assert service.url is None
