"""The API and the operator tools on a 3-master Valkey Cluster, with one `exchange worker`.

`exchange admin` creates two accounts and funds them; the API (the app `exchange api`
serves, over `open_transport`, in this process) takes crossing orders over signed HTTP;
depth, trades, account and order endpoints show the result; `exchange topics list`
names the tagged streams by their logical names; `exchange persister --once` archives
the trade in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.auth import sign
from api.context import ApiConfig
from infra.cli import main
from pipeline.app import wait_for_condition
from pipeline.config import PipelineConfig
from pipeline.exchange import build_exchange
from pipeline.transport import slots
from pipeline.transport.cluster import ClusterTransport, open_transport
from tests.serving import stop_process

PARTITIONS = 3
ACCOUNT_PARTITIONS = 2  # the seller and the buyer (accounts 1 and 2) on different accounts partitions
BTC = "BTCUSDT"


@pytest.fixture
def environment(tmp_path: Path, cluster_url: str, database_flush: str,
                monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of the worker and of the tools run in this process."""
    values = {"REDIS_URL": cluster_url, "DATABASE_URL": database_flush, "EXCHANGE_DATA_DIR": str(tmp_path / "var"),
              "EXCHANGE_MARKET_PARTITIONS": str(PARTITIONS), "EXCHANGE_ACCOUNT_PARTITIONS": str(ACCOUNT_PARTITIONS),
              "EXCHANGE_LEASE_TTL_MS": "3000"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    # the tools call logging.basicConfig (a handler on this test's captured stderr): undo it afterwards
    monkeypatch.setattr(logging.root, "handlers", list(logging.root.handlers))
    return dict(os.environ)


@pytest.fixture
def worker(tmp_path: Path, environment: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """One `exchange worker` running every agent on the cluster."""
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "infra", "worker"], env=environment, stdout=log,
                            stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
    yield proc
    stop_process(proc, 30)
    log.close()


def admin(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, str]:
    """Run `exchange admin ARGV` in this process; its `name: value` lines."""
    capsys.readouterr()
    assert main(["admin", *argv]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


async def signed(client: httpx.AsyncClient, method: str, path: str, key: dict[str, str], **params: Any) -> Any:
    params["timestamp"] = time.time_ns() // 1_000_000
    payload = urlencode(params)
    query = f"{payload}&signature={sign(key['secret'], payload)}"
    response = await client.request(method, f"{path}?{query}", headers={"X-MBX-APIKEY": key["api key"]})
    assert response.status_code == 200, response.text
    return response.json()


async def all_leases_claimed(url: str, worker: subprocess.Popen[bytes], log: Path) -> None:
    transport = ClusterTransport(url)
    exchange = build_exchange(transport, PipelineConfig.from_env())
    keys = {agent.lease_key(p) for agent in exchange.app.agents.values() for p in range(agent.partitions)}

    async def claimed() -> bool:
        assert worker.poll() is None, log.read_text()
        return all([await transport.client.get(slots.physical(key)) for key in keys])

    try:
        await wait_for_condition(claimed, 60, "the worker to claim every partition", interval=0.1)
    finally:
        await transport.close()


async def trade_over_http(url: str, seller: dict[str, str], buyer: dict[str, str]) -> None:
    transport = open_transport(url)
    assert isinstance(transport, ClusterTransport)
    exchange = build_exchange(transport, PipelineConfig.from_env())
    app = create_app(exchange, config=ApiConfig(result_timeout_s=10.0, lookup_wait_s=5.0, weight_per_minute=0))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
            async def funded() -> bool:
                account = await signed(http, "GET", "/api/v3/account", buyer)
                return any(b["asset"] == "USDT" and b["free"] == "100000.00000000" for b in account["balances"])

            await wait_for_condition(funded, 30, "the buyer's deposit")
            sell = await signed(http, "POST", "/api/v3/order", seller, symbol=BTC, side="SELL", type="LIMIT",
                                timeInForce="GTC", quantity="1", price="30000", newOrderRespType="RESULT")
            assert sell["status"] == "NEW", sell
            buy = await signed(http, "POST", "/api/v3/order", buyer, symbol=BTC, side="BUY", type="LIMIT",
                               timeInForce="GTC", quantity="0.4", price="30000", newOrderRespType="FULL")
            assert buy["status"] == "FILLED" and buy["executedQty"] == "0.40000000", buy
            info = (await http.get("/api/v3/exchangeInfo", params={"symbol": BTC})).json()
            assert info["symbols"][0]["status"] == "TRADING", info

            async def book_settled() -> bool:
                depth = (await http.get("/api/v3/depth", params={"symbol": BTC})).json()
                return bool(depth["asks"] == [["30000.00000000", "0.60000000"]] and not depth["bids"])

            await wait_for_condition(book_settled, 20, "the depth read model")
            trades = (await http.get("/api/v3/trades", params={"symbol": BTC})).json()
            assert [(t["price"], t["qty"]) for t in trades] == [("30000.00000000", "0.40000000")], trades

            order = await signed(http, "GET", "/api/v3/order", seller, symbol=BTC, orderId=sell["orderId"])
            assert order["status"] == "PARTIALLY_FILLED" and order["executedQty"] == "0.40000000", order
            mine = await signed(http, "GET", "/api/v3/myTrades", buyer, symbol=BTC)
            assert [t["qty"] for t in mine] == ["0.40000000"], mine

            async def buyer_paid() -> bool:  # 0.4 BTC for 12,000 USDT plus the 0.1 % taker fee in USDT
                account = await signed(http, "GET", "/api/v3/account", buyer)
                balances = {b["asset"]: b["free"] for b in account["balances"]}
                return balances == {"BTC": "0.40000000", "USDT": "87988.00000000"}

            await wait_for_condition(buyer_paid, 20, "the buyer's balances")
    finally:
        await app.state.api.writer.close()
        await transport.close()


async def archived_trades(database_url: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(database_url)
    try:
        return [(r["symbol"], int(r["qty_lots"])) for r in await conn.fetch("SELECT symbol, qty_lots FROM trades")]
    finally:
        await conn.close()


@pytest.mark.slow
def test_api_admin_topics_and_persister_on_a_cluster(
    worker: subprocess.Popen[bytes], environment: dict[str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = environment["REDIS_URL"]
    asyncio.run(all_leases_claimed(url, worker, tmp_path / "worker.log"))
    seller = admin(capsys, "create-account", "seller")
    buyer = admin(capsys, "create-account", "buyer")
    assert int(seller["account"]) % ACCOUNT_PARTITIONS != int(buyer["account"]) % ACCOUNT_PARTITIONS
    admin(capsys, "deposit", seller["account"], "BTC", "2")
    admin(capsys, "deposit", buyer["account"], "USDT", "100000")

    asyncio.run(trade_over_http(url, seller, buyer))

    capsys.readouterr()
    assert main(["topics", "list"]) == 0
    listing = capsys.readouterr().out
    assert "orders.accepted:2" in listing and "{p" not in listing, listing
    assert main(["topics", "lag"]) == 0
    assert main(["topics", "tail", "market.trades", "-n", "5"]) == 0
    assert "30000" in capsys.readouterr().out

    main(["status", "--sample", "0.1", "--base-url", "http://127.0.0.1:9"])  # no API served: unhealthy
    status = capsys.readouterr().out
    assert "has no owner" not in status and "(nobody)" not in status, status
    agents = [row for row in map(str.split, status.splitlines()) if row[:1] == ["match"] and row[1].isdigit()]
    assert sorted(int(row[1]) for row in agents) == list(range(PARTITIONS)), status

    assert main(["persister", "--once"]) == 0, capsys.readouterr()
    assert "archived" in capsys.readouterr().out
    assert asyncio.run(archived_trades(environment["DATABASE_URL"])) == [(BTC, 40_000)]
