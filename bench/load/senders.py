"""The three ways in: signed HTTP (aiohttp), the WebSocket API (/ws-api/v3), straight into `orders.in`.

A sender gets each scheduler tick's due requests as ``[(scheduled ns, Intent)]`` and never
blocks the scheduler: HTTP and WebSocket requests each run as their own task; the stream
sender writes a tick's batch with one round trip (like the API's group commit). Every
outcome goes to the `Recorder`, measured from the scheduled time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.accounts import NewKey
from api.auth import sign
from api.context import price_str, qty_str, quote_str
from bench.load.mix import Intent, OrderMix
from bench.load.recorder import Recorder
from pipeline.core.markets import Market
from pipeline.core.messages import CancelOrder, PlaceOrder
from pipeline.exchange import Exchange

Due = Sequence[tuple[int, Intent]]
REQUEST_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
WS_API_IN_FLIGHT = 900
"""Requests in flight per WebSocket API connection: below the server's cap (its send queue, 1000 by
default), beyond which it closes the connection (1008); more wait in the generator, and that wait
counts in their latency (open loop)."""


class Sender(Protocol):
    in_flight: int

    async def start(self) -> None: ...

    def submit(self, due: Due) -> None: ...

    async def close(self) -> None: ...


def order_params(market: Market, intent: Intent, client_id: str) -> dict[str, str]:
    """Binance parameters of an intent (without timestamp and signature)."""
    if intent.kind == "cancel":
        return {"symbol": intent.symbol, "orderId": str(intent.cancel_order_id)}
    params = {"symbol": intent.symbol, "side": intent.side, "newClientOrderId": client_id,
              "newOrderRespType": "ACK"}
    if intent.kind == "market":
        params["type"] = "MARKET"
        if intent.quote_qty:
            params["quoteOrderQty"] = quote_str(market, intent.quote_qty)
        else:
            params["quantity"] = qty_str(market, intent.qty_lots)
    else:
        params.update(type="LIMIT", timeInForce="IOC" if intent.kind == "ioc" else "GTC",
                      price=price_str(market, intent.price_ticks), quantity=qty_str(market, intent.qty_lots))
    return params


class _Base:
    def __init__(self, markets: dict[str, Market], keys: dict[int, NewKey], mix: OrderMix, recorder: Recorder,
                 max_in_flight: int) -> None:
        self.markets = markets
        self.keys = keys
        self.mix = mix
        self.recorder = recorder
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, due: Due) -> None:
        for sched, intent in due:
            if self.in_flight >= self.max_in_flight:
                self.recorder.counts.not_sent += 1
                continue
            self.in_flight += 1
            self.recorder.counts.sent += 1
            task = asyncio.create_task(self._one(sched, intent))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _one(self, sched: int, intent: Intent) -> None:
        try:
            await asyncio.wait_for(self._request(sched, intent), REQUEST_TIMEOUT_S)
        except TimeoutError:
            self.recorder.failed("timeout")
        except (aiohttp.ClientError, OSError, ConnectionError, ConnectionClosed) as exc:
            self.recorder.failed(type(exc).__name__)
        finally:
            self.in_flight -= 1

    async def _request(self, sched: int, intent: Intent) -> None:
        raise NotImplementedError

    def _answered(self, sched: int, intent: Intent, status: int, body: Any) -> None:
        done = time.perf_counter_ns()
        if status == 200 and isinstance(body, dict) and "code" not in body:
            order_id = body.get("orderId") if intent.kind != "cancel" else None
            self.recorder.acked(sched, done, intent.symbol, int(order_id) if order_id is not None else None)
            if intent.kind == "limit" and order_id is not None:
                self.mix.rested(intent.symbol, int(order_id), intent.account)
            return
        code = body.get("code") if isinstance(body, dict) else None
        self.recorder.rejected(sched, done, f"{intent.kind}: HTTP {status} code {code}")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class HttpSender(_Base):
    """POST /api/v3/order (ACK) and DELETE /api/v3/order, HMAC-signed, over `connections` keep-alive
    connections: one worker per connection takes the next due request from a queue. The queue is the
    open loop: a request waits there when every connection is busy, and that wait is in its latency."""

    def __init__(self, base_url: str, connections: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.base_url = base_url
        self.connections = max(1, connections)
        self._session: aiohttp.ClientSession | None = None
        self._queue: asyncio.Queue[tuple[int, Intent]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.connections, force_close=False)
        self._session = aiohttp.ClientSession(self.base_url, connector=connector)
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.connections)]

    def submit(self, due: Due) -> None:
        for item in due:
            if self.in_flight >= self.max_in_flight:
                self.recorder.counts.not_sent += 1
                continue
            self.in_flight += 1
            self.recorder.counts.sent += 1
            self._queue.put_nowait(item)

    async def _work(self) -> None:
        while True:
            sched, intent = await self._queue.get()
            await self._one(sched, intent)

    async def _request(self, sched: int, intent: Intent) -> None:
        assert self._session is not None
        key = self.keys[intent.account]
        params = order_params(self.markets[intent.symbol], intent, f"b{next(self._ids)}")
        params["timestamp"] = str(time.time_ns() // 1_000_000)
        payload = urlencode(params)
        signed = f"{payload}&signature={sign(key.secret, payload)}"
        headers = {"X-MBX-APIKEY": key.api_key}
        if intent.kind == "cancel":
            request = self._session.delete(f"/api/v3/order?{signed}", headers=headers)
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            request = self._session.post("/api/v3/order", data=signed, headers=headers)
        async with request as response:
            raw = await response.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self._answered(sched, intent, response.status, body)

    async def close(self) -> None:
        # bounded: one overloaded 250-connection run hung after its drain, one connection still holding
        # an unsent request (where exactly it waited was not pinned down); a close must not hang the run
        for worker in self._workers:
            worker.cancel()
        if self._workers:
            await asyncio.wait(self._workers, timeout=CLOSE_TIMEOUT_S)
        await super().close()
        if self._session is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._session.close(), CLOSE_TIMEOUT_S)


class WsApiSender(_Base):
    """`order.place` / `order.cancel` on a few /ws-api/v3 connections, requests pipelined, answers by id."""

    def __init__(self, ws_url: str, connections: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ws_url = ws_url.rstrip("/") + "/ws-api/v3"
        self.count = connections
        self._conns: list[ClientConnection] = []
        self._readers: list[asyncio.Task[None]] = []
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._rr = itertools.cycle(range(max(1, connections)))
        self._slots: list[asyncio.Semaphore] = []

    async def start(self) -> None:
        for _ in range(max(1, self.count)):
            conn = await connect(self.ws_url, max_size=2**22, ping_interval=None)
            self._conns.append(conn)
            self._slots.append(asyncio.Semaphore(WS_API_IN_FLIGHT))
            self._readers.append(asyncio.create_task(self._read(conn)))

    async def _read(self, conn: ClientConnection) -> None:
        async for raw in conn:
            message = msgspec.json.decode(raw)
            future = self._waiting.pop(message.get("id"), None)
            if future is not None and not future.done():
                future.set_result(message)

    async def _request(self, sched: int, intent: Intent) -> None:
        key = self.keys[intent.account]
        request_id = next(self._ids)
        method = "order.cancel" if intent.kind == "cancel" else "order.place"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        index = next(self._rr)
        conn = self._conns[index]
        async with self._slots[index]:  # signed once it may go: a wait here must not age its timestamp
            params: dict[str, str] = order_params(self.markets[intent.symbol], intent, f"w{request_id}")
            params["apiKey"] = key.api_key
            params["timestamp"] = str(time.time_ns() // 1_000_000)
            params["signature"] = sign(key.secret, "&".join(f"{k}={params[k]}" for k in sorted(params)))
            self._waiting[request_id] = future
            try:
                await conn.send(json.dumps({"id": request_id, "method": method, "params": params}))
                answer = await future
            finally:
                self._waiting.pop(request_id, None)
        status = int(answer.get("status", 0))
        body = answer.get("result") if status == 200 else answer.get("error")
        self._answered(sched, intent, status, body)

    async def close(self) -> None:
        await super().close()
        for reader in self._readers:
            reader.cancel()
        for conn in self._conns:
            await conn.close()


class StreamSender(_Base):
    """Commands straight into `orders.in`, group-committed like the API's writer: one task writes
    everything due since its last write (ids with one INCRBY per market, then one entry), so a
    slow write makes the next batch bigger instead of piling up concurrent writes."""

    def __init__(self, exchange: Exchange, client: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exchange = exchange
        self.client = client
        self._pending: list[tuple[int, Intent]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.max_batch = 2000

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._run())

    def submit(self, due: Due) -> None:
        room = self.max_in_flight - self.in_flight
        if room < len(due):
            self.recorder.counts.not_sent += len(due) - max(0, room)
            due = due[: max(0, room)]
        if not due:
            return
        self.in_flight += len(due)
        self.recorder.counts.sent += len(due)
        self._pending.extend(due)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                try:
                    await self._write(batch)
                except Exception as exc:
                    for _ in batch:
                        self.recorder.failed(type(exc).__name__)
                finally:
                    self.in_flight -= len(batch)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await super().close()

    async def _write(self, due: list[tuple[int, Intent]]) -> None:
        counts: dict[str, int] = {}
        for _, intent in due:
            if intent.kind != "cancel":
                counts[intent.symbol] = counts.get(intent.symbol, 0) + 1
        next_id: dict[str, int] = {}
        if counts:
            async with self.client.pipeline(transaction=False) as pipe:
                for symbol, n in counts.items():
                    pipe.incrby(f"orderid:{symbol}", n)
                lasts = await pipe.execute()
            next_id = {s: int(last) - counts[s] + 1 for s, last in zip(counts, lasts, strict=True)}
        ts = time.time_ns()
        commands: list[tuple[int, Any]] = []
        ids: list[int | None] = []
        for _, intent in due:
            if intent.kind == "cancel":
                commands.append((intent.account, CancelOrder(ts, intent.account, intent.symbol,
                                                             intent.cancel_order_id)))
                ids.append(None)
                continue
            order_id = next_id[intent.symbol]
            next_id[intent.symbol] += 1
            ids.append(order_id)
            commands.append((intent.account, _place(intent, order_id, ts)))
        await self.exchange.orders_in.send_many(commands)
        done = time.perf_counter_ns()
        for (sched, intent), new_id in zip(due, ids, strict=True):
            self.recorder.acked(sched, done, intent.symbol, new_id)
            if intent.kind == "limit" and new_id is not None:
                self.mix.rested(intent.symbol, new_id, intent.account)


def _place(intent: Intent, order_id: int, ts: int) -> PlaceOrder:
    if intent.kind == "market":
        return PlaceOrder(ts, intent.account, intent.symbol, order_id, f"s{order_id}", intent.side, "MARKET",
                          "GTC", qty_lots=intent.qty_lots, quote_qty=intent.quote_qty)
    return PlaceOrder(ts, intent.account, intent.symbol, order_id, f"s{order_id}", intent.side, "LIMIT",
                      "IOC" if intent.kind == "ioc" else "GTC", intent.price_ticks, intent.qty_lots)
