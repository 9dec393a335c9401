"""Candles folded from trades, interval by interval."""

from __future__ import annotations

import itertools

from pipeline.agents.publish.candles import INTERVALS, MINUTE, SECOND, fold, window_start
from pipeline.agents.publish.messages import Candle

T0 = 1_700_000_040 * SECOND  # a minute boundary


def ohlcv(c: Candle) -> tuple[int, ...]:
    return (c.open_ticks, c.high_ticks, c.low_ticks, c.close_ticks, c.volume_lots, c.quote_volume, c.trades)


def test_windows_align_to_the_epoch() -> None:
    assert window_start(T0 + 59 * SECOND + 5, MINUTE) == T0
    assert window_start(T0 + 5, INTERVALS["1d"]) % INTERVALS["1d"] == 0


def test_trades_in_one_window_make_one_open_candle() -> None:
    #   time    price  qty
    #   +1s     100    2
    #   +2s     104    1
    #   +3s      98    3
    #   +4s     101    1
    trades = [(T0 + 1 * SECOND, 100, 2, 200, 1), (T0 + 2 * SECOND, 104, 1, 104, 2),
              (T0 + 3 * SECOND, 98, 3, 294, 3), (T0 + 4 * SECOND, 101, 1, 101, 4)]
    (candle,) = fold(None, "X", "1m", trades)
    assert ohlcv(candle) == (100, 104, 98, 101, 7, 699, 4)
    assert (candle.open_ts, candle.close_ts) == (T0, T0 + MINUTE - 1)
    assert (candle.first_trade_id, candle.last_trade_id, candle.closed, candle.ts) == (1, 4, False, T0 + 4 * SECOND)


def test_a_later_trade_closes_the_current_candle_and_opens_the_next() -> None:
    (current,) = fold(None, "X", "1m", [(T0 + SECOND, 100, 2, 200, 1)])
    closed, gap_closed, new = fold(current, "X", "1m", [
        (T0 + 30 * SECOND, 102, 1, 102, 2),        # same minute: extends the current candle
        (T0 + MINUTE + 1, 99, 1, 99, 3),           # next minute
        (T0 + 5 * MINUTE, 97, 4, 388, 4),          # three empty minutes later
    ])
    assert ohlcv(closed) == (100, 102, 100, 102, 3, 302, 2) and closed.closed and closed.open_ts == T0
    assert ohlcv(gap_closed) == (99, 99, 99, 99, 1, 99, 1) and gap_closed.closed
    assert ohlcv(new) == (97, 97, 97, 97, 4, 388, 1) and not new.closed and new.open_ts == T0 + 5 * MINUTE


def test_every_interval_sums_the_same_trades() -> None:
    trades = [(T0 + i * 7 * SECOND, 100 + i % 5, 1 + i % 3, (100 + i % 5) * (1 + i % 3), i + 1) for i in range(600)]
    for interval in INTERVALS:
        candles = fold(None, "X", interval, trades)
        assert sum(c.volume_lots for c in candles) == sum(t[2] for t in trades)
        assert sum(c.trades for c in candles) == 600
        assert [c.closed for c in candles] == [True] * (len(candles) - 1) + [False]
        assert all(b.open_ts >= a.close_ts + 1 for a, b in itertools.pairwise(candles))


def test_no_trades_no_candles() -> None:
    assert fold(None, "X", "1s", []) == []
