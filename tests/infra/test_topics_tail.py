"""`exchange topics tail`: a stream, or every partition of a topic merged by entry id."""

from __future__ import annotations

import asyncio
import json

import pytest

from infra.cli import main
from pipeline.config import PipelineConfig
from pipeline.core.messages import Deposit
from pipeline.exchange import build_exchange
from pipeline.transport.redis import RedisTransport


async def send_deposits(url: str) -> None:
    transport = RedisTransport(url)
    exchange = build_exchange(transport, PipelineConfig(account_partitions=3))
    try:
        for n, account in enumerate([1, 2, 3, 4, 5, 6]):  # partitions 1, 2, 0, 1, 2, 0
            await exchange.orders_in.send(Deposit(n, account, "USDT", 100 + n, f"r{n}"), key=account)
            await asyncio.sleep(0.002)  # entry ids of different streams order by their millisecond
    finally:
        await transport.close()


def tailed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["topics", "tail", *argv]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_topic_name_tails_every_partition_in_entry_order(
        redis_flush: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REDIS_URL", redis_flush)
    asyncio.run(send_deposits(redis_flush))

    merged = tailed(capsys, "orders.in", "-n", "4")
    assert [m["account_id"] for m in merged] == [3, 4, 5, 6]  # the newest four, oldest first
    assert [str(m["id"]).rpartition("@")[2] for m in merged] == ["p0", "p1", "p2", "p0"]

    one = tailed(capsys, "orders.in:1")
    assert [m["account_id"] for m in one] == [1, 4] and all("@" not in str(m["id"]) for m in one)

    filtered = tailed(capsys, "orders.in", "--filter", "account_id=5")
    assert [(m["account_id"], m["amount"]) for m in filtered] == [(5, 104)]

    capsys.readouterr()
    assert main(["topics", "tail", "orders.nothing"]) != 0
    assert "no stream of topic 'orders.nothing'" in capsys.readouterr().err
