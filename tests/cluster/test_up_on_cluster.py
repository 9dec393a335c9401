"""`exchange up` on a 3-master Valkey Cluster: the whole exchange in one process, on the cluster transport.

`exchange up` runs as a subprocess with ``REDIS_URL=redis+cluster://...``, 3 market partitions
(and 2 account partitions, once the pipeline config reads them), the market maker quoting
ETHUSDT only (no noise trader). Two accounts made with `exchange admin` trade BTCUSDT over
HTTP; the market maker's quotes show in ETHUSDT's depth; the persister inside `exchange up`
archives the trade; SIGTERM stops it with exit code 0 and every lease released.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from api.auth import sign
from infra.services import redis_answers
from pipeline.app import wait_for_condition
from pipeline.config import PipelineConfig
from pipeline.exchange import build_exchange
from pipeline.transport import slots
from pipeline.transport.cluster import ClusterTransport
from tests.cluster.test_api_on_cluster import admin, archived_trades
from tests.serving import free_port

BTC, ETH = "BTCUSDT", "ETHUSDT"
MARKET_PARTITIONS, ACCOUNT_PARTITIONS = 3, 2


class UpProcess:
    """`exchange up` in a subprocess; its output kept for failure messages."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infra", "up", "--port", str(port), "--no-noise"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).parents[2])
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def log(self) -> str:
        return "".join(self.output[-60:])

    def wait_for_address(self, timeout: float) -> str:
        """The address of the `exchange is up: <address>` line."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None or time.monotonic() > deadline:
                raise AssertionError("exchange up did not start:\n" + self.log())
            if line.startswith("exchange is up: "):
                return line.split()[3]

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM; the exit code (killed, and the test failed, if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("exchange up did not stop on SIGTERM:\n" + self.log()) from None


@pytest.fixture
def environment(tmp_path: Path, cluster_url: str, database_flush: str,
                monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of `exchange up` and of the admin tool run in this process."""
    mm_config = tmp_path / "mm.toml"
    mm_config.write_text(f'markets = ["{ETH}"]\n')
    values = {"REDIS_URL": cluster_url, "DATABASE_URL": database_flush, "EXCHANGE_DATA_DIR": str(tmp_path / "var"),
              "EXCHANGE_MARKET_PARTITIONS": str(MARKET_PARTITIONS),
              "EXCHANGE_ACCOUNT_PARTITIONS": str(ACCOUNT_PARTITIONS),
              "EXCHANGE_LEASE_TTL_MS": "3000", "EXCHANGE_API_WEIGHT_PER_MINUTE": "0",
              "EXCHANGE_MM_CONFIG": str(mm_config)}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    import logging  # the admin tool calls logging.basicConfig: undo it afterwards

    monkeypatch.setattr(logging.root, "handlers", list(logging.root.handlers))
    return dict(os.environ)


@pytest.fixture
def exchange_up(environment: dict[str, str]) -> Iterator[tuple[UpProcess, str]]:
    """`exchange up` on the cluster, and the address it printed."""
    up = UpProcess(environment, free_port())
    try:
        yield up, up.wait_for_address(90)
    finally:
        if up.process.poll() is None:
            up.stop()


def signed(http: httpx.Client, method: str, path: str, key: dict[str, str], **params: Any) -> Any:
    params["timestamp"] = time.time_ns() // 1_000_000
    payload = urlencode(params)
    query = f"{payload}&signature={sign(key['secret'], payload)}"
    response = http.request(method, f"{path}?{query}", headers={"X-MBX-APIKEY": key["api key"]})
    assert response.status_code == 200, response.text
    return response.json()


def wait_until(check: Any, timeout: float, what: str, up: UpProcess) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert up.process.poll() is None, "exchange up exited:\n" + up.log()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{up.log()}")
        time.sleep(0.05)


async def held_leases(url: str) -> dict[str, bool]:
    """Every lease the exchange's topology has (as this environment configures it): whether it is held."""
    transport = ClusterTransport(url)
    exchange = build_exchange(transport, PipelineConfig.from_env())
    try:
        keys = {agent.lease_key(p) for agent in exchange.app.agents.values() for p in range(agent.partitions)}
        return {key: bool(await transport.client.get(slots.physical(key))) for key in sorted(keys)}
    finally:
        await transport.close()


@pytest.mark.slow
def test_exchange_up_on_a_cluster(exchange_up: tuple[UpProcess, str], environment: dict[str, str],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    up, address = exchange_up
    url = environment["REDIS_URL"]
    assert redis_answers(url)  # `exchange services status` / `exchange up` see the cluster as an external server up
    leases = asyncio.run(held_leases(url))
    assert sum(key.startswith("lease:match:") for key in leases) == MARKET_PARTITIONS, leases
    account_partitions = PipelineConfig.from_env().account_partitions  # validate runs per accounts partition
    assert account_partitions > 1
    assert sum(key.startswith("lease:validate:") for key in leases) == account_partitions, leases
    assert all(leases.values()), leases  # every partition of every agent runs in this one process

    seller = admin(capsys, "create-account", "seller")
    buyer = admin(capsys, "create-account", "buyer")
    admin(capsys, "deposit", seller["account"], "BTC", "2")
    admin(capsys, "deposit", buyer["account"], "USDT", "100000")
    with httpx.Client(base_url=address, timeout=15) as http:
        def funded() -> bool:
            balances = {b["asset"]: b["free"] for b in signed(http, "GET", "/api/v3/account", buyer)["balances"]}
            return balances.get("USDT") == "100000.00000000"

        wait_until(funded, 30, "the buyer's deposit", up)
        sell = signed(http, "POST", "/api/v3/order", seller, symbol=BTC, side="SELL", type="LIMIT",
                      timeInForce="GTC", quantity="1", price="30000", newOrderRespType="RESULT")
        assert sell["status"] == "NEW", sell
        buy = signed(http, "POST", "/api/v3/order", buyer, symbol=BTC, side="BUY", type="LIMIT",
                     timeInForce="GTC", quantity="0.4", price="30000", newOrderRespType="FULL")
        assert buy["status"] == "FILLED" and buy["executedQty"] == "0.40000000", buy

        def traded() -> bool:
            trades = http.get("/api/v3/trades", params={"symbol": BTC}).json()
            return [(t["price"], t["qty"]) for t in trades] == [("30000.00000000", "0.40000000")]

        wait_until(traded, 20, "the trade in the BTCUSDT tape", up)

        def quoted() -> bool:  # the market maker (its own account, over this API) quotes ETHUSDT only
            depth = http.get("/api/v3/depth", params={"symbol": ETH}).json()
            return bool(depth["bids"]) and bool(depth["asks"]) and depth["bids"][0][0] < depth["asks"][0][0]

        wait_until(quoted, 60, "the market maker's quotes in ETHUSDT's depth", up)

    async def archived() -> bool:  # by the persister running inside `exchange up`
        return await archived_trades(environment["DATABASE_URL"]) == [(BTC, 40_000)]

    asyncio.run(wait_for_condition(archived, 30, "the trade in PostgreSQL"))

    assert up.stop() == 0, up.log()
    assert not any(asyncio.run(held_leases(url)).values())  # released on SIGTERM, not left to expire
