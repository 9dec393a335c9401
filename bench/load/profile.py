"""Where the time goes during a load run: CPU seconds per process (/proc) and a py-spy split of
the exchange process by part (HTTP server, API handlers, WebSocket hub, each agent, persister).

py-spy is a profiling-only tool (``pip install py-spy``), not a project dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from bench.pipeline_bench import classify, cpu_seconds


def process_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each named process (missing ones left out)."""
    out = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError, ValueError, IndexError):
            out[name] = cpu_seconds(pid)
    return out


async def start_py_spy(pid: int, path: str) -> asyncio.subprocess.Process:
    """py-spy record (raw collapsed stacks, 200 Hz, idle frames left out) of `pid` into `path`."""
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    process = await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--nonblocking", "-o", path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(1.0)  # attaching
    return process


async def stop_py_spy(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 60)


def part_of(frames: list[str]) -> str:
    """Which part of the exchange process one sampled stack (root first) belongs to."""
    text = ";".join(frames)
    if "recovery/persister.py" in text:
        return "persister"
    if "infra/mm/" in text:
        return "market maker"
    if "api/ws/hub.py" in text:
        return "websocket hub (fan-out)"
    if "api/writer.py" in text:
        return "api: group-commit writer"
    if "api/" in text and ("api/orders.py" in text or "api/auth.py" in text or "api/params.py" in text):
        return "api: order handlers (parse, sign check)"
    if "uvicorn/" in text or "h11" in text or "litestar/" in text or "httptools" in text:
        return "http server (uvicorn + litestar)"
    agent, part = classify(frames)
    if agent != "loop":
        return f"agent {agent}: {part}"
    return part


def split(path: str) -> list[tuple[str, float]]:
    """(part, share of samples) from a py-spy raw file, largest first."""
    counts: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack and count.isdigit():
                key = part_of(stack.split(";"))
                counts[key] = counts.get(key, 0) + int(count)
    total = sum(counts.values()) or 1
    return sorted(((k, n / total) for k, n in counts.items()), key=lambda kv: -kv[1])


def summary(path: str | None, cpu: dict[str, Any]) -> dict[str, Any]:
    """The profile section of the report."""
    out: dict[str, Any] = {"cpu_seconds": cpu}
    if path and os.path.exists(path):
        out["exchange_process_split"] = [{"part": k, "share": round(v, 4)} for k, v in split(path)]
        out["py_spy_raw"] = path
    return out
