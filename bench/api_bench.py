"""API order entry benchmark: HTTP (`newOrderRespType=ACK`) and WebSocket API (`order.place`),
against a bare Litestar POST measured in the same run as the reference.

    .venv/bin/python -m bench.api_bench --seconds 4 --rounds 3 [--rate 5000] [--write-docs]

A private Valkey (AOF everysec) and three servers, each one uvicorn worker (httptools
parser when installed; uvloop unless `--loop asyncio`), all started once: the bare app,
the exchange (the five agents in the same process as asyncio tasks, as `exchange up`
runs them) and the API alone (no agents, its own Redis database). The load generator
is a separate process per case, so the client's CPU is not the server's. The cases
take turns for `--rounds` rounds (a change in the shared box's load then hits each
alike); the table gives medians, ratios taken round by round against the baseline of
the same round, and the server process's CPU per answered request (from /proc). Cases:

- **bare Litestar POST** (baseline): one handler that validates a msgspec body and
  answers it; what one worker can do with no exchange behind it.
- **HTTP order entry**: signed `POST /api/v3/order` with ACK (answered once the order
  is durably in `orders.in`), closed loop with `--concurrency` requests in flight.
- **WebSocket order entry**: signed `order.place` with ACK over `/ws-api/v3`,
  `--connections` sockets with `--window` requests in flight on each.
- **API only**: the same two against the API without agents: the API's own cost.
- **paced** (with `--rate`): HTTP and WebSocket at a fixed offered rate, latency measured
  from each request's scheduled time (no coordinated omission).

Orders alternate BUY and SELL at one price, so about half of them trade and the book
stays small; signatures are checked (HMAC-SHA256 computed by the client per order).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

import msgspec

from bench._valkey import running_valkey

PRICE: Final = "30000.00"
QTY: Final = "0.001"
DOCS: Final = Path(__file__).resolve().parent.parent / "docs" / "bench-api.md"
PORT_BASE: Final = int(os.environ.get("BENCH_API_PORT", "8650"))
BASELINE: Final = "bare Litestar POST (baseline)"
T = TypeVar("T")


# ------------------------------------------------------------------ servers (child processes)


class Body(msgspec.Struct):
    symbol: str
    side: str
    quantity: str
    price: str


def bare_app() -> Any:
    """The reference: a Litestar app with one POST that validates a msgspec body."""
    from litestar import Litestar, post

    @post("/order", status_code=200)
    async def order(data: Body) -> Body:
        return data

    return Litestar(route_handlers=[order])


async def serve_exchange(redis_url: str, port: int, agents: bool = True, http: str = "auto") -> None:
    """The exchange (agents + API, one process) on `port`; prints the funded account's key as JSON.

    Without `agents` only the API runs (orders are acknowledged once in `orders.in`, nothing
    consumes them, the account is not funded): what the API costs by itself.
    """
    import uvicorn

    from api.accounts import create_account
    from api.app import create_app
    from api.context import ApiConfig
    from infra.runner import tune_gc
    from pipeline.core.messages import Deposit
    from pipeline.exchange import build_exchange
    from pipeline.transport.redis import RedisTransport

    transport = RedisTransport(redis_url)
    exchange = build_exchange(transport)
    if agents:
        await exchange.app.start()
        await exchange.app.wait_running()
    key = await create_account(transport.client, "bench")
    for asset, units in (("BTC", 10_000 * 10**8), ("USDT", 10**9 * 10**8)) if agents else ():
        await exchange.orders_in.send(Deposit(time.time_ns(), key.account_id, asset, units), key=key.account_id)
    while agents and len(await transport.client.hgetall(f"balances:{key.account_id}")) < 2:
        await asyncio.sleep(0.05)
    app = create_app(exchange, config=ApiConfig(weight_per_minute=0, ws_connections_per_5m=0,
                                                 ws_queue=100_000))
    tune_gc()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", access_log=False, http=http))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    print(json.dumps({"api_key": key.api_key, "secret": key.secret}), flush=True)
    await serving
    if agents:
        await exchange.app.stop()
    await transport.close()


def run_on_loop(main: Coroutine[Any, Any, T], loop: str) -> T:
    """`asyncio.run(main)` on uvloop's event loop (`loop="uvloop"`) or asyncio's own."""
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def serve_main(args: argparse.Namespace) -> None:
    if args.kind == "bare":
        import uvicorn

        server = uvicorn.Server(uvicorn.Config(bare_app(), host="127.0.0.1", port=args.port, log_level="warning",
                                               access_log=False, http=args.http))

        async def run() -> None:
            serving = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.01)
            print(json.dumps({}), flush=True)
            await serving

        run_on_loop(run(), args.loop)
    else:
        run_on_loop(serve_exchange(args.redis, args.port, agents=args.kind == "exchange", http=args.http), args.loop)


@dataclass
class Served:
    """A server child process: its pid, base URL, and the funded account's key (exchange only)."""

    pid: int
    url: str
    key: dict[str, str]


@contextlib.contextmanager
def server_process(kind: str, port: int, redis_url: str, env: dict[str, str],
                   loop: str = "uvloop", http: str = "auto") -> Iterator[Served]:
    process = subprocess.Popen([sys.executable, "-m", "bench.api_bench", "serve", "--kind", kind, "--port", str(port),
                                "--redis", redis_url, "--loop", loop, "--http", http], stdout=subprocess.PIPE,
                               text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {kind} server did not start")
        yield Served(process.pid, f"http://127.0.0.1:{port}", json.loads(line))
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ------------------------------------------------------------------ load generator (child process)


def percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1] * 1000}


class Signer:
    def __init__(self, key: dict[str, str]) -> None:
        self.api_key = key.get("api_key", "")
        self.secret = key.get("secret", "").encode()
        self.n = 0

    def params(self) -> dict[str, str]:
        self.n += 1
        return {"symbol": "BTCUSDT", "side": "BUY" if self.n % 2 else "SELL", "type": "LIMIT",
                "timeInForce": "GTC", "quantity": QTY, "price": PRICE, "newOrderRespType": "ACK",
                "timestamp": str(time.time_ns() // 1_000_000)}

    def sign(self, payload: str) -> str:
        import hashlib
        import hmac

        return hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()

    def http_body(self) -> str:
        payload = urlencode(self.params())
        return f"{payload}&signature={self.sign(payload)}"

    def ws_request(self, request_id: int) -> str:
        params = {**self.params(), "apiKey": self.api_key}
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
        return json.dumps({"id": request_id, "method": "order.place",
                           "params": {**params, "signature": self.sign(payload)}})


async def http_load(args: argparse.Namespace, key: dict[str, str]) -> dict[str, Any]:
    import aiohttp

    signer = Signer(key)
    bare = args.mode == "bare"
    url = f"{args.url}/order" if bare else f"{args.url}/api/v3/order"
    headers = {"Content-Type": "application/json"} if bare else {
        "X-MBX-APIKEY": signer.api_key, "Content-Type": "application/x-www-form-urlencoded"}
    bare_body = json.dumps({"symbol": "BTCUSDT", "side": "BUY", "quantity": QTY, "price": PRICE})
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + args.seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(scheduled: float | None = None) -> None:
            nonlocal errors
            start = scheduled if scheduled is not None else time.perf_counter()
            try:
                async with session.post(url, data=bare_body if bare else signer.http_body(),
                                        headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

        started = time.perf_counter()
        if args.rate:
            tasks: set[asyncio.Task[None]] = set()
            interval, n = 1.0 / args.rate, 0
            while (now := time.perf_counter()) < deadline:
                due = started + n * interval
                while due <= now:
                    task = asyncio.create_task(one(due))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    n += 1
                    due = started + n * interval
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if tasks:
                await asyncio.wait(tasks)
        else:
            async def worker() -> None:
                while time.perf_counter() < deadline:
                    await one()

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
    return {"ok": len(latencies), "errors": errors, "seconds": elapsed, **percentiles(latencies)}


async def ws_load(args: argparse.Namespace, key: dict[str, str]) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    signer = Signer(key)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + args.seconds
    ws_url = args.url.replace("http://", "ws://") + "/ws-api/v3"
    sockets = [await connect(ws_url, max_size=2**24) for _ in range(args.connections)]
    windows = [asyncio.Semaphore(args.window) for _ in sockets]
    sent: dict[int, float] = {}
    next_id = 0

    async def reader(i: int) -> None:
        nonlocal errors
        async for message in sockets[i]:
            answer = json.loads(message)
            start = sent.pop(answer["id"], None)
            if start is None:
                continue
            windows[i].release()
            if answer.get("status") == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    readers = [asyncio.create_task(reader(i)) for i in range(len(sockets))]
    started = time.perf_counter()
    try:
        if args.rate:
            interval, n = 1.0 / args.rate, 0
            while (now := time.perf_counter()) < deadline:
                due = started + n * interval
                while due <= now:
                    next_id += 1
                    sent[next_id] = due
                    await sockets[n % len(sockets)].send(signer.ws_request(next_id))
                    n += 1
                    due = started + n * interval
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
        else:
            async def pump(i: int) -> None:
                nonlocal next_id
                ws, window = sockets[i], windows[i]
                while time.perf_counter() < deadline:
                    await window.acquire()
                    next_id += 1
                    sent[next_id] = time.perf_counter()
                    await ws.send(signer.ws_request(next_id))

            await asyncio.gather(*(pump(i) for i in range(len(sockets))))
        wait_until = time.perf_counter() + 10
        while sent and time.perf_counter() < wait_until:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        for ws in sockets:
            await ws.close()
        for task in readers:
            task.cancel()
    return {"ok": len(latencies), "errors": errors + len(sent), "seconds": elapsed, **percentiles(latencies)}


def load_main(args: argparse.Namespace) -> None:
    key = json.loads(args.key)
    result = run_on_loop(ws_load(args, key) if args.mode == "ws" else http_load(args, key), args.loop)
    print(json.dumps(result), flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (the load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_load(mode: str, server: Served, args: argparse.Namespace, rate: int = 0) -> dict[str, Any]:
    """One case against `server`; the load generator's result plus the server's CPU per answered request."""
    command = [sys.executable, "-m", "bench.api_bench", "load", "--mode", mode, "--url", server.url,
               "--key", json.dumps(server.key),
               "--seconds", str(args.seconds), "--concurrency", str(args.concurrency),
               "--connections", str(args.connections), "--window", str(args.window), "--rate", str(rate),
               "--loop", args.loop]
    cpu_before, client_before = cpu_seconds(server.pid), _children_cpu()
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    answered = max(1, result["ok"])
    result["cpu_us"] = (cpu_seconds(server.pid) - cpu_before) / answered * 1e6
    result["client_cpu_us"] = (_children_cpu() - client_before) / answered * 1e6
    return result


# ------------------------------------------------------------------ the run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve")
    serve.add_argument("--kind", choices=["bare", "exchange", "api"], required=True)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--redis", default="")
    load = sub.add_parser("load")
    load.add_argument("--mode", choices=["bare", "http", "ws"], required=True)
    load.add_argument("--key", default="{}")
    load.add_argument("--url", required=True)
    for p in (parser, load, serve):
        p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                       help="event loop of the servers and the load generator")
    for p in (parser, serve):
        p.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto",
                       help="uvicorn's HTTP parser (auto: httptools when installed)")
    for p in (parser, load):
        p.add_argument("--seconds", type=float, default=8.0)
        p.add_argument("--concurrency", type=int, default=64, help="HTTP requests in flight (closed loop)")
        p.add_argument("--connections", type=int, default=4, help="WebSocket connections")
        p.add_argument("--window", type=int, default=64, help="WebSocket requests in flight per connection")
        p.add_argument("--rate", type=int, default=0, help="also run paced at this offered orders/s")
    parser.add_argument("--rounds", type=int, default=3, help="the cases take turns this many times (medians)")
    parser.add_argument("--write-docs", action="store_true", help=f"write the results to {DOCS}")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve_main(args)
        return
    if args.command == "load":
        load_main(args)
        return
    env = {**os.environ, "EXCHANGE_SECRET_KEY": os.environ.get("EXCHANGE_SECRET_KEY") or _new_key()}
    results: dict[str, list[dict[str, Any]]] = {}
    with running_valkey(appendonly=True, appendfsync="everysec") as valkey, \
            server_process("bare", PORT_BASE, valkey.url, env, args.loop, args.http) as bare, \
            server_process("exchange", PORT_BASE + 1, valkey.url, env, args.loop, args.http) as exchange, \
            server_process("api", PORT_BASE + 2, valkey.url.rsplit("/", 1)[0] + "/1", env, args.loop,
                           args.http) as api_only:
        print(f"valkey {valkey.url}; {args.rounds} round(s) of {args.seconds:g} s per case; {args.loop} loop, "
              f"uvicorn http={_http_impl(args.http)}", flush=True)
        cases = [(BASELINE, "bare", 0, bare), ("HTTP order entry, ACK", "http", 0, exchange),
                 ("WebSocket order entry, ACK", "ws", 0, exchange),
                 ("HTTP order entry, ACK, API only (no agents)", "http", 0, api_only),
                 ("WebSocket order entry, ACK, API only (no agents)", "ws", 0, api_only)]
        for n in range(args.rounds):  # the cases take turns, so a change in the box's load hits each alike
            for label, mode, rate, server in cases:
                result = run_load(mode, server, args, rate)
                results.setdefault(label, []).append(result)
                print(f"round {n + 1}: {label}: {_rate(result):,.0f}/s, server CPU {result['cpu_us']:,.0f} us "
                      f"per request, p99 {result['p99']:.1f} ms", flush=True)
        if args.rate:
            for label, mode in ((f"HTTP paced at {args.rate}/s", "http"), (f"WebSocket paced at {args.rate}/s", "ws")):
                results[label] = [run_load(mode, exchange, args, args.rate)]
    table = _table(results)
    print()
    print(table)
    if args.write_docs:
        _write_docs(table, args)


def _http_impl(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def _new_key() -> str:
    from api.secretbox import new_key_text

    return new_key_text()


def _rate(result: dict[str, Any]) -> float:
    return float(result["ok"]) / float(result["seconds"]) if result["seconds"] else 0.0


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Medians over the rounds; ratios taken round by round against the baseline of the same round."""
    head = ["| case | orders/s | vs bare POST | server CPU us/request | vs bare POST | client CPU us/request "
            "| p50 ms | p90 ms | p99 ms | max ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = results[BASELINE]
    rows = []
    for label, runs in results.items():
        paired = list(zip(runs, base, strict=False))
        rate_ratio = _median([_rate(r) / _rate(b) if _rate(b) else 0.0 for r, b in paired])
        cpu_ratio = _median([r["cpu_us"] / b["cpu_us"] if b["cpu_us"] else 0.0 for r, b in paired])
        typical = sorted(runs, key=_rate)[len(runs) // 2]  # the latencies of the median round
        rows.append(f"| {label} | {_median([_rate(r) for r in runs]):,.0f} | {rate_ratio:.2f}x "
                    f"| {_median([r['cpu_us'] for r in runs]):,.0f} | {cpu_ratio:.2f}x "
                    f"| {_median([r['client_cpu_us'] for r in runs]):,.0f} | {typical['p50']:.1f} "
                    f"| {typical['p90']:.1f} | {typical['p99']:.1f} | {typical['max']:.1f} "
                    f"| {sum(r['errors'] for r in runs)} |")
    return "\n".join(head + rows)


def _write_docs(table: str, args: argparse.Namespace) -> None:
    command = (f".venv/bin/python -m bench.api_bench --seconds {args.seconds:g} --rounds {args.rounds} "
               f"--loop {args.loop} --http {args.http} --concurrency {args.concurrency} "
               f"--connections {args.connections} --window {args.window}"
               + (f" --rate {args.rate}" if args.rate else "") + " --write-docs")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = [f"{x:.2f}" for x in os.getloadavg()]
    text = DOCS.read_text() if DOCS.exists() else ""
    marker = "<!-- results -->"
    block = (f"{marker}\nRun of {stamp} (load average {' '.join(load)} at the end), command:\n\n    {command}\n\n"
             f"{table}\n")
    DOCS.write_text(text.split(marker)[0] + block if marker in text else text + "\n" + block)


if __name__ == "__main__":
    main()
