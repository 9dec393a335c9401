"""`exchange status` and `exchange bench` against a served pipeline, as an operator runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx

from api.accounts import create_account
from pipeline.core.messages import Deposit, PlaceOrder
from tests.ops.conftest import Served


async def run_cli(*args: str, env: dict[str, str], timeout: float = 90) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "infra", *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_status_prints_the_health_screen(served: Served, database_url: str) -> None:
    exchange = served.exchange
    key = await create_account(served.transport.client, "op")
    await exchange.orders_in.send(Deposit(time.time_ns(), key.account_id, "USDT", 10**14), key=key.account_id)
    for i in range(1, 4):
        await exchange.orders_in.send(PlaceOrder(time.time_ns(), key.account_id, "BTCUSDT", i, f"c{i}", "BUY",
                                                 price_ticks=100_000, qty_lots=1_000), key=key.account_id)
    await exchange.app.wait_caught_up(timeout=30)
    async with httpx.AsyncClient(base_url=served.base_url) as http:
        assert (await http.get("/healthz")).status_code == 200
    code, out, err = await run_cli("status", "--base-url", served.base_url, "--sample", "0.3",
                                   env={"REDIS_URL": served.redis_url, "DATABASE_URL": database_url})
    assert code == 0, out + err
    assert "exchange status at" in out and ": OK" in out
    lines = out.splitlines()
    owner = exchange.app.owner
    for agent in ("validate", "risk", "match", "settle", "publish"):
        row = next(line for line in lines if line.startswith(f"{agent} ") and owner in line)
        assert row.split()[1] == "0"  # partition
    worker_row = next(line for line in lines if line.startswith(owner)).split()
    assert worker_row[1:3] == ["accounts+match+publish+validate", "4"], worker_row  # risk + settle: one lease
    assert 0 < float(worker_row[3]) <= exchange.app.lease_ttl_ms / 1000
    lag_row = next(line for line in lines if line.startswith("validate") and "orders.in:0" in line)
    assert lag_row.split()[2:4] == ["4", "0"]  # consumed, lag
    assert "dead letters: 0" in out
    assert "partition layout: 1 accounts partition(s), 1 match partition(s), 10 markets" in out
    assert "persister lag:" in out
    assert f"API: {served.base_url}: 200 healthy" in out
    # from the API's /metrics: its agents' batches, request latency by route, WebSockets
    batch_row = next(line for line in lines if line.startswith("validate ") and "<=" in line).split()
    assert round(int(batch_row[1]) * float(batch_row[2])) == 4, batch_row  # batches x mean size: 4 messages
    route_row = next(line for line in lines if line.split()[:2] == ["GET", "/healthz"]).split()
    assert int(route_row[2]) >= 1 and float(route_row[3]) > 0 and route_row[4] == "<=", route_row
    assert "WebSocket clients: 0 open, 0 dropped as slow consumers" in out


async def _bench(served: Served, via: str, out: Path, *extra: str) -> dict[str, object]:
    code, stdout, stderr = await run_cli(
        "bench", "--via", via, "--rate", "40", "--duration", "2", "--accounts", "4", "--connections", "8",
        "--base-url", served.base_url, "--drain", "20", "--out", str(out), *extra,
        env={"REDIS_URL": served.redis_url}, timeout=120)
    assert code == 0, stdout + stderr
    assert "t=  1s offered" in stderr  # progress while it runs
    assert "order -> trade published" in stdout
    if "--baseline" in extra:  # the side-by-side rows against the same-run plain redis-py hop
        baseline = next(line for line in stdout.splitlines() if line.startswith("plain redis-py hop (baseline)"))
        assert baseline.split()[-1] == "1.00x"
        validate = next(line for line in stdout.splitlines() if line.startswith("through validate"))
        assert validate.split()[-1].endswith("x") and float(validate.split()[-1][:-1]) > 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return dict(report)


def _check(report: dict[str, object]) -> None:
    latency = report["latency_ms"]
    counts = report["counts"]
    assert isinstance(latency, dict) and isinstance(counts, dict)
    assert counts["offered"] == 80 and counts["sent"] == 80
    assert counts["acked"] + counts["rejected"] == 80
    assert counts["dropped"] == 0 and counts["failed"] == 0
    assert counts["trades"] > 0 and counts["ws_trades"] == counts["trades"]
    for measure in ("ack", "trade", "ws"):
        summary = latency[measure]
        assert summary["count"] > 0
        values = [summary[k] for k in ("p50", "p95", "p99", "p99_9", "max")]
        assert all(isinstance(v, float) and v > 0 for v in values), summary
        assert values == sorted(values), summary
    # a trade is published after its order was answered... at the earliest; WebSocket after Redis
    assert latency["trade"]["p50"] >= latency["ack"]["p50"] * 0.5
    assert latency["ws"]["p50"] >= latency["trade"]["p50"] * 0.9


async def test_bench_via_stream_http_and_ws(served: Served, tmp_path: Path) -> None:
    stream = await _bench(served, "stream", tmp_path / "stream", "--baseline", "--baseline-events", "5000")
    _check(stream)
    assert stream["throughput"]["baseline_plain_hop_per_s"] > 0  # type: ignore[index]
    report = await _bench(served, "http", tmp_path / "http")
    _check(report)
    assert report["config"]["via"] == "http"  # type: ignore[index]
    _check(await _bench(served, "ws", tmp_path / "ws"))  # the WebSocket API
