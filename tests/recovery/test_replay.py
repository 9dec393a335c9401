"""`exchange replay` and `replay_state`: an isolated core replayed from the streams (and the archive)."""

from __future__ import annotations

import asyncio
import datetime
import io
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from infra.cli import main
from infra.cli.common import print_table
from pipeline.core.accounts import Accounts, AccountsSnapshot
from pipeline.core.markets import Market
from pipeline.exchange import Exchange
from recovery.persister import Persister, PersisterConfig
from recovery.replay import ReplayCore, replay_state
from recovery.replay_group import replay_stream
from recovery.replay_source import MAX_SEQ, ReplayError, parse_bound, read_range
from recovery.replay_view import BOOK_HEADERS, book_rows
from tests.core.core_helpers import TEST_MARKETS
from tests.recovery.conftest import commands, send

pytestmark = pytest.mark.redis


def live_accounts(exchange: Exchange, markets: dict[str, Market]) -> Accounts:
    shared = exchange.accounts[0]
    return Accounts.restore(markets, AccountsSnapshot(
        0, sorted(shared.balances.partition(0).values(), key=lambda b: (b.account_id, b.asset)),
        sorted(shared.holds.partition(0).values(), key=lambda h: (h.symbol, h.order_id)),
        *([sorted(shared.requests.partition(0))] if getattr(shared, "requests", None) is not None else [])))


async def run_flow(exchange: Exchange, markets: dict[str, Market], n: int) -> list[Any]:
    flow = commands(markets, n)
    await send(exchange, flow)
    await exchange.app.wait_caught_up(timeout=60)
    return flow


async def message_ids(exchange: Exchange, stream: str) -> list[str]:
    client = exchange.app.transport.client  # type: ignore[attr-defined]
    return [str(mid) async for mid, _ in read_range(client, stream, None, None)]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_flush: str) -> None:
    """The CLI on the test's Valkey and markets (no PostgreSQL unless a test sets DATABASE_URL)."""
    lines = ["[assets]", *(f"{a} = {d}" for a, d in TEST_MARKETS["assets"].items())]
    for market in TEST_MARKETS["markets"]:
        lines += ["", "[[markets]]", *(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}"
                                       for k, v in market.items())]
    (tmp_path / "markets.toml").write_text("\n".join(lines).replace("'", '"') + "\n")
    monkeypatch.setenv("EXCHANGE_MARKETS_FILE", str(tmp_path / "markets.toml"))
    monkeypatch.setenv("REDIS_URL", redis_flush)
    monkeypatch.setenv("EXCHANGE_DATA_DIR", str(tmp_path / "var"))  # no embedded PostgreSQL there
    monkeypatch.delenv("DATABASE_URL", raising=False)


async def cli(*argv: str) -> int:
    """Run `exchange ...` in a thread (it runs its own event loop)."""
    return await asyncio.to_thread(main, list(argv))


async def test_replay_to_the_end_equals_the_live_engine(
    exchange: Exchange, markets: dict[str, Market], redis_flush: str
) -> None:
    await run_flow(exchange, markets, 1500)
    core = await replay_state(redis_url=redis_flush, markets=markets)
    live_engine = exchange.app.runners[("match", 0)].state
    assert core.hashes() == {"match": live_engine.state_hash(),
                             "accounts": live_accounts(exchange, markets).state_hash()}
    assert sum(1 for _ in core.engine.open_orders("TSTUSD")) > 0
    core.validate_internal_state()

    # the matcher's own input gives the same books
    books = await replay_state("orders.accepted", redis_url=redis_flush, markets=markets)
    assert books.engine.state_hash() == live_engine.state_hash()


async def test_at_gives_the_earlier_book(
    exchange: Exchange, markets: dict[str, Market], redis_flush: str, cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flow = await run_flow(exchange, markets, 1200)
    ids = await message_ids(exchange, "orders.in:0")
    assert len(ids) == len(flow)
    k = 700
    expected = ReplayCore(markets)
    for command in flow[: k + 1]:
        expected.apply(command)
    end = parse_bound(ids[k], "to")
    earlier = await replay_state(redis_url=redis_flush, markets=markets, end=end)
    assert earlier.applied == k + 1 and str(earlier.position) == ids[k]
    assert earlier.state_hash() == expected.state_hash()
    now = await replay_state(redis_url=redis_flush, markets=markets)
    assert now.state_hash() != earlier.state_hash()

    capsys.readouterr()
    assert await cli("replay", "orders.in", "--at", ids[k], "--levels", "3") == 0
    out = capsys.readouterr().out
    assert f"state after {ids[k]}" in out
    assert expected.state_hash() in out
    table = io.StringIO()
    print_table(BOOK_HEADERS, book_rows(expected, "TSTUSD", 3), out=table)
    assert table.getvalue() in out  # the book as it was then, exactly
    # --from with --step prints each command of the range, after replaying what came before it quietly
    assert await cli("replay", "orders.in", "--from", ids[k - 1], "--to", ids[k], "--step") == 0
    out = capsys.readouterr().out
    assert out.count("  state hash ") == 2 and f"[{k + 1}] {ids[k]}" in out
    assert expected.state_hash() in out


async def test_bounds_by_offset_time_and_relative_time(exchange: Exchange, markets: dict[str, Market]) -> None:
    assert parse_bound("1764547200123-4", "from") == (1764547200123, 4, 0)
    assert parse_bound("1764547200123-4", "to") == (1764547200123, 4, MAX_SEQ)
    assert parse_bound("1764547200123-4#7", "to") == (1764547200123, 4, 7)
    assert parse_bound("start", "from") is None and parse_bound("end", "to") is None
    assert parse_bound("2026-11-30T23:50:00Z", "from") == (1796082600000, 0, 0)
    assert parse_bound("2026-11-30 23:50", "to") == (1796082600000, MAX_SEQ, MAX_SEQ)  # no zone: UTC
    assert parse_bound("2026-12-01T00:50:00+01:00", "from") == (1796082600000, 0, 0)
    assert parse_bound("-5m", "from", now_ms=lambda: 1_000_000) == (700_000, 0, 0)
    assert parse_bound("now-1.5s", "to", now_ms=lambda: 10_000) == (8_500, MAX_SEQ, MAX_SEQ)
    assert parse_bound("2h ago", "from", now_ms=lambda: 10_000_000) == (2_800_000, 0, 0)
    for bad, side in (("yesterday", "from"), ("12:00 tomorrow", "to"), ("end", "from"), ("start", "to")):
        with pytest.raises(ReplayError):
            parse_bound(bad, side)

    # a time between two appends splits the stream there
    client = exchange.app.transport.client  # type: ignore[attr-defined]
    await send(exchange, commands(markets, 10)[:5])
    first_half = [str(m) async for m, _ in read_range(client, "orders.in:0", None, None)]
    last_ms = int(first_half[-1].split("-")[0])
    while datetime.datetime.now(datetime.UTC).timestamp() * 1000 < last_ms + 2:
        await asyncio.sleep(0.001)
    await send(exchange, commands(markets, 10)[5:])
    when = datetime.datetime.fromtimestamp((last_ms + 1) / 1000, tz=datetime.UTC).isoformat()
    upto = [str(m) async for m, _ in read_range(client, "orders.in:0", None, parse_bound(when, "to"))]
    after = [str(m) async for m, _ in read_range(client, "orders.in:0", parse_bound(when, "from"), None)]
    assert upto == first_half and len(after) == len(commands(markets, 10)) - 5


async def test_bad_arguments_give_clear_errors(
    exchange: Exchange, markets: dict[str, Market], cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_flow(exchange, markets, 50)
    cases = [
        (("replay", "orders.in", "--from", "soon"), "neither an offset"),
        (("replay", "orders.in", "--from", "1764547200123-5", "--to", "1764547200123-4"), "range is empty"),
        (("replay", "orders.in", "--at", "end", "--from", "start", "--to", "1-0"), "without --from/--to"),
        (("replay", "market.trades"), "cannot be replayed into a core"),
        (("replay", "no.such.topic"), "no stream 'no.such.topic:0'"),
        (("replay", "orders.in:x"), "TOPIC:PARTITION"),
        (("replay", "orders.events", "--into-group", "bad name!"), "group name"),
        (("replay", "orders.events", "--at", "now-1m", "--into-group", "g"), "use --from/--to"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert await cli(*argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (argv, err)
        assert "Traceback" not in err


async def test_into_group_delivers_exactly_the_range(
    exchange: Exchange, markets: dict[str, Market], redis_flush: str, cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await run_flow(exchange, markets, 600)
    client = exchange.app.transport.client  # type: ignore[attr-defined]
    source = [(str(m), raw) async for m, raw in read_range(client, "orders.events:0", None, None)]
    assert len(source) > 200
    first, last = source[40][0], source[-30][0]
    assert await cli("replay", "orders.events", "--from", first, "--to", last, "--into-group", "backfill") == 0
    assert "re-delivered" in capsys.readouterr().out

    reader = aioredis.Redis.from_url(redis_flush)
    try:
        target = replay_stream("backfill", "orders.events:0")
        got: list[tuple[str, bytes]] = []
        while reply := await reader.xreadgroup("backfill", "analyst", {target: ">"}, count=100):
            for entry_id, fields in reply[0][1]:
                parts = msgspec.msgpack.decode(fields[b"d"], type=list[msgspec.Raw])
                got.extend((f"{fields[b'src'].decode()}#{i}", bytes(p)) for i, p in enumerate(
                    parts, start=_first_index(source, fields[b"src"].decode(), first)))
                await reader.xack(target, "backfill", entry_id)
    finally:
        await reader.aclose()
    assert got == source[40:len(source) - 29]


def _first_index(source: list[tuple[str, bytes]], entry_id: str, first: str) -> int:
    """Index of the first delivered message of an entry (the range may start inside an entry)."""
    return int(first.split("#")[1]) if first.startswith(entry_id + "#") else 0


async def test_trimmed_range_is_read_from_the_archive(
    exchange: Exchange, markets: dict[str, Market], redis_flush: str, database_flush: str
) -> None:
    await run_flow(exchange, markets, 1500)
    full = await replay_state(redis_url=redis_flush, markets=markets)
    persister = Persister(exchange.app.transport, database_flush, config=PersisterConfig(block_ms=50))
    await persister.start()
    await persister.wait_caught_up(timeout=60)
    await persister.stop()
    client = exchange.app.transport.client  # type: ignore[attr-defined]
    entries = await client.xrange("orders.in:0")
    assert len(entries) >= 3
    await client.xtrim("orders.in:0", minid=entries[2][0], approximate=False)  # the first two entries go

    with pytest.raises(ReplayError, match="archive"):
        await replay_state(redis_url=redis_flush, markets=markets)
    again = await replay_state(redis_url=redis_flush, markets=markets, database_url=database_flush)
    assert again.applied == full.applied and again.state_hash() == full.state_hash()
    # a range that lies after the trimmed part needs no archive
    later = await replay_state(redis_url=redis_flush, markets=markets,
                               start=parse_bound(entries[2][0].decode(), "from"))
    assert later.applied < full.applied
