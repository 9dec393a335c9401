"""An exchange of its own for a one-command benchmark: `exchange up` in a subprocess, with embedded
Valkey and PostgreSQL in a temporary data dir (removed afterwards), rate limiting off."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from infra.cli.common import redis_url
from infra.config import ServicesConfig


@dataclass
class EmbeddedExchange:
    """A running `exchange up` child process and where to reach it."""

    process: asyncio.subprocess.Process
    data_dir: Path
    base_url: str
    redis_url: str
    drain: asyncio.Task[None] | None = None

    async def stop(self, timeout: float = 180.0) -> None:
        """SIGINT (a clean stop: agents commit, embedded servers stop), then remove the data dir. If it
        does not stop in time it is killed, and its embedded servers are stopped (`exchange services
        down` on its data dir) so that no Valkey or PostgreSQL is left running."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        down = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "infra", "services", "down",
            env={**os.environ, "EXCHANGE_DATA_DIR": str(self.data_dir)},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await down.wait()  # nothing to do after a clean stop; after a kill, the servers it left
        shutil.rmtree(self.data_dir, ignore_errors=True)


async def start_exchange(port: int, *, market_maker: bool = False, timeout: float = 180.0,
                         progress: bool = True) -> EmbeddedExchange:
    """Start `exchange up --port PORT` on fresh embedded servers; return once it says it is up."""
    data_dir = Path(tempfile.mkdtemp(prefix="exchange-bench-"))
    data_dir.chmod(0o755)  # the embedded PostgreSQL may run as its own user
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(EXCHANGE_DATA_DIR=str(data_dir), EXCHANGE_API_WEIGHT_PER_MINUTE="0")
    args = [sys.executable, "-m", "infra", "up", "--port", str(port)] + ([] if market_maker else ["--no-mm"])
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=None if progress else asyncio.subprocess.DEVNULL)
    assert process.stdout is not None
    try:
        while True:
            line = (await asyncio.wait_for(process.stdout.readline(), timeout)).decode()
            if not line:
                raise RuntimeError(f"exchange up exited with {await process.wait()} before it was up")
            if line.startswith("exchange is up:"):
                base_url = line.split()[3]
                break
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    url = redis_url(ServicesConfig(data_dir=data_dir))
    exchange = EmbeddedExchange(process, data_dir, base_url, url)
    exchange.drain = asyncio.create_task(_drain(process.stdout))  # never let its pipe fill up
    return exchange


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass
