"""The API and its pipeline served by uvicorn in a background thread with its own event loop,
for synchronous clients (schemathesis, ccxt) that block the test's thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn

from api.context import ApiConfig
from tests.api.conftest import Api, start_api
from tests.serving import free_port

T = TypeVar("T")
START_TIMEOUT = 30.0


@dataclass
class ThreadServer:
    base_url: str
    api: Api
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coro` in the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextlib.contextmanager
def thread_served(redis_url: str, config: ApiConfig) -> Iterator[ThreadServer]:
    port = free_port()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        exchange, transport, app = await start_api(redis_url, config=config)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="on"))
        box["server"] = server
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started and not serving.done():
                await asyncio.sleep(0.01)
            box["served"] = ThreadServer(f"http://127.0.0.1:{port}", Api(None, exchange, transport.client, app),  # type: ignore[arg-type]
                                         asyncio.get_running_loop())
            ready.set()
            await serving
        finally:
            ready.set()
            await exchange.app.stop()
            await transport.close()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test thread
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="api-server", daemon=True)
    thread.start()
    try:
        assert ready.wait(START_TIMEOUT), "the API server did not start"
        if "served" not in box:
            raise AssertionError(f"the API server failed: {box.get('error')!r}")
        yield box["served"]
    finally:
        if "server" in box:
            box["server"].should_exit = True
        thread.join(START_TIMEOUT)
        assert not thread.is_alive(), "the API server did not stop"
