"""Latency bookkeeping of a load run: HDR histograms, per-second series, and the joins between
an order's scheduled send time, its acknowledgement, its trades on the published stream and
those trades on a WebSocket.

Every latency is measured from the order's *scheduled* send time (open loop): when the
generator or the system falls behind, the wait counts, so coordinated omission cannot hide it.
All times are `time.perf_counter_ns()` of this process.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Final

from hdrh.histogram import HdrHistogram

MEASURES: Final = ("ack", "trade", "ws")
"""ack: answer received; trade: trade published (market.trades read from Redis); ws: trade on a WebSocket."""
MAX_US: Final = 600_000_000
PERCENTILES: Final = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99_9", 99.9))


@dataclass
class Counts:
    """What happened to the offered requests."""

    offered: int = 0
    sent: int = 0
    not_sent: int = 0
    """Shed by the generator itself (too many requests in flight): counted as dropped."""
    acked: int = 0
    rejected: int = 0
    """Answered with an error (e.g. unknown order for a cancel that lost its race with a fill)."""
    failed: int = 0
    """No answer: transport error or timeout (dropped)."""
    errors: dict[str, int] = field(default_factory=dict)
    trades: int = 0
    """Trades published whose taker was one of our orders."""
    ws_trades: int = 0
    """Of those, delivered on the WebSocket trade stream."""


class Recorder:
    """Collects latencies and joins the three observation points."""

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.hist = {m: HdrHistogram(1, MAX_US, 3) for m in MEASURES}
        self.series: dict[str, dict[int, list[int]]] = {m: defaultdict(list) for m in MEASURES}
        self.offered_per_s: dict[int, int] = defaultdict(int)
        self.counts = Counts()
        self.order_sched: dict[tuple[str, int], int] = {}
        """(symbol, order id) of our orders -> scheduled send time."""
        self._early_trades: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
        """Trades seen before the taker's ack told us its id: (symbol, taker id) -> [(trade id, seen)]."""
        self._trade_sched: dict[tuple[str, int], int] = {}
        """(symbol, trade id) of our takers' trades -> the taker's scheduled send time."""
        self._early_ws: dict[tuple[str, int], int] = {}
        """WebSocket trades seen before the published trade was matched: (symbol, trade id) -> seen."""
        self.first_ack_ns = 0
        self.last_ack_ns = 0

    def record(self, measure: str, sched_ns: int, done_ns: int) -> None:
        us = min(MAX_US, max(1, (done_ns - sched_ns) // 1000))
        self.hist[measure].record_value(us)
        self.series[measure][(sched_ns - self.start_ns) // 1_000_000_000].append(us)

    # -- the generator's side ---------------------------------------------------------

    def offered(self, sched_ns: int) -> None:
        self.counts.offered += 1
        self.offered_per_s[(sched_ns - self.start_ns) // 1_000_000_000] += 1

    def acked(self, sched_ns: int, done_ns: int, symbol: str, order_id: int | None) -> None:
        """An answer without error; `order_id` for a new order (its trades are then ours)."""
        self.counts.acked += 1
        self.record("ack", sched_ns, done_ns)
        self.first_ack_ns = self.first_ack_ns or done_ns
        self.last_ack_ns = max(self.last_ack_ns, done_ns)
        if order_id is not None:
            self.order_sched[(symbol, order_id)] = sched_ns
            for trade_id, seen in self._early_trades.pop((symbol, order_id), ()):
                self._our_trade(symbol, trade_id, sched_ns, seen)

    def rejected(self, sched_ns: int, done_ns: int, code: str) -> None:
        """An error answer: the system answered (its latency counts), but not with success."""
        self.counts.rejected += 1
        self.counts.errors[code] = self.counts.errors.get(code, 0) + 1
        self.record("ack", sched_ns, done_ns)

    def failed(self, reason: str) -> None:
        self.counts.failed += 1
        self.counts.errors[reason] = self.counts.errors.get(reason, 0) + 1

    # -- the watchers' side -----------------------------------------------------------

    def trade_published(self, symbol: str, taker_order_id: int, trade_id: int, seen_ns: int) -> None:
        sched = self.order_sched.get((symbol, taker_order_id))
        if sched is None:
            self._early_trades[(symbol, taker_order_id)].append((trade_id, seen_ns))
            return
        self._our_trade(symbol, trade_id, sched, seen_ns)

    def _our_trade(self, symbol: str, trade_id: int, sched_ns: int, seen_ns: int) -> None:
        self.counts.trades += 1
        self.record("trade", sched_ns, seen_ns)
        ws_seen = self._early_ws.pop((symbol, trade_id), None)
        if ws_seen is not None:
            self._ws(sched_ns, ws_seen)
        else:
            self._trade_sched[(symbol, trade_id)] = sched_ns

    def ws_trade(self, symbol: str, trade_id: int, seen_ns: int) -> None:
        sched = self._trade_sched.pop((symbol, trade_id), None)
        if sched is None:
            self._early_ws[(symbol, trade_id)] = seen_ns
            return
        self._ws(sched, seen_ns)

    def _ws(self, sched_ns: int, seen_ns: int) -> None:
        self.counts.ws_trades += 1
        self.record("ws", sched_ns, seen_ns)

    @property
    def ws_missing(self) -> int:
        """Our trades published but not (yet) seen on the WebSocket."""
        return len(self._trade_sched)

    # -- summaries ----------------------------------------------------------------------

    def summary(self, measure: str) -> dict[str, Any]:
        """count, p50, p95, p99, p99.9, max and mean in milliseconds."""
        hist = self.hist[measure]
        count = hist.get_total_count()
        out: dict[str, Any] = {"count": count}
        for name, q in PERCENTILES:
            out[name] = round(hist.get_value_at_percentile(q) / 1000, 3) if count else None
        out["max"] = round(hist.get_max_value() / 1000, 3) if count else None
        out["mean"] = round(hist.get_mean_value() / 1000, 3) if count else None
        return out

    def per_second(self, measure: str) -> list[dict[str, Any]]:
        """For each second of scheduled time: count, p50, p99 and max (ms)."""
        rows = []
        for second in sorted(self.series[measure]):
            values = sorted(self.series[measure][second])
            n = len(values)
            rows.append({"t": second, "count": n, "p50": values[n // 2] / 1000,
                         "p99": values[min(n - 1, int(n * 0.99))] / 1000, "max": values[-1] / 1000})
        return rows

    def window(self, measure: str, since_s: int) -> dict[str, float]:
        """p99 and count of latencies scheduled in the seconds from `since_s` on (for progress lines)."""
        values = sorted(v for s, vs in self.series[measure].items() if s >= since_s for v in vs)
        if not values:
            return {"count": 0, "p99": 0.0}
        return {"count": len(values), "p99": values[min(len(values) - 1, int(len(values) * 0.99))] / 1000}
