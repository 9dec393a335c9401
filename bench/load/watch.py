"""Observers of the output side: trades as published (`market.trades` in Redis) and as a
WebSocket client receives them (`<symbol>@trade` on a combined stream)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from bench.load.recorder import Recorder
from pipeline.agents.publish.messages import Trade
from pipeline.exchange import Exchange


class TradeWatcher:
    """Reads the published trade streams from their current end; hands every trade to the recorder."""

    def __init__(self, exchange: Exchange, redis_url: str, recorder: Recorder) -> None:
        self.topic = exchange.published.trades
        self.client = aioredis.Redis.from_url(redis_url)
        self.recorder = recorder
        self.positions: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.seen = 0

    async def start(self) -> None:
        for stream in self.topic.streams:
            last: Any = await self.client.xrevrange(stream, count=1)
            self.positions[stream] = last[0][0].decode() if last else "0-0"
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        decoder = self.topic.batch_decoder
        while not self._stopping:
            reply: Any = await self.client.xread(self.positions, count=1000, block=100)  # type: ignore[arg-type]
            now = time.perf_counter_ns()
            for stream, entries in reply or ():
                name = stream.decode() if isinstance(stream, bytes) else stream
                for entry_id, fields in entries:
                    self.positions[name] = entry_id.decode()
                    for trade in decoder.decode(fields[b"d"]):
                        if isinstance(trade, Trade):
                            self.seen += 1
                            taker = trade.seller_order_id if trade.buyer_is_maker else trade.buyer_order_id
                            self.recorder.trade_published(trade.symbol, taker, trade.trade_id, now)

    async def close(self) -> None:
        # stop between reads: cancelling redis-py inside a blocking XREAD can hang the task
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            except TimeoutError:
                self._task.cancel()
        await self.client.aclose()


class WsTradeWatcher:
    """One WebSocket client subscribed to the trade streams of the markets under load."""

    def __init__(self, ws_url: str, symbols: list[str], recorder: Recorder) -> None:
        names = "/".join(f"{s.lower()}@trade" for s in symbols)
        self.url = f"{ws_url.rstrip('/')}/stream?streams={names}"
        self.recorder = recorder
        self._conn: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self.seen = 0
        self.closed: str = ""

    async def start(self) -> None:
        self._conn = await connect(self.url, max_size=2**24, ping_interval=None, max_queue=None)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._conn is not None
        try:
            async for raw in self._conn:
                now = time.perf_counter_ns()
                data = msgspec.json.decode(raw).get("data", {})
                if data.get("e") == "trade":
                    self.seen += 1
                    self.recorder.ws_trade(data["s"], int(data["t"]), now)
        except Exception as exc:  # the server dropped us (e.g. slow consumer): reported, not hidden
            self.closed = f"{type(exc).__name__}: {exc}"
        else:
            self.closed = f"closed by server: {self._conn.close_code} {self._conn.close_reason}"

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()
