"""Group commit at the HTTP edge: one task writes the commands of concurrent requests together.

Each request hands its command to `CommandWriter.write` (or, for a new order, a
function of the order id to `write_new`) and awaits it; a single writer task takes
everything pending (up to `max_batch`), assigns new order ids for the whole batch
with one INCRBY per market (``orderid:{SYMBOL}``, one pipelined round trip), appends
the commands to `orders.in` with one `send_many`, then releases every waiting
request with its entry id, or with the error (for example `BackpressureError`) the
write raised. A request is acknowledged only after its command's write returned,
so durable-before-ack holds. Ids taken by a batch whose write failed are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.topics import Topic


def order_id_key(symbol: str) -> str:
    """The Redis counter of a market's order ids."""
    return f"orderid:{symbol}"


@dataclass
class _Pending:
    key: Any
    command: Any
    future: asyncio.Future[tuple[str, Any]]
    id_symbol: str | None = None
    make: Callable[[int], Any] | None = field(default=None)


class CommandWriter:
    """Batches concurrent writes to one topic; starts lazily, `close()` stops it."""

    def __init__(self, topic: Topic[Any], client: Any = None, *, max_batch: int = 500) -> None:
        self.topic = topic
        self.client = client
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.written = 0

    async def write(self, key: Any, command: Any) -> str:
        """Append `command` (partition key `key`); the entry id once it is written."""
        entry_id, _ = await self._submit(_Pending(key, command, self._future()))
        return entry_id

    async def write_new(self, key: Any, symbol: str, make: Callable[[int], Any]) -> tuple[str, Any]:
        """Append `make(order_id)` with a new order id of `symbol`; (entry id, the command written)."""
        return await self._submit(_Pending(key, None, self._future(), symbol, make))

    @staticmethod
    def _future() -> asyncio.Future[tuple[str, Any]]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, pending: _Pending) -> tuple[str, Any]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="api-command-writer")
        self._queue.put_nowait(pending)
        return await pending.future

    async def _assign_ids(self, batch: list[_Pending]) -> None:
        counts: dict[str, int] = {}
        for item in batch:
            if item.id_symbol is not None:
                counts[item.id_symbol] = counts.get(item.id_symbol, 0) + 1
        if not counts:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for symbol, n in counts.items():
                pipe.incrby(order_id_key(symbol), n)
            lasts = await pipe.execute()
        next_id = {symbol: int(last) - counts[symbol] + 1 for symbol, last in zip(counts, lasts, strict=True)}
        for item in batch:
            if item.id_symbol is not None and item.make is not None:
                item.command = item.make(next_id[item.id_symbol])
                next_id[item.id_symbol] += 1

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [item for item in batch if not item.future.done()]  # requests that gave up
            if not batch:
                continue
            try:
                await self._assign_ids(batch)
                ids = await self.topic.send_many((item.key, item.command) for item in batch)
            except Exception as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.batches += 1
            self.written += len(batch)
            for item, entry_id in zip(batch, ids, strict=True):
                if not item.future.done():
                    item.future.set_result((entry_id, item.command))

    async def close(self) -> None:
        """Stop the writer task (pending requests get CancelledError)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.cancel()
