"""Every process checks its partition layout against the data's before it starts (`pipeline.layout`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from pipeline.config import PipelineConfig
from pipeline.core.markets import load_markets
from pipeline.core.messages import Deposit
from pipeline.exchange import Exchange, build_exchange
from pipeline.layout import LAYOUT_KEY, LayoutMismatchError, assign_markets, check_layout
from pipeline.transport.base import Transport
from pipeline.transport.memory import MemoryTransport

MARKETS = load_markets(None)
WITHOUT_ADA = {s: m for s, m in MARKETS.items() if s != "ADAUSDT"}  # ADAUSDT sorts first: adding it shifts the deal


def exchange(transport: Transport, accounts: int = 1, markets: int = 1, market_list: Any = None) -> Exchange:
    config = PipelineConfig(account_partitions=accounts, market_partitions=markets)
    return build_exchange(transport, config, markets=market_list if market_list is not None else MARKETS)


async def test_the_first_process_records_the_layout_and_the_same_layout_starts_again() -> None:
    transport = MemoryTransport()
    await check_layout(exchange(transport, accounts=3, markets=2))
    recorded = json.loads(await transport.get(LAYOUT_KEY) or b"{}")
    assert (recorded["account_partitions"], recorded["market_partitions"]) == (3, 2)
    assert recorded["markets"]["BTCUSDT"] == sorted(MARKETS).index("BTCUSDT") % 2
    await check_layout(exchange(transport, accounts=3, markets=2))  # a restart, another worker


@pytest.mark.parametrize(("accounts", "markets", "says"), [
    (1, 2, "EXCHANGE_ACCOUNT_PARTITIONS=1 here, 3 in the data"),
    (3, 1, "EXCHANGE_MARKET_PARTITIONS=1 here, 2 in the data"),
    (4, 3, "EXCHANGE_ACCOUNT_PARTITIONS=4 here, 3 in the data"),
])
async def test_other_partition_counts_are_refused(accounts: int, markets: int, says: str) -> None:
    transport = MemoryTransport()
    await check_layout(exchange(transport, accounts=3, markets=2))
    with pytest.raises(LayoutMismatchError, match=says):
        await check_layout(exchange(transport, accounts=accounts, markets=markets))
    assert json.loads(await transport.get(LAYOUT_KEY) or b"{}")["account_partitions"] == 3  # record untouched


async def test_a_new_market_leaves_the_recorded_ones_where_they_are() -> None:
    transport = MemoryTransport()  # two match partitions; ADAUSDT sorts first: dealt anew, it would shift all
    before = exchange(transport, markets=2, market_list=WITHOUT_ADA)
    await check_layout(before)
    was = {s: before.orders_accepted.partition_for(s) for s in WITHOUT_ADA}
    after = exchange(transport, markets=2)
    assert any(after.orders_accepted.partition_for(s) != p for s, p in was.items())  # the plain deal moves them
    await check_layout(after)  # pins the record
    assert {s: after.orders_accepted.partition_for(s) for s in WITHOUT_ADA} == was
    recorded = json.loads(await transport.get(LAYOUT_KEY) or b"{}")["markets"]
    assert recorded["ADAUSDT"] == after.orders_accepted.partition_for("ADAUSDT") == 1  # 5 and 4: the emptier one
    again = exchange(transport, markets=2)  # a restart (another worker) routes every market the same way
    await check_layout(again)
    assert {s: again.orders_accepted.partition_for(s) for s in MARKETS} == recorded


def test_new_markets_go_to_the_partitions_with_the_fewest() -> None:
    assert assign_markets({"A": 0, "B": 0, "C": 1}, ["A", "B", "C", "D", "E", "F"], 3) == {
        "A": 0, "B": 0, "C": 1, "D": 2, "E": 1, "F": 2}
    assert assign_markets({"A": 1, "GONE": 0}, ["A", "B"], 2) == {"A": 1, "B": 0}  # a removed market frees room
    assert assign_markets({}, ["B", "A", "C"], 2) == {"A": 0, "B": 1, "C": 0}


async def test_data_from_before_the_record_is_judged_by_its_partitions() -> None:
    transport = MemoryTransport()
    old = exchange(transport, accounts=3)
    for account in range(3):  # orders.in:0..2 exist, as three accounts partitions wrote them
        await old.orders_in.send(Deposit(1, account, "USDT", 1), key=account)
    with pytest.raises(LayoutMismatchError, match="EXCHANGE_ACCOUNT_PARTITIONS=1 here, 3 in the data"):
        await check_layout(exchange(transport, accounts=1))
    await check_layout(exchange(transport, accounts=3))
    assert json.loads(await transport.get(LAYOUT_KEY) or b"{}")["account_partitions"] == 3


@pytest.mark.redis
def test_a_process_with_another_layout_exits_with_a_clear_error(redis_flush: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_flush, "EXCHANGE_ACCOUNT_PARTITIONS": "1"}
    listed = subprocess.run([sys.executable, "-m", "infra", "worker", "--list"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr  # --list starts nothing: no check, no record
    import redis

    client = redis.Redis.from_url(redis_flush)
    client.set(LAYOUT_KEY, json.dumps({"account_partitions": 3, "market_partitions": 1, "markets": {}}))
    refused = subprocess.run([sys.executable, "-m", "infra", "api", "--port", "0"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert "error: this process's partition layout differs" in refused.stderr
    assert "EXCHANGE_ACCOUNT_PARTITIONS=1 here, 3 in the data" in refused.stderr
    assert "Traceback" not in refused.stderr
    deposit = subprocess.run([sys.executable, "-m", "infra", "admin", "deposit", "4", "USDT", "100"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert deposit.returncode == 2 and "EXCHANGE_ACCOUNT_PARTITIONS=1 here" in deposit.stderr, deposit.stderr
    assert not client.exists("orders.in:0"), "the refused deposit was written anyway"
    client.close()
