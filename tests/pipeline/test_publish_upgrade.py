"""Upgrading from untagged market keys (``depth:BTCUSDT:bids``) to tagged ones (``depth:{BTCUSDT}:bids``).

A first run writes the read models; the test then gives every market key its old,
untagged name (the layout an older version left) and starts the exchange again:
publish's start-up write makes depth, book tickers, tickers and the current candles
complete under the new names, and `upgrade_keys` (before or after that start) brings
back the candle history and removes the old keys. The read models then equal the
engine's after more orders, as in an exchange that never changed names.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from pipeline.agents.publish.readmodel import (
    bbo_key,
    candles_key,
    depth_id_key,
    depth_key,
    market_keys,
    ticker_key,
)
from pipeline.agents.publish.upgrade import old_keys, tagged_name, upgrade_keys
from pipeline.core.markets import Market
from pipeline.transport.redis import RedisTransport
from tests.core.core_helpers import sample_markets
from tests.pipeline.test_exchange_e2e import run_pipeline
from tests.pipeline.test_publish import check_depth, check_market_data, flow


def old_name(key: str) -> str:
    """The untagged name an older version used for `key`."""
    return key.replace("{", "").replace("}", "")


async def dump(client: Any, keys: list[str]) -> dict[str, Any]:
    """The values of the existing `keys` (hash, string or sorted set)."""
    out: dict[str, Any] = {}
    for key in keys:
        kind = (await client.type(key)).decode()
        if kind == "hash":
            out[key] = await client.hgetall(key)
        elif kind == "string":
            out[key] = await client.get(key)
        elif kind == "zset":
            out[key] = await client.zrange(key, 0, -1, withscores=True)
    return out


def test_tagged_names() -> None:
    assert depth_key("BTCUSDT", True) == "depth:{BTCUSDT}:bids"
    assert [tagged_name(k) for k in ("depth:BTCUSDT:asks", "depth:BTCUSDT:id", "bbo:BTCUSDT", "ticker:BTCUSDT",
                                     "candles:BTCUSDT:1m")] == [
        "depth:{BTCUSDT}:asks", "depth:{BTCUSDT}:id", "bbo:{BTCUSDT}", "ticker:{BTCUSDT}", "candles:{BTCUSDT}:1m"]
    for other in ("depth:{BTCUSDT}:bids", "depth:BTCUSDT", "depth:BTCUSDT:x", "bbo:BTCUSDT:1", "candles:BTCUSDT",
                  "order:BTCUSDT:1", "balances:7"):
        assert tagged_name(other) is None, other


@pytest.mark.parametrize("when", ["before start", "after start"])
async def test_old_key_names_are_moved_and_the_read_models_stay_complete(redis_flush: str, when: str) -> None:
    markets: dict[str, Market] = sample_markets()
    commands = flow(markets, 1200, seed=5)
    transport = RedisTransport(redis_flush)
    client = aioredis.Redis.from_url(redis_flush)
    try:
        first = await run_pipeline(transport, markets, commands[:800])
        await first.app.stop()
        keys = [key for symbol in markets for key in market_keys(symbol)]
        written = await dump(client, keys)
        assert any(k.startswith("candles:") and len(v) > 1 for k, v in written.items())  # there is history
        for key in written:  # the layout an older version left
            await client.rename(key, old_name(key))
        assert sorted(await old_keys(client)) == sorted(old_name(k) for k in written)

        if when == "before start":
            report = await upgrade_keys(client)
            assert (report.copied, report.merged, report.kept_new) == (len(written), 0, 0)
            assert await dump(client, keys) == written
        second = await run_pipeline(transport, markets, [])
        try:
            if when == "after start":  # publish rewrote depth, book tickers, tickers and current candles
                for symbol in markets:
                    for key in (depth_key(symbol, True), depth_key(symbol, False), depth_id_key(symbol),
                                ticker_key(symbol)):
                        assert await dump(client, [key]) == {k: v for k, v in written.items() if k == key}, key
                    old_bbo, bbo = written.get(bbo_key(symbol), {}), await client.hgetall(bbo_key(symbol))
                    assert {k: v for k, v in bbo.items() if k != b"update_id"} == {
                        k: v for k, v in old_bbo.items() if k not in (b"ts", b"update_id")}
                    for interval in ("1m", "1d"):
                        history = written.get(candles_key(symbol, interval), [])
                        assert await client.zrange(candles_key(symbol, interval), 0, -1, withscores=True) == \
                            history[-1:]
                report = await upgrade_keys(client)
                candle_keys = [k for k in written if k.startswith("candles:")]
                assert (report.copied, report.merged) == (0, len(candle_keys))
                assert report.kept_new == len(written) - len(candle_keys)
                assert report.windows_added == sum(len(written[k]) - 1 for k in candle_keys)
                assert {k: v for k, v in (await dump(client, keys)).items() if k.startswith("candles:")} == {
                    k: v for k, v in written.items() if k.startswith("candles:")}
            assert await old_keys(client) == []
            assert await upgrade_keys(client) == type(report)()  # nothing left to move
            for command in range(800, len(commands), 500):
                await second.orders_in.send_many((getattr(c, "account_id", None), c)
                                                 for c in commands[command:command + 500])
            await second.app.wait_caught_up(timeout=120)
            await check_depth(second, transport)
            await check_market_data(second, transport)
        finally:
            await second.app.stop()
    finally:
        await client.aclose()
        await transport.close()
