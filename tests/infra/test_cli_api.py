"""`exchange api`: a stateless API process with no agents, started and stopped like a replica would be."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests.serving import free_port


@pytest.mark.redis
def test_api_replica_serves_and_stops_cleanly(redis_flush: str) -> None:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_flush}
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra", "api", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the replica says it is up (or exits)
        assert line.strip() == f"api is up: http://127.0.0.1:{port}", (line, proc.stderr and proc.stderr.read())
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/v3/ping").json() == {}
        symbols = {s["symbol"] for s in httpx.get(f"{base}/api/v3/exchangeInfo").json()["symbols"]}
        assert "BTCUSDT" in symbols
        bad = httpx.get(f"{base}/api/v3/depth", params={"symbol": "NOPE"})
        assert bad.status_code == 400 and bad.json()["code"] == -1121
        # No agent runs here: the replica takes no partition lease.
        import redis

        assert not list(redis.Redis.from_url(redis_flush).scan_iter("lease:*"))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
