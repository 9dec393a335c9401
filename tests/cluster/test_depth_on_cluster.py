"""The depth read model on a 3-master cluster: one slot per market, one MULTI/EXEC per read.

A market's read-model keys carry its symbol as a hash tag (``depth:{X0USD}:bids``), so
they share a slot; publish's writes of one market in one commit travel as one outbox
entry and are applied by one script; `GET /api/v3/depth` reads the three depth keys in
one transaction on the node serving that slot. So every book the API returns, read
while orders flow through three match partitions, is exactly the diff stream replayed
up to its lastUpdateId.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

from api.app import create_app
from api.context import ApiConfig
from bench.flows import funding, order_flow
from infra.services.cluster import ValkeyCluster
from pipeline.agents.publish.messages import DepthUpdate
from pipeline.agents.publish.readmodel import candles_key, depth_id_key, depth_key, market_keys, ticker_key
from pipeline.agents.publish.upgrade import main as upgrade_main
from pipeline.config import PipelineConfig
from pipeline.core.markets import Market
from pipeline.exchange import build_exchange
from pipeline.transport import slots
from pipeline.transport.cluster import ClusterTransport
from tests.cluster.exchange_checks import settled, ten_markets
from tests.pipeline.test_exchange_e2e import topic_values

Book = tuple[dict[int, int], dict[int, int]]


def test_a_markets_keys_share_one_slot() -> None:
    for symbol in ("BTCUSDT", "ETHUSDT", "X0USD"):
        keys = market_keys(symbol)
        assert "depth:{" + symbol + "}:bids" in keys and "candles:{" + symbol + "}:1m" in keys
        assert {slots.slot(key) for key in keys} == {slots.slot("{" + symbol + "}")}, symbol


def as_book(market: Market, body: dict[str, Any]) -> Book:
    """The (bids, asks) of a depth response in ticks and lots."""
    def side(levels: list[list[str]]) -> dict[int, int]:
        out: dict[int, int] = {}
        for price, qty in levels:
            ticks, lots = market.price_to_ticks(Decimal(price)), market.qty_to_lots(Decimal(qty))
            assert ticks is not None and lots is not None
            out[ticks] = lots
        return out

    return side(body["bids"]), side(body["asks"])


def check_against_diffs(updates: list[DepthUpdate], reads: list[tuple[int, Book]]) -> int:
    """Each read equals the diffs replayed up to its lastUpdateId, which ends a published diff; the reads checked."""
    book: Book = ({}, {})
    last = 0
    pending = sorted(reads, key=lambda read: read[0])
    checked = 0
    for update in [None, *updates]:
        if update is not None:
            assert update.first_update_id == last + 1
            for side, levels in ((book[0], update.bids), (book[1], update.asks)):
                for price, lots in levels:
                    if lots:
                        side[price] = lots
                    else:
                        side.pop(price, None)
            last = update.last_update_id
        while pending and pending[0][0] <= last:
            read_id, sides = pending.pop(0)
            assert read_id == last, f"lastUpdateId {read_id} ends no diff (the diff in hand ends at {last})"
            assert sides == book, f"the book read with lastUpdateId {read_id} is not the book at that id"
            checked += 1
    assert not pending, f"lastUpdateIds past the last diff: {[r for r, _ in pending]}"
    return checked


def exec_calls(cluster: ValkeyCluster) -> dict[int, int]:
    """EXEC commands each master has run so far."""
    calls: dict[int, int] = {}
    for port in cluster.ports:
        client = redis.Redis(port=port)
        try:
            calls[port] = int(client.info("commandstats").get("cmdstat_exec", {}).get("calls", 0))
        finally:
            client.close()
    return calls


async def test_depth_reads_are_one_transaction_and_match_their_update_id(
    cluster: ValkeyCluster, cluster_url: str
) -> None:
    markets = ten_markets()
    symbols = sorted(markets)
    commands: list[Any] = [*funding(markets, range(1, 9)), *order_flow(markets, 1500, seed=17, accounts=range(1, 9))]
    transport = ClusterTransport(cluster_url)
    exchange = build_exchange(transport, PipelineConfig(market_partitions=3), markets=markets, clock=lambda: 0)
    app = create_app(exchange, config=ApiConfig(weight_per_minute=0))
    reads: dict[str, list[tuple[int, Book]]] = defaultdict(list)
    try:
        await exchange.app.start()
        await exchange.app.wait_running()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
            async def read(symbol: str) -> int:
                response = await http.get("/api/v3/depth", params={"symbol": symbol, "limit": 5000})
                assert response.status_code == 200, response.text
                body = response.json()
                reads[symbol].append((body["lastUpdateId"], as_book(markets[symbol], body)))
                return int(body["lastUpdateId"])

            # orders in chunks, each followed by a read of every market while the agents work on it
            during: list[tuple[str, int]] = []
            for start in range(0, len(commands), 50):
                await exchange.orders_in.send_many((getattr(c, "account_id", None), c)
                                                   for c in commands[start:start + 50])
                ids = await asyncio.gather(*(read(symbol) for symbol in symbols))
                during += zip(symbols, ids, strict=True)
            await settled(exchange)

            # after the flow: one EXEC per read, on the master serving the market's slot, and none elsewhere
            node = transport.client.get_node_from_key(depth_id_key("X3USD"))
            before = exec_calls(cluster)
            final = [await read("X3USD") for _ in range(5)]
            after = exec_calls(cluster)
            assert {port: after[port] - before[port] for port in after} == {
                port: 5 if port == node.port else 0 for port in after}
            assert final[0] > 0 and len(set(final)) == 1
            for symbol in symbols:
                await read(symbol)

        updates: list[DepthUpdate] = await topic_values(exchange, "market.depth")
        assert {slots.slot(depth_id_key(s)) for s in symbols} != {slots.slot(depth_id_key(symbols[0]))}
        checked = 0
        for symbol in symbols:
            mine = [u for u in updates if u.symbol == symbol]
            checked += check_against_diffs(mine, reads[symbol])
            assert reads[symbol][-1][0] == mine[-1].last_update_id  # the last read: the whole flow
        assert checked == sum(len(r) for r in reads.values())
        # many of the reads saw a book in the middle of the flow (not empty, not final)
        moving = sum(1 for symbol, read_id in during if 0 < read_id < reads[symbol][-1][0])
        assert moving > 50, (len(during), moving)
    finally:
        await exchange.app.stop()
        await app.state.api.writer.close()
        await transport.close()



def test_the_upgrade_tool_moves_old_keys_on_a_cluster(cluster_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Old untagged keys on several nodes: copied (any type), merged (candles) or dropped, then gone."""
    client = RedisCluster.from_url(cluster_url.replace("redis+cluster://", "redis://"))
    try:
        client.hset("depth:X1USD:bids", mapping={"100": "5", "99": "2"})
        client.set("depth:X1USD:id", "7")
        client.hset("ticker:X1USD", mapping={"last_ticks": "100"})
        client.hset(ticker_key("X1USD"), mapping={"last_ticks": "101"})  # publish wrote it since
        client.zadd("candles:X2USD:1m", {b"a": 60_000, b"b": 120_000, b"c": 180_000})
        client.zadd(candles_key("X2USD", "1m"), {b"c2": 180_000, b"d": 240_000})
        assert len({slots.slot(k) for k in ("depth:X1USD:bids", "depth:X1USD:id", "ticker:X1USD")}) == 3
        assert upgrade_main(["--redis-url", cluster_url, "--dry-run"]) == 0
        assert "4 old keys would be removed" in capsys.readouterr().out
        assert upgrade_main(["--redis-url", cluster_url]) == 0
        assert "4 old keys were removed" in capsys.readouterr().out
        assert client.hgetall(depth_key("X1USD", True)) == {b"100": b"5", b"99": b"2"}
        assert client.get(depth_id_key("X1USD")) == b"7"
        assert client.hgetall(ticker_key("X1USD")) == {b"last_ticks": b"101"}
        assert client.zrange(candles_key("X2USD", "1m"), 0, -1) == [b"a", b"b", b"c2", b"d"]
        assert not [k for pattern in ("depth:X*", "ticker:X*", "candles:X*") for k in client.scan_iter(match=pattern)]
        assert upgrade_main(["--redis-url", cluster_url]) == 0
        assert "0 old keys were removed" in capsys.readouterr().out
    finally:
        client.close()
