"""Run the exchange in the foreground: agents as asyncio tasks, the API on uvicorn, one event loop.

Stops cleanly on SIGINT/SIGTERM: the API stops accepting, each agent finishes and
commits the batch in hand, leases are released.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, Protocol, TypeVar

import uvicorn

from api.app import create_app
from pipeline.exchange import Exchange
from pipeline.layout import check_layout

log = logging.getLogger(__name__)

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop to run on: uvloop's with ``EXCHANGE_UVLOOP=1`` (if installed), else asyncio's (None).

    Off by default: in the pipeline benchmark (docs/bench-pipeline.md) uvloop did not lower
    the workers' CPU per order (redis-py's own Python per command dominates, not the loop).
    """
    if os.environ.get("EXCHANGE_UVLOOP", "").strip() != "1":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("EXCHANGE_UVLOOP=1 but uvloop is not installed; using asyncio's loop")
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on the event loop `loop_factory` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


class BackgroundService(Protocol):
    """A task that runs beside the agents (e.g. the persister): started after them, stopped before."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ApiClientService(Protocol):
    """A client of the API run beside it (e.g. the market maker): started with the API's address once
    it answers, stopped before the API stops (so it can still cancel its orders)."""

    async def start(self, address: str) -> None: ...

    async def stop(self) -> None: ...


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling (the runner owns the signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


GC_THRESHOLDS = (1_000, 50, 1_000)
"""Young collections every 1k net allocations: a young collection scans what survived since the
last one, so a 1k threshold keeps each under ~1 ms where 5k gave 6-14 ms worst cases in the
worker (docs/bench-core.md, round 4)."""


def tune_gc(*, collect: bool = True) -> None:
    """Short, predictable collections: freeze start-up objects, keep young collections small.

    Measured on the matching core (docs/bench-core.md): a young collection costs about
    0.4 us per tracked object it scans, while full collections over all live objects paused
    for hundreds of ms. `freeze_periodically` keeps the old generations small by moving
    survivors out of the collector's reach. `collect=False` freezes without a full collection
    first (a live process must not pause for one: the start-up garbage is small).
    """
    if collect:
        gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def freeze_periodically(seconds: float = 10.0) -> None:
    """Every `seconds`, move every object that survived so far out of the collected generations."""
    while True:
        await asyncio.sleep(seconds)
        gc.freeze()


async def run_exchange(
    exchange: Exchange,
    *,
    agents: Iterable[str] | None = None,
    host: str | None = None,
    port: int | None = None,
    on_ready: Callable[[str | None], None] = lambda address: None,
    services: Iterable[BackgroundService] = (),
    clients: Iterable[ApiClientService] = (),
    standby: bool = False,
    database_url: str | None = None,
) -> None:
    """Run the agents (all, or those named), `services` and, if `port` is given, the API, until a stop signal.

    `database_url`: the archive the API's `/metrics` and `/healthz` report on (`create_app`).

    With `standby`, start-up does not wait for partitions another live worker holds: they
    stay on standby and are taken over when that worker's lease expires (`exchange worker`).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = exchange.app
    await check_layout(exchange)  # refuses to start on data partitioned otherwise (LayoutMismatchError)
    gc.set_threshold(*GC_THRESHOLDS)  # restoring state allocates a lot: no full collections meanwhile
    await app.start(agents)
    server: _Server | None = None
    serving: asyncio.Task[None] | None = None
    started: list[BackgroundService] = []
    started_clients: list[ApiClientService] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
        if standby:
            await app.wait_claimed(timeout=60 + app.lease_ttl_ms / 1000)
        else:
            await app.wait_running(timeout=60 + app.lease_ttl_ms / 1000)
        address = None
        if port is not None:
            api = create_app(exchange, database_url=database_url)
            config = uvicorn.Config(api, host=host or "127.0.0.1", port=port, log_level="warning", lifespan="on")
            server = _Server(config)
            serving = asyncio.create_task(server.serve())
            while not server.started:
                if serving.done():
                    serving.result()  # raises why it could not start (e.g. port in use)
                    raise RuntimeError("the API server stopped during start-up")
                await asyncio.sleep(0.02)
            address = f"http://{host or '127.0.0.1'}:{port}"
        tune_gc(collect=False)  # agents are live: freeze what restoring built, without a full collection
        freezer = asyncio.create_task(freeze_periodically())
        on_ready(address)
        if address is not None:
            for client in clients:
                await client.start(address)
                started_clients.append(client)
        stop_wait = asyncio.create_task(stop.wait())
        watch = [stop_wait] + ([serving] if serving else [])
        await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        freezer.cancel()
    finally:
        for client in reversed(started_clients):
            try:
                await client.stop()
            except Exception:
                log.exception("stopping %r failed", client)
        if server is not None and serving is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await serving
        for service in reversed(started):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %r failed", service)
        await app.stop()
        await app.transport.close()
