"""The fan-out reader: one per API process, XREADs the published streams and feeds subscribers.

`Hub.start()` (the app's start-up) notes where each `market.*` and `user.events`
stream ends now, then one task reads on from there (XREAD, blocking, no consumer
group: every API process sees everything) and dispatches each read to the
connections subscribed: rendering happens once per stream name, whatever the number
of subscribers, and delivery is `Connection.push` (never an await), so a slow
client cannot hold the reader up.

Timer-driven streams, as Binance times them (a second task ticks every 100 ms):
`<symbol>@depth@100ms` and `@depth` (1000 ms; `@depth@1000ms` is an alias) send the
diffs read since their last tick merged into one (U of the first, u of the last, the
last quantity per level), so `U = previous u + 1` still holds; the partial books
`@depth<N>@100ms` / `@depth<N>` likewise, when the book changed. `@ticker`,
`@miniTicker`, `!ticker@arr` and `!miniTicker@arr` send every 1000 ms the tickers
that changed in that second. Trades, aggTrades, klines, bookTicker and user data
are sent as read. Every second the listenKeys of open user streams are checked: an
expired (or deleted) one gets `listenKeyExpired`, then its connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any, Final

import msgspec

from api.context import ApiContext
from api.public import read_book
from api.store import stream_key
from api.ws.connection import NORMAL_CLOSURE, SLOW_CONSUMER, Connection
from api.ws.names import ALL_MINI_TICKERS, ALL_TICKERS, PARTIAL_LEVELS, stream_name
from api.ws.payloads import (
    agg_trade_events,
    book_ticker_event,
    depth_event,
    kline_event,
    partial_book,
    ticker_event,
    trade_event,
)
from api.ws.userdata import account_position, balance_update, execution_report
from pipeline.agents.publish.messages import (
    AccountUpdate,
    BalanceDelta,
    BookTicker,
    Candle,
    DepthUpdate,
    OrderUpdate,
    Ticker,
    Trade,
)
from pipeline.agents.publish.readmodel import bbo_key

log = logging.getLogger(__name__)
READ_COUNT: Final = 500
BLOCK_MS: Final = 1000
_json = msgspec.json.Encoder()
TICK_S: Final = 0.1
SLOW_EVERY: Final = 10
"""Ticks per 1000 ms period."""
SPEEDS: Final = (100, 1000)
DEPTH_KINDS: Final = {100: ("depth@100ms",), 1000: ("depth", "depth@1000ms")}
PARTIAL_KINDS: Final = {
    100: tuple((n, f"depth{n}@100ms") for n in PARTIAL_LEVELS),
    1000: tuple((n, f"depth{n}{speed}") for n in PARTIAL_LEVELS for speed in ("", "@1000ms")),
}
LISTEN_KEY_EXPIRED: Final = "listenKeyExpired"
STOP_WAIT_S: Final = 5.0
"""How long `Hub.stop` waits for its tasks to end before leaving them behind (it never hangs)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Hub:
    """Subscriptions of this process's connections, and the task that feeds them."""

    def __init__(self, ctx: ApiContext, *, block_ms: int = BLOCK_MS) -> None:
        self.ctx = ctx
        self.block_ms = block_ms
        self.subs: dict[str, set[Connection]] = defaultdict(set)
        self.users: dict[int, dict[Connection, str]] = defaultdict(dict)
        self.bbo: dict[str, BookTicker] = {}
        published = ctx.exchange.published
        self._kinds: dict[str, tuple[str, Any]] = {}
        for kind, topic in (("depth", published.depth), ("bbo", published.bbo), ("trades", published.trades),
                            ("tickers", published.tickers), ("candles", published.candles),
                            ("user", published.user)):
            for stream in topic.streams:
                self._kinds[stream] = (kind, topic)
        self._positions: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self._stopping = False
        self.reads = 0
        self._entry_messages = 1.0  # messages per entry lately read (smoothed): sizes the next read
        self.dropped_slow = 0
        """Connections closed because they fell too far behind (for the metrics)."""
        self.ticks = 0
        self._depth: dict[int, dict[str, list[DepthUpdate]]] = {speed: defaultdict(list) for speed in SPEEDS}
        """Diffs read since the last tick of each speed, per market (only while someone listens)."""
        self._partial: dict[int, set[str]] = {speed: set() for speed in SPEEDS}
        """Markets whose book changed since the last tick of each speed."""
        self._tickers: dict[str, Ticker] = {}
        """The newest ticker of each market that changed since the last 1000 ms tick."""

    # ------------------------------------------------------------ subscriptions

    def subscribe(self, conn: Connection, name: str, account: int | None = None) -> None:
        if account is None:
            conn.streams.add(name)
            self.subs[name].add(conn)
        else:
            conn.listen_keys[name] = account
            self.users[account][conn] = name

    def unsubscribe(self, conn: Connection, name: str) -> None:
        conn.streams.discard(name)
        subscribers = self.subs.get(name)
        if subscribers is not None:
            subscribers.discard(conn)
            if not subscribers:
                del self.subs[name]
        account = conn.listen_keys.pop(name, None)
        if account is not None:
            users = self.users.get(account, {})
            users.pop(conn, None)
            if not users:
                self.users.pop(account, None)

    def remove(self, conn: Connection) -> None:
        if conn.close_reason == SLOW_CONSUMER:
            self.dropped_slow += 1
        for name in [*conn.streams, *conn.listen_keys]:
            self.unsubscribe(conn, name)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Note each stream's current end, then start reading from there."""
        self._stopping = False
        async with self.ctx.client.pipeline(transaction=False) as pipe:
            for stream in self._kinds:
                pipe.xrevrange(stream_key(self.ctx.client, stream), count=1)
            lasts = await pipe.execute()
        self._positions = {stream: _text(last[0][0]) if last else "0-0" for stream, last in zip(self._kinds, lasts,
                                                                                               strict=True)}
        await self._load_bbo()
        self._task = asyncio.create_task(self._run(), name="ws-hub")
        self._timer = asyncio.create_task(self._run_timer(), name="ws-hub-timer")

    async def _load_bbo(self) -> None:
        """The best bid/offer each market has now (tickers carry it; later ones come from `market.bbo`)."""
        symbols = sorted(self.ctx.markets)
        async with self.ctx.client.pipeline(transaction=False) as pipe:
            for symbol in symbols:
                pipe.hgetall(bbo_key(symbol))
            raw = await pipe.execute()
        for symbol, fields in zip(symbols, raw, strict=True):
            if fields:
                values = {_text(k): int(v) for k, v in fields.items()}
                self.bbo.setdefault(symbol, BookTicker(
                    values.get("ts", 0), symbol, values.get("update_id", 0), values.get("bid_price_ticks", 0),
                    values.get("bid_qty_lots", 0), values.get("ask_price_ticks", 0), values.get("ask_qty_lots", 0)))

    async def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Stop reading and ticking; returns within about `wait_s` whatever the reader is stuck in.

        A cancelled XREAD can come back as a connection error instead of a cancellation
        (redis-py turns a cancel during a read or reconnect into one, e.g. when start-up
        failed and the server is unreachable): the reader then checks `_stopping` and ends;
        a task still running after `wait_s` is cancelled again and left behind, logged.
        """
        self._stopping = True
        tasks = [t for t in (self._task, self._timer) if t is not None]
        self._task = self._timer = None
        deadline = time.monotonic() + wait_s
        while tasks:
            for task in tasks:
                task.cancel()
            done, pending = await asyncio.wait(tasks, timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("ws hub: %s ended with %r", task.get_name(), task.exception())
            tasks = list(pending)
            if tasks and time.monotonic() >= deadline:
                log.warning("ws hub: %s did not stop in %.1f s; left behind", ", ".join(t.get_name() for t in tasks),
                            wait_s)
                break

    async def _run(self) -> None:
        while not self._stopping:
            try:
                result = await self.ctx.exchange.app.transport.read(dict(self._positions), self._read_count(),
                                                                    self.block_ms)
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._stopping:
                    return  # a cancel that surfaced as a connection error
                log.exception("ws hub: XREAD failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if not result:
                continue
            try:
                self.dispatch(self._decode(result))
            except Exception:
                log.exception("ws hub: dispatch failed")
            self.reads += 1
            await asyncio.sleep(0)  # let every connection's sender drain what this read queued

    def _read_count(self) -> int:
        """Entries to read per stream: about half a connection's queue of messages in all, so a burst
        (a backlog of big record batches) reaches clients in slices they drain between reads instead
        of overflowing the queue of clients that keep up."""
        budget = max(1, self.ctx.config.ws_queue // 2)
        return max(1, min(READ_COUNT, int(budget / self._entry_messages)))

    async def _run_timer(self) -> None:
        """Tick every 100 ms on a fixed schedule (a late tick does not shift the next ones)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._stopping:
            next_at += TICK_S
            delay = next_at - loop.time()
            if delay < -TICK_S:  # far behind (a long pause): start the schedule again from now
                next_at, delay = loop.time(), 0.0
            await asyncio.sleep(max(0.0, delay))
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ws hub: tick failed")

    async def tick(self) -> None:
        """One 100 ms tick: the 100 ms streams; every tenth, the 1000 ms streams and the listenKey check."""
        self.ticks += 1
        now = time.time_ns() // 1_000_000
        speeds = SPEEDS if self.ticks % SLOW_EVERY == 0 else SPEEDS[:1]
        partial: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for speed in speeds:
            self._flush_depth(speed, now)
            for symbol in self._partial[speed]:
                partial[symbol].extend(PARTIAL_KINDS[speed])
            self._partial[speed] = set()
        if len(speeds) > 1:
            self._flush_tickers(now)
        if partial:
            await self._send_partial_books(partial)
        if len(speeds) > 1 and self.users:
            await self._expire_listen_keys(now)

    def _decode(self, result: list[tuple[str, list[tuple[str, bytes]]]]) -> dict[str, list[Any]]:
        """A read (the transport's (stream, [(entry id, data)])) as messages per kind; moves the positions on."""
        read: dict[str, list[Any]] = defaultdict(list)
        entries_read = 0
        for stream, entries in result:
            entries_read += len(entries)
            kind, topic = self._kinds[stream]
            for entry_id, data in entries:
                self._positions[stream] = entry_id
                try:
                    read[kind].extend(topic.batch_decoder.decode(data))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    log.warning("ws hub: undecodable entry %s in %s", entry_id, stream)
        if entries_read:
            messages = sum(len(values) for values in read.values())
            self._entry_messages = max(1.0, (self._entry_messages + messages / entries_read) / 2)
        return read

    # ------------------------------------------------------------ dispatch

    def _emit(self, name: str, data: Any) -> None:
        subscribers = self.subs.get(name)
        if not subscribers:
            return
        raw = _json.encode(data)
        combined = b'{"stream":"' + name.encode() + b'","data":' + raw + b"}"
        for conn in list(subscribers):
            conn.push(combined if conn.combined else raw)

    def _wanted(self, symbol: str, kinds: tuple[str, ...]) -> list[str]:
        return [name for name in (stream_name(symbol, k) for k in kinds) if name in self.subs]

    def dispatch(self, read: dict[str, list[Any]]) -> None:
        """Send (or, for timed streams, buffer) what one read brought; no awaits."""
        now = time.time_ns() // 1_000_000
        markets = self.ctx.markets
        for b in read.get("bbo", ()):
            if isinstance(b, BookTicker) and b.symbol in markets:
                self.bbo[b.symbol] = b
                for name in self._wanted(b.symbol, ("bookTicker",)):
                    self._emit(name, book_ticker_event(markets[b.symbol], b))
        depth: dict[str, list[DepthUpdate]] = defaultdict(list)
        for d in read.get("depth", ()):
            if isinstance(d, DepthUpdate) and d.symbol in markets:
                depth[d.symbol].append(d)
        for symbol, updates in depth.items():
            for speed in SPEEDS:
                if self._wanted(symbol, DEPTH_KINDS[speed]):
                    self._depth[speed][symbol].extend(updates)
                if self._wanted(symbol, tuple(k for _, k in PARTIAL_KINDS[speed])):
                    self._partial[speed].add(symbol)
        trades: dict[str, list[Trade]] = defaultdict(list)
        for t in read.get("trades", ()):
            if isinstance(t, Trade) and t.symbol in markets:
                trades[t.symbol].append(t)
        for symbol, found in trades.items():
            market = markets[symbol]
            for name in self._wanted(symbol, ("trade",)):
                for t in found:
                    self._emit(name, trade_event(market, t, now))
            for name in self._wanted(symbol, ("aggTrade",)):
                for event in agg_trade_events(market, found, now):
                    self._emit(name, event)
        for t in read.get("tickers", ()):
            if isinstance(t, Ticker) and t.symbol in markets:
                self._tickers[t.symbol] = t
        for c in read.get("candles", ()):
            if isinstance(c, Candle) and c.symbol in markets:
                for name in self._wanted(c.symbol, (f"kline_{c.interval}",)):
                    self._emit(name, kline_event(markets[c.symbol], c, now))
        if self.users:
            self._dispatch_user(read.get("user", ()), now)

    def _flush_depth(self, speed: int, now: int) -> None:
        buffered = self._depth[speed]
        if not buffered:
            return
        self._depth[speed] = defaultdict(list)
        for symbol, updates in buffered.items():
            names = self._wanted(symbol, DEPTH_KINDS[speed])
            if names:
                event = depth_event(self.ctx.markets[symbol], updates, now)
                for name in names:
                    self._emit(name, event)

    def _flush_tickers(self, now: int) -> None:
        if not self._tickers:
            return
        tickers = [self._tickers[s] for s in sorted(self._tickers)]
        self._tickers = {}
        markets = self.ctx.markets
        full = {t.symbol: ticker_event(markets[t.symbol], t, self.bbo.get(t.symbol), now, False) for t in tickers}
        mini = {t.symbol: ticker_event(markets[t.symbol], t, None, now, True) for t in tickers}
        for symbol, event in full.items():
            for name in self._wanted(symbol, ("ticker",)):
                self._emit(name, event)
        for symbol, event in mini.items():
            for name in self._wanted(symbol, ("miniTicker",)):
                self._emit(name, event)
        self._emit(ALL_TICKERS, list(full.values()))
        self._emit(ALL_MINI_TICKERS, list(mini.values()))

    def _dispatch_user(self, events: Any, now: int) -> None:
        markets = self.ctx.markets
        assets = self.ctx.assets()
        for event in events:
            subscribers = self.users.get(getattr(event, "account_id", -1))
            if not subscribers:
                continue
            if isinstance(event, OrderUpdate) and event.symbol in markets:
                data = execution_report(markets[event.symbol], event, assets, now)
            elif isinstance(event, AccountUpdate):
                data = account_position(event, assets, now)
            elif isinstance(event, BalanceDelta) and event.asset in assets:
                data = balance_update(event, assets[event.asset], now)
            else:
                continue  # CancelRejected: Binance's user stream has no event for it
            raw = _json.encode(data)
            for conn, listen_key in list(subscribers.items()):
                conn.push(b'{"stream":"' + listen_key.encode() + b'","data":' + raw + b"}" if conn.combined else raw)

    async def _send_partial_books(self, kinds: dict[str, list[tuple[int, str]]]) -> None:
        for symbol, wanted in kinds.items():
            names = [(n, stream_name(symbol, kind)) for n, kind in wanted]
            if not any(name in self.subs for _, name in names):
                continue
            last_id, bids, asks = await read_book(self.ctx.client, symbol)
            for n, name in names:
                if name in self.subs:
                    self._emit(name, partial_book(self.ctx.markets[symbol], last_id, bids, asks, n))

    async def _expire_listen_keys(self, now: int) -> None:
        """Send `listenKeyExpired` to, then close, every connection whose listenKey no longer exists."""
        keys = sorted({key for subscribers in self.users.values() for key in subscribers.values()})
        async with self.ctx.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(f"listenkey:{key}")
            alive = await pipe.execute()
        expired = {key for key, exists in zip(keys, alive, strict=True) if not exists}
        if not expired:
            return
        for subscribers in list(self.users.values()):
            for conn, key in list(subscribers.items()):
                if key not in expired:
                    continue
                raw = _json.encode({"e": LISTEN_KEY_EXPIRED, "E": now, "listenKey": key})
                conn.push(b'{"stream":"' + key.encode() + b'","data":' + raw + b"}" if conn.combined else raw)
                self.unsubscribe(conn, key)
                conn.finish(LISTEN_KEY_EXPIRED, NORMAL_CLOSURE)
