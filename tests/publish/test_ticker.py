"""The rolling 24h ticker over minute buckets."""

from __future__ import annotations

from pipeline.agents.publish.candles import DAY, MINUTE, fold
from pipeline.agents.publish.ticker import RollingTicker

T0 = 1_700_000_040 * 1_000_000_000


def minute(at: int, *trades: tuple[int, int]) -> list:  # type: ignore[type-arg]
    """1m buckets of (price, qty) trades at minute `at`."""
    return fold(None, "X", "1m", [(T0 + at * MINUTE + i, p, q, p * q, at * 100 + i) for i, (p, q) in enumerate(trades)])


def test_statistics_over_the_window() -> None:
    ticker = RollingTicker("X")
    for bucket in minute(0, (100, 1), (110, 2)) + minute(5, (90, 3)) + minute(9, (95, 1)):
        ticker.update(bucket)
    stats = ticker.ticker()
    assert stats is not None
    assert (stats.open_ticks, stats.high_ticks, stats.low_ticks, stats.last_ticks) == (100, 110, 90, 95)
    assert (stats.volume_lots, stats.trades, stats.first_trade_id, stats.last_trade_id) == (7, 4, 0, 900)
    assert stats.close_ts - stats.open_ts == DAY


def test_a_growing_bucket_replaces_itself() -> None:
    ticker = RollingTicker("X")
    ticker.update(minute(0, (100, 1))[0])
    ticker.update(minute(0, (100, 1), (120, 4))[0])
    stats = ticker.ticker()
    assert stats is not None and (stats.volume_lots, stats.trades, stats.high_ticks) == (5, 2, 120)


def test_old_buckets_leave_the_window_and_high_low_follow() -> None:
    ticker = RollingTicker("X")
    for bucket in minute(0, (200, 1)) + minute(10, (100, 1)) + minute(20, (150, 2)):
        ticker.update(bucket)
    # 24h after minute 0 (and a bit): the first bucket, holding the high, leaves
    assert ticker.evict(T0 + DAY + 5) == [T0]
    stats = ticker.ticker()
    assert stats is not None
    assert (stats.open_ticks, stats.high_ticks, stats.low_ticks) == (100, 150, 100)
    assert (stats.volume_lots, stats.trades) == (3, 2)
    assert ticker.evict(T0 + DAY + 30 * MINUTE) == [T0 + 10 * MINUTE, T0 + 20 * MINUTE]
    assert ticker.ticker() is None


def test_rebuilt_from_buckets_equals_built_incrementally() -> None:
    buckets = minute(0, (100, 1)) + minute(3, (90, 2)) + minute(4, (130, 1))
    incremental = RollingTicker("X", last_lots=1)
    for bucket in buckets:
        incremental.update(bucket)
    assert RollingTicker("X", reversed(buckets), last_lots=1).ticker() == incremental.ticker()
