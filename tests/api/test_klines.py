"""Klines as Binance serves them (api.klines): every Binance interval, `timeZone`, the `limit` cap."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from api.errors import ApiError
from api.klines import HOUR_NS, base_interval, build, time_zone_offset_ns, window_start
from pipeline.agents.publish.messages import Candle
from pipeline.agents.publish.readmodel import candles_key
from tests.api.conftest import Api, error

MONDAY = int(dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp()) * 1000  # 2026-01-05 00:00 UTC, a Monday
MS = 1_000_000
NEW_YEAR = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()) * 1000


def candle(interval: str, open_ms: int, length_ms: int, n: int) -> Candle:
    """The n-th test candle: opens at 100 + n, closes at 101 + n, one lot, one trade."""
    return Candle(open_ms * MS, "BTCUSDT", interval, open_ms * MS, (open_ms + length_ms) * MS - 1, 100 + n, 102 + n,
                  99 + n, 101 + n, 1, 100 + n, 1, n + 1, n + 1, True)


def test_time_zone_and_base_interval() -> None:
    assert [time_zone_offset_ns(v) // HOUR_NS for v in (None, "0", "8", "+8", "-1:00", "14")] == [0, 0, 8, 8, -1, 14]
    assert time_zone_offset_ns("05:45") == (5 * 60 + 45) * 60 * 10**9
    for bad in ("15", "-12:30", "abc", "5:60", "8.5", "+"):
        with pytest.raises(ApiError) as refused:
            time_zone_offset_ns(bad)
        assert refused.value.code == -1100
    assert base_interval("1m", 0) == "1m" and base_interval("3m", 0) == "1m" and base_interval("30m", 0) == "15m"
    assert base_interval("1d", 0) == "1d" and base_interval("1d", 8 * HOUR_NS) == "4h"
    assert base_interval("1d", time_zone_offset_ns("5:30")) == "15m" and base_interval("1M", 0) == "1d"
    with pytest.raises(ApiError) as invalid:
        base_interval("2m", 0)
    assert invalid.value.code == -1120
    assert window_start("1w", 0)(MONDAY * MS + 3 * 86_400_000 * MS) == MONDAY * MS
    assert window_start("1M", 0)(MONDAY * MS) == NEW_YEAR * MS


def test_build_drops_a_window_the_read_cut_short() -> None:
    hours = [candle("1h", MONDAY + 3_600_000 * i, 3_600_000, i) for i in range(1, 6)]  # 01:00 .. 05:59
    two = build(hours, "2h", 0, None)
    assert [(c.open_ts // MS - MONDAY) // 3_600_000 for c in two] == [0, 2, 4]
    assert [c.volume_lots for c in two] == [1, 2, 2]
    trusted = build(hours, "2h", 0, (MONDAY + 2 * 3_600_000) * MS)
    assert [c.volume_lots for c in trusted] == [2, 2]


async def test_klines_of_every_interval_and_time_zone(api: Api) -> None:
    hour, day = 3_600_000, 86_400_000
    rows: dict[str, list[Candle]] = {
        "1h": [candle("1h", MONDAY + hour * i, hour, i) for i in range(48)],
        "4h": [candle("4h", MONDAY + 4 * hour * i, 4 * hour, i) for i in range(12)],
        "1d": [candle("1d", MONDAY + day * i, day, i) for i in range(2)],
    }
    for interval, candles in rows.items():
        await api.redis.zadd(candles_key("BTCUSDT", interval),
                             {msgspec.json.encode(c): c.open_ts // MS for c in candles})

    async def klines(**params: object) -> list[list[object]]:
        r = await api.get("/api/v3/klines", symbol="BTCUSDT", **params)
        assert r.status_code == 200, r.text
        rows: list[list[object]] = r.json()
        return rows

    two = await klines(interval="2h", startTime=MONDAY)
    assert len(two) == 24 and two[0][0] == MONDAY and two[0][6] == MONDAY + 2 * hour - 1
    assert (two[0][1], two[0][2], two[0][3], two[0][4], two[0][8]) == (
        "1.00000000", "1.03000000", "0.99000000", "1.02000000", 2)  # ticks of 0.01: 1st open, 2nd close
    six = await klines(interval="6h", limit=3)  # the newest three
    assert [k[0] for k in six] == [MONDAY + 6 * hour * i for i in (5, 6, 7)]
    shanghai = await klines(interval="1d", timeZone="8", startTime=MONDAY)
    assert [k[0] for k in shanghai] == [MONDAY - 8 * hour, MONDAY + 16 * hour, MONDAY + 40 * hour]
    assert [k[8] for k in shanghai] == [4, 6, 2]  # windows of 4h candles: 16 h, 24 h, then 8 h of data
    utc = await klines(interval="1d", startTime=MONDAY)
    assert [k[0] for k in utc] == [MONDAY, MONDAY + day]
    week = await klines(interval="1w")
    assert [(k[0], k[6], k[8]) for k in week] == [(MONDAY, MONDAY + 7 * day - 1, 2)]
    month = await klines(interval="1M")
    assert [(k[0], k[6]) for k in month] == [(NEW_YEAR, NEW_YEAR + 31 * day - 1)]
    assert len(await klines(interval="1h", limit=5000)) == 48  # over 1000 reads as 1000, as on Binance
    assert len(await klines(interval="1h", limit=1000)) == 48
    assert len(await klines(interval="2h", startTime=MONDAY, endTime=MONDAY + 3 * hour)) == 2
    for params, code in (({"interval": "2m"}, -1120), ({"interval": "1h", "timeZone": "15"}, -1100),
                         ({"interval": "1h", "limit": "0"}, -1100), ({"interval": "1h", "limit": "x"}, -1100),
                         ({"interval": "1h", "startTime": MONDAY + 1, "endTime": MONDAY}, -1102),
                         ({"interval": "1h", "symbol": "NOPE"}, -1121), ({}, -1102)):
        r = await api.get("/api/v3/klines", **{"symbol": "BTCUSDT", **params})
        assert error(r) == (400, code), params
