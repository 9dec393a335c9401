"""`exchange replay` of a topic with several partitions, on one server: a bare name reads them all.

The exchange runs match as 3 partitions (``orders.accepted:0..2``, markets dealt over them).
``orders.accepted`` then means the three streams merged by entry id: every message once, in
(ms, seq, partition, index) order, each partition's own order kept; its replay gives the books
of all three live partitions; printed positions (``MS-SEQ#INDEX@pN``) name one message for
--at/--from/--to; ``MS-SEQ`` alone bounds every partition; ``orders.accepted:1`` is still one
partition; --into-group delivers the merged sequence with each entry's partition. Partitions
trimmed in Redis, or gone from it, are read from the PostgreSQL archive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from bench.flows import funding, order_flow
from infra.cli import main
from pipeline.agents.topology import ORDERS_ACCEPTED
from pipeline.config import PipelineConfig
from pipeline.core.markets import Market
from pipeline.exchange import Exchange, build_exchange, merged_engine_hash
from pipeline.messages import Codec
from pipeline.transport.redis import RedisTransport
from recovery.persister import Persister, PersisterConfig, app_streams
from recovery.replay import ReplayCore, replay_state
from recovery.replay_group import replay_stream
from recovery.replay_source import MessageId, ReplayError, read_range
from recovery.replay_topic import resolve_topic, topic_partitions
from tests.cluster.exchange_checks import settled, ten_markets, ten_markets_toml

pytestmark = pytest.mark.redis

PARTITIONS = 3


@pytest.fixture
def markets() -> dict[str, Market]:
    return ten_markets()


@pytest.fixture
async def exchange(redis_flush: str, markets: dict[str, Market]) -> AsyncIterator[Exchange]:
    """The exchange with 3 match partitions on one Valkey, funding and 600 orders over ten markets settled."""
    transport = RedisTransport(redis_flush)
    built = build_exchange(transport, PipelineConfig(market_partitions=PARTITIONS), markets=markets)
    commands = [*funding(markets, range(1, 9)), *order_flow(markets, 600, seed=11, accounts=range(1, 9))]
    await built.app.start()
    try:
        await built.app.wait_running()
        for start in range(0, len(commands), 500):
            await built.orders_in.send_many((getattr(c, "account_id", None), c) for c in commands[start:start + 500])
        await settled(built)
        yield built
    finally:
        await built.app.stop()
        await transport.close()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_flush: str) -> None:
    (tmp_path / "markets.toml").write_text(ten_markets_toml())
    monkeypatch.setenv("EXCHANGE_MARKETS_FILE", str(tmp_path / "markets.toml"))
    monkeypatch.setenv("REDIS_URL", redis_flush)
    monkeypatch.setenv("EXCHANGE_DATA_DIR", str(tmp_path / "var"))  # no embedded PostgreSQL there
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(logging.root, "handlers", list(logging.root.handlers))


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


def applied(markets: dict[str, Market], messages: list[tuple[MessageId, bytes]]) -> ReplayCore:
    """A books-only core fed `messages` one by one (what a replay of them must give)."""
    codec: Codec[Any] = Codec(ORDERS_ACCEPTED.value_type)
    core = ReplayCore(markets, stages=ORDERS_ACCEPTED.name)
    for _, raw in messages:
        core.apply(codec.decode(raw))
    return core


async def test_a_bare_topic_merges_every_partition(
    exchange: Exchange, markets: dict[str, Market], redis_flush: str, cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = exchange.app.transport.client  # type: ignore[attr-defined]
    source = await resolve_topic(client, "orders.accepted")
    assert source.partitions == tuple(range(PARTITIONS)) and source.merged
    whole = [item async for item in source.read(client, None, None)]
    per = {p: [(str(m), raw) async for m, raw in read_range(client, f"orders.accepted:{p}", None, None)]
           for p in range(PARTITIONS)}
    assert all(per.values()), {p: len(v) for p, v in per.items()}
    # every message once; each partition's own order; the whole in (ms, seq, partition, index) order
    assert len(whole) == sum(map(len, per.values()))
    for p in range(PARTITIONS):
        assert [(f"{m.entry_id}#{m.index}", raw) for m, raw in whole if m.partition == p] == per[p]
    keys = [(*m.key[:2], m.partition, m.index) for m, _ in whole]
    assert keys == sorted(keys)

    # the bare topic's replay gives every live match partition's books; TOPIC:N still one partition
    books = await replay_state("orders.accepted", redis_url=redis_flush, markets=markets)
    assert books.applied == len(whole) and books.engine.state_hash() == merged_engine_hash(exchange)
    one = await replay_state("orders.accepted:1", redis_url=redis_flush, markets=markets)
    assert one.applied == len(per[1])
    assert one.engine.state_hash() == exchange.app.runners[("match", 1)].state.state_hash()

    # a printed position (MS-SEQ#INDEX@pN) names one message of the merged sequence
    k = len(whole) // 2
    at = str(whole[k][0])
    assert at.endswith(f"@p{whole[k][0].partition}")
    expected = applied(markets, whole[: k + 1])
    assert expected.state_hash() != books.state_hash()
    capsys.readouterr()
    assert await cli("replay", "orders.accepted", "--at", at) == 0
    out = capsys.readouterr().out
    assert f"state after {at}" in out and expected.state_hash() in out
    assert f"replayed {k + 1} message(s) of orders.accepted (partitions 0, 1, 2 merged by entry id)" in out
    j = next(i for i in range(k, len(whole) - 1) if whole[i][0].partition != whole[i + 1][0].partition)
    assert await cli("replay", "orders.accepted", "--from", str(whole[j][0]), "--to", str(whole[j + 1][0]),
                     "--step") == 0
    out = capsys.readouterr().out
    assert out.count("  state hash ") == 2
    assert f"[{j + 1}] {whole[j][0]}" in out and f"[{j + 2}] {whole[j + 1][0]}" in out
    assert applied(markets, whole[: j + 2]).state_hash() in out

    # an entry id alone bounds every partition; an index without its partition is refused
    entry = whole[k][0].entry_id
    upto = await replay_state("orders.accepted", redis_url=redis_flush, markets=markets, end=entry)
    assert upto.applied == sum(1 for m, _ in whole if m.key[:2] <= whole[k][0].key[:2]) >= k + 1
    with pytest.raises(ReplayError, match="@p"):
        await replay_state("orders.accepted", redis_url=redis_flush, markets=markets, end=f"{entry}#0")
    assert await cli("replay", "orders.accepted:1", "--at", f"{entry}@p2") == 1
    assert "not in orders.accepted:1" in capsys.readouterr().err

    # --into-group: the merged sequence, each entry with the partition its source id belongs to
    assert await cli("replay", "orders.accepted", "--into-group", "backfill") == 0
    target = replay_stream("backfill", "orders.accepted")
    assert target in capsys.readouterr().out
    reader = aioredis.Redis.from_url(redis_flush)
    try:
        got: list[tuple[str, bytes]] = []
        while reply := await reader.xreadgroup("backfill", "analyst", {target: ">"}, count=100):
            for entry_id, fields in reply[0][1]:
                parts = msgspec.msgpack.decode(fields[b"d"], type=list[msgspec.Raw])
                source_id, partition = fields[b"src"].decode(), int(fields[b"p"])
                got.extend((str(MessageId(source_id, i, partition)), bytes(p)) for i, p in enumerate(parts))
                await reader.xack(target, "backfill", entry_id)
    finally:
        await reader.aclose()
    assert got == [(str(m), raw) for m, raw in whole]


async def test_partitions_trimmed_or_gone_from_redis_come_from_the_archive(
    exchange: Exchange, markets: dict[str, Market], redis_flush: str, database_flush: str,
) -> None:
    full = await replay_state("orders.accepted", redis_url=redis_flush, markets=markets)
    persister = Persister(exchange.app.transport, database_flush, app_streams(exchange.app),
                          PersisterConfig(block_ms=50))
    await persister.start()
    await persister.wait_caught_up(timeout=60)
    await persister.stop()
    await exchange.app.stop()  # nothing appends any more: Redis can be changed under the replay
    client = aioredis.Redis.from_url(redis_flush)
    try:
        # partition 0 trimmed to nothing (the key stays), partition 1 whole, partition 2 gone from Redis
        await client.xtrim("orders.accepted:0", maxlen=0, approximate=False)
        assert await client.exists("orders.accepted:0") and not await client.xlen("orders.accepted:0")
        await client.delete(f"orders.accepted:{PARTITIONS - 1}")
        assert await topic_partitions(client, "orders.accepted") == list(range(PARTITIONS - 1))
        assert await topic_partitions(client, "orders.accepted", database_flush) == list(range(PARTITIONS))
    finally:
        await client.aclose()

    with pytest.raises(ReplayError, match="archive"):
        await replay_state("orders.accepted", redis_url=redis_flush, markets=markets)
    again = await replay_state("orders.accepted", redis_url=redis_flush, markets=markets,
                               database_url=database_flush)
    assert again.applied == full.applied and again.state_hash() == full.state_hash()
