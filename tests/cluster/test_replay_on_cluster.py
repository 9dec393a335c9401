"""`exchange replay` and `exchange state diff` on a 3-master Valkey Cluster.

An in-process exchange (3 match partitions) on the cluster takes funding and orders across
ten markets; then, with ``REDIS_URL=redis+cluster://...``:

- `replay_state` of ``orders.in`` gives the live engine's and accounts' hashes, of each
  market partition's ``orders.accepted:N`` that partition's live books, and of the bare
  ``orders.accepted`` (its 3 partitions merged by entry id) every partition's books;
- ``exchange replay orders.in --at <offset>`` prints the hash an isolated core reaches after
  the same commands (what it prints on one server), ``--from/--to --step`` too;
- an unknown stream is refused with the streams' logical names;
- ``--into-group`` re-delivers exactly the range to a consumer group on the tagged stream;
- ``exchange state diff`` of two replays of ``orders.accepted`` (merged positions ``...@pN``)
  says identical (exit 0), and of two different points shows the difference (exit 1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench.flows import funding, order_flow
from infra.cli import main
from pipeline.config import PipelineConfig
from pipeline.core.markets import Market
from pipeline.exchange import Exchange, build_exchange, merged_engine_hash
from pipeline.transport import slots
from pipeline.transport.cluster import ClusterTransport
from recovery.replay import ReplayCore, replay_state
from recovery.replay_group import replay_stream
from recovery.replay_source import parse_bound, read_range
from recovery.replay_topic import resolve_topic
from tests.cluster.exchange_checks import settled, ten_markets, ten_markets_toml
from tests.pipeline.test_exchange_e2e import pipeline_accounts

PARTITIONS = 3


@pytest.fixture
def markets() -> dict[str, Market]:
    return ten_markets()


@pytest.fixture
def commands(markets: dict[str, Market]) -> list[Any]:
    return [*funding(markets, range(1, 9)), *order_flow(markets, 700, seed=5, accounts=range(1, 9))]


@pytest.fixture
async def exchange(cluster_transport: ClusterTransport, markets: dict[str, Market],
                   commands: list[Any]) -> AsyncIterator[Exchange]:
    """The exchange on the cluster, every command sent and settled."""
    built = build_exchange(cluster_transport, PipelineConfig(market_partitions=PARTITIONS), markets=markets,
                           clock=lambda: 0)
    await built.app.start()
    try:
        await built.app.wait_running()
        for start in range(0, len(commands), 500):
            await built.orders_in.send_many((getattr(c, "account_id", None), c) for c in commands[start:start + 500])
        await settled(built)
        yield built
    finally:
        await built.app.stop()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cluster_url: str) -> None:
    """The CLI on the cluster and the ten markets (no PostgreSQL: everything is still in Redis)."""
    (tmp_path / "markets.toml").write_text(ten_markets_toml())
    monkeypatch.setenv("EXCHANGE_MARKETS_FILE", str(tmp_path / "markets.toml"))
    monkeypatch.setenv("REDIS_URL", cluster_url)
    monkeypatch.setenv("EXCHANGE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(logging.root, "handlers", list(logging.root.handlers))


async def cli(*argv: str) -> int:
    """Run `exchange ...` in a thread (it runs its own event loop)."""
    return await asyncio.to_thread(main, list(argv))


async def messages(transport: ClusterTransport, stream: str) -> list[tuple[str, bytes]]:
    return [(str(m), raw) async for m, raw in read_range(transport.client, stream, None, None)]


async def test_replay_and_state_diff_on_a_cluster(
    exchange: Exchange, cluster_transport: ClusterTransport, cluster_url: str, markets: dict[str, Market],
    commands: list[Any], cli_env: None, capsys: pytest.CaptureFixture[str],
) -> None:
    # the whole input gives the live state (books merged over the match partitions, accounts)
    core = await replay_state(redis_url=cluster_url, markets=markets)
    assert core.applied == len(commands)
    assert core.hashes() == {"match": merged_engine_hash(exchange),
                             "accounts": pipeline_accounts(exchange, markets).state_hash()}
    for partition in range(PARTITIONS):  # each match partition's own input gives its books
        books = await replay_state(f"orders.accepted:{partition}", redis_url=cluster_url, markets=markets)
        assert books.applied > 0
        assert books.engine.state_hash() == exchange.app.runners[("match", partition)].state.state_hash()
    # the bare topic: every partition's tagged stream, merged by entry id (each node's clock): all the books
    source = await resolve_topic(cluster_transport.client, "orders.accepted")
    assert source.partitions == tuple(range(PARTITIONS))
    accepted = [m async for m, _ in source.read(cluster_transport.client, None, None)]
    assert {m.partition for m in accepted} == set(range(PARTITIONS))
    books = await replay_state("orders.accepted", redis_url=cluster_url, markets=markets)
    assert books.applied == len(accepted) and books.engine.state_hash() == merged_engine_hash(exchange)

    # --at: the state after one message, as an isolated core on one server gets it
    ids = [m for m, _ in await messages(cluster_transport, "orders.in:0")]
    assert len(ids) == len(commands)
    k = 500
    expected = ReplayCore(markets)
    for command in commands[: k + 1]:
        expected.apply(command)
    at = await replay_state(redis_url=cluster_url, markets=markets, end=parse_bound(ids[k], "to"))
    assert at.state_hash() == expected.state_hash() != core.state_hash()
    capsys.readouterr()
    assert await cli("replay", "orders.in", "--at", ids[k]) == 0
    out = capsys.readouterr().out
    assert f"state after {ids[k]}" in out and expected.state_hash() in out
    assert await cli("replay", "orders.in", "--from", ids[k - 1], "--to", ids[k], "--step") == 0
    out = capsys.readouterr().out
    assert out.count("  state hash ") == 2 and expected.state_hash() in out

    # an unknown stream: the error lists the streams by their logical names
    assert await cli("replay", "orders.nope") != 0
    err = capsys.readouterr().err
    assert "no stream 'orders.nope:0'" in err and "orders.accepted:2" in err and "{p" not in err

    # --into-group: exactly the range, on the source partition's tagged stream
    source = await messages(cluster_transport, "orders.in:0")
    first, last = source[40][0], source[300][0]
    assert await cli("replay", "orders.in", "--from", first, "--to", last, "--into-group", "backfill") == 0
    target = slots.physical(replay_stream("backfill", "orders.in:0"))
    assert target in capsys.readouterr().out
    client = cluster_transport.client
    got: list[tuple[str, bytes]] = []
    while reply := await client.xreadgroup("backfill", "analyst", {target: ">"}, count=100):
        for entry_id, fields in reply[0][1]:
            src = fields[b"src"].decode()
            start = int(first.split("#")[1]) if first.startswith(src + "#") else 0
            parts = msgspec.msgpack.decode(fields[b"d"], type=list[msgspec.Raw])
            got.extend((f"{src}#{i}", bytes(p)) for i, p in enumerate(parts, start=start))
            await client.xack(target, "backfill", entry_id)
    assert got == source[40:301]
    assert int(await client.hget(slots.tag(target) + "meta:" + replay_stream("backfill", "orders.in:0"),
                                 "added")) == len(got)

    # state diff of replay sides (merged positions MS-SEQ#INDEX@pN): identical at one point, different at two
    point, later = accepted[len(accepted) // 2], accepted[-1]
    assert "@p" in str(point)
    assert await cli("state", "diff", f"replay:orders.accepted@{point}", f"replay:orders.accepted@{point}") == 0
    assert "compared books: identical" in capsys.readouterr().out
    assert await cli("state", "diff", f"replay:orders.accepted@{point}", f"replay:orders.accepted@{later}") == 1
    assert "difference(s)" in capsys.readouterr().out
    assert await cli("state", "diff", "replay:orders.in@end", "replay:orders.in@end") == 0
    assert "compared books, accounts: identical" in capsys.readouterr().out
