"""`exchange api`: a stateless API process with no agents, started and stopped like a replica would be."""

from __future__ import annotations

import httpx
import pytest
import redis

from tests.serving import api_process


@pytest.mark.redis
def test_api_replica_serves_and_stops_cleanly(redis_flush: str) -> None:
    with api_process(redis_flush) as (process, port):  # it said "api is up: http://127.0.0.1:<port>"
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/v3/ping").json() == {}
        symbols = {s["symbol"] for s in httpx.get(f"{base}/api/v3/exchangeInfo").json()["symbols"]}
        assert "BTCUSDT" in symbols
        bad = httpx.get(f"{base}/api/v3/depth", params={"symbol": "NOPE"})
        assert bad.status_code == 400 and bad.json()["code"] == -1121
        # No agent runs here: the replica takes no partition lease.
        assert not list(redis.Redis.from_url(redis_flush).scan_iter("lease:*"))
    assert process.returncode == 0  # stopped by SIGTERM, cleanly
