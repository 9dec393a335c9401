"""Klines as Binance serves them: every Binance interval and `timeZone`, from the candles the publish agent keeps.

The publish agent keeps candles of a few intervals (``pipeline.agents.publish.candles.INTERVALS``:
1s 1m 5m 15m 1h 4h 1d), aligned to UTC. Binance has more (3m, 30m, 2h, 6h, 8h, 12h, 3d,
1w, 1M) and a `timeZone` parameter (``-12:00`` to ``+14:00``; hours, or hours and minutes)
that shifts the windows of the kline intervals. A requested interval that is not kept, or
whose windows the time zone moves, is built here from the longest kept interval that
divides both the interval and the time-zone offset (1M windows are calendar months, 1w
windows start on Monday, as on Binance). At most `MAX_BASE_CANDLES` kept candles are read
for one request; a request that would need more gets fewer rows (a client pages on with
`startTime`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Final

from api.errors import ApiError, illegal
from pipeline.agents.publish.candles import INTERVALS as KEPT
from pipeline.agents.publish.messages import Candle

NS_PER_MS: Final = 1_000_000
MINUTE_NS: Final = 60 * 1_000_000_000
HOUR_NS: Final = 60 * MINUTE_NS
DAY_NS: Final = 24 * HOUR_NS
MONTH: Final = "1M"
BINANCE_INTERVALS: Final[dict[str, int]] = {
    "1s": 1_000_000_000, "1m": MINUTE_NS, "3m": 3 * MINUTE_NS, "5m": 5 * MINUTE_NS, "15m": 15 * MINUTE_NS,
    "30m": 30 * MINUTE_NS, "1h": HOUR_NS, "2h": 2 * HOUR_NS, "4h": 4 * HOUR_NS, "6h": 6 * HOUR_NS,
    "8h": 8 * HOUR_NS, "12h": 12 * HOUR_NS, "1d": DAY_NS, "3d": 3 * DAY_NS, "1w": 7 * DAY_NS, MONTH: 31 * DAY_NS,
}
"""Binance's kline intervals -> length in ns (1M: its longest month, for sizing reads)."""
MAX_BASE_CANDLES: Final = 20_000
MONDAY_NS: Final = 4 * DAY_NS
"""The Unix epoch was a Thursday: Binance's weeks start 4 days after it."""
TIME_ZONE_RE: Final = re.compile(r"^([+-]?)([0-9]{1,2})(?::([0-9]{2}))?$")
TIME_ZONE_LEGAL: Final = "[-12:00 to +14:00]"


def time_zone_offset_ns(raw: str | None) -> int:
    """The offset from UTC of Binance's `timeZone` parameter (``8``, ``-1:00``, ``+05:45``), in ns."""
    if raw is None:
        return 0
    match = TIME_ZONE_RE.match(raw)
    if match is None or (match.group(3) is not None and int(match.group(3)) >= 60):
        raise illegal("timeZone", TIME_ZONE_LEGAL)
    minutes = int(match.group(2)) * 60 + int(match.group(3) or 0)
    minutes = -minutes if match.group(1) == "-" else minutes
    if not -12 * 60 <= minutes <= 14 * 60:
        raise illegal("timeZone", TIME_ZONE_LEGAL)
    return minutes * MINUTE_NS


def base_interval(interval: str, offset_ns: int) -> str:
    """The kept interval the `interval` klines are built from (itself when kept and the offset does not move it)."""
    if interval not in BINANCE_INTERVALS:
        raise ApiError(-1120, "Invalid interval.")
    length = DAY_NS if interval == MONTH else BINANCE_INTERVALS[interval]
    fits = [name for name, kept in KEPT.items() if length % kept == 0 and offset_ns % kept == 0]
    return max(fits, key=lambda name: KEPT[name])  # 1s divides every length and offset


def window_start(interval: str, offset_ns: int) -> Callable[[int], int]:
    """A function from a time (ns, UTC) to the start (ns, UTC) of its `interval` window in the time zone."""
    if interval == MONTH:
        def month(ts: int) -> int:
            local = dt.datetime.fromtimestamp((ts + offset_ns) // 1_000_000_000, dt.UTC)
            first = dt.datetime(local.year, local.month, 1, tzinfo=dt.UTC)
            return int(first.timestamp()) * 1_000_000_000 - offset_ns
        return month
    length = BINANCE_INTERVALS[interval]
    anchor = (MONDAY_NS if interval == "1w" else 0) - offset_ns
    return lambda ts: (ts - anchor) // length * length + anchor


def window_end(interval: str, offset_ns: int, start: int) -> int:
    """The last ns of the window that starts at `start`."""
    if interval != MONTH:
        return start + BINANCE_INTERVALS[interval] - 1
    return window_start(interval, offset_ns)(start + 32 * DAY_NS) - 1


def build(base: list[Candle], interval: str, offset_ns: int, complete_from: int | None) -> list[Candle]:
    """`interval` klines from consecutive `base` candles (gaps already filled), oldest first.

    `complete_from`: the first window that can be trusted whole when the read was cut short
    (earlier windows are dropped); None when nothing older exists.
    """
    start_of = window_start(interval, offset_ns)
    out: list[Candle] = []
    for c in base:
        start = start_of(c.open_ts)
        if complete_from is not None and start < complete_from:
            continue
        if out and out[-1].open_ts == start:
            last = out[-1]
            out[-1] = Candle(c.ts, c.symbol, interval, start, last.close_ts, last.open_ticks,
                             max(last.high_ticks, c.high_ticks), min(last.low_ticks, c.low_ticks), c.close_ticks,
                             last.volume_lots + c.volume_lots, last.quote_volume + c.quote_volume,
                             last.trades + c.trades, last.first_trade_id or c.first_trade_id,
                             c.last_trade_id or last.last_trade_id, c.closed)
        else:
            out.append(Candle(c.ts, c.symbol, interval, start, window_end(interval, offset_ns, start), c.open_ticks,
                              c.high_ticks, c.low_ticks, c.close_ticks, c.volume_lots, c.quote_volume, c.trades,
                              c.first_trade_id, c.last_trade_id, c.closed))
    return out
