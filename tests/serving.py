"""Serving an ASGI app with uvicorn inside the test's event loop, on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

import uvicorn

from pipeline.app import where_waiting

T = TypeVar("T")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[int]:
    """Serve `app` (lifespan on, as `exchange up` does) until the block ends; yields the port once it listens."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await serving


@contextlib.contextmanager
def api_process(redis_url: str, **env: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """An `exchange api` process (a stateless replica) on a free port until the block ends; yields it
    and its port once it says it is up. Stopped with SIGTERM (killed after 20 s); its pipes closed."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "infra", "api", "--port", str(port)],
                               env={**os.environ, "REDIS_URL": redis_url, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "api is up: ..." or EOF if it died
        assert line.strip() == f"api is up: http://127.0.0.1:{port}", (line, process.stderr and process.stderr.read())
        yield process, port
    finally:
        stop_process(process)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def stop_process(process: subprocess.Popen[Any], timeout: float = 20.0) -> int | None:
    """SIGTERM (a clean shutdown), SIGKILL if it is still running after `timeout` s; its exit code
    (negative: killed by that signal)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


async def within(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    """`awaitable`, or an AssertionError after `seconds` naming `what` and showing where every asyncio
    task of the loop was waiting (so a hang in a shutdown says which task did not finish)."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        stacks = [f"  {task.get_name()}: {where_waiting(task)}" for task in asyncio.all_tasks()]
        raise AssertionError(f"{what} did not finish within {seconds} s; tasks:\n" + "\n".join(stacks)) from None
