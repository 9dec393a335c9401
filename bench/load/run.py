"""One load run: set up accounts, offer load on schedule, drain, and summarise.

Phases: (1) reach or start the exchange; (2) optionally the plain redis-py baseline on
the same server; (3) create and fund `accounts` accounts through the admin path
(accounts in Redis, Deposit commands into `orders.in`, as `exchange admin` does) and
wait for their balances; (4) start the watchers (published trades in Redis, the trade
streams on a WebSocket); (5) offer `rate` requests/s for `duration` s, open loop;
(6) drain: answers in flight, then every agent caught up, then the WebSocket.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
import uuid
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from api.accounts import NewKey, create_account
from api.admin import deposit_command
from bench.load.mix import MixConfig, OrderMix
from bench.load.recorder import MEASURES, Recorder
from bench.load.senders import HttpSender, Sender, StreamSender, WsApiSender
from bench.load.watch import TradeWatcher, WsTradeWatcher
from pipeline.config import PipelineConfig
from pipeline.exchange import Exchange, build_exchange
from pipeline.metrics import consumer_lag
from pipeline.transport.redis import RedisTransport

Via = Literal["http", "ws", "stream"]
TICK_S = 0.001


@dataclass
class LoadConfig:
    """What to offer, how, and against what."""

    via: Via = "http"
    rate: float = 1000.0
    """Requests offered per second (orders and cancels)."""
    duration: float = 10.0
    accounts: int = 50
    symbols: list[str] = field(default_factory=lambda: ["BTCUSDT", "ETHUSDT"])
    connections: int | None = None
    """HTTP keep-alive connections, or WebSocket API connections (--via ws); None: `default_connections`."""
    base_url: str | None = None
    """A running exchange's API; None starts one (embedded servers in a temp dir)."""
    redis_url: str | None = None
    port: int = 0
    """Port of the self-started exchange (0: a free one)."""
    market_maker: bool = False
    ws_watch: bool = True
    baseline: bool = False
    baseline_events: int = 50_000
    max_in_flight: int = 20_000
    drain_s: float = 30.0
    seed: int = 7
    mix: MixConfig = field(default_factory=MixConfig)
    profile: str | None = None
    """Directory for a py-spy profile of the exchange process (only when the bench started it)."""


HTTP_WINDOW_S = 0.05
"""Answer time the default HTTP connection count is sized for (Little's law: connections = rate x time)."""


def default_connections(via: Via, rate: float) -> int:
    """Connections when none are given. HTTP/1.1 carries one request at a time per connection, so a fixed
    16 capped what reached the server at 16 / answer time (about 300/s at the 50 ms an idle exchange takes)
    whatever the offered rate, and the rest waited in the generator; sized by the rate instead (16-256).
    The WebSocket API pipelines up to WS_API_IN_FLIGHT requests per connection: 16 is plenty."""
    if via != "http":
        return 16
    return max(16, min(256, int(rate * HTTP_WINDOW_S)))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def setup_accounts(exchange: Exchange, client: Any, count: int, symbols: list[str]) -> dict[int, NewKey]:
    """`count` new accounts, each funded with plenty of every asset of `symbols`; waits for the balances."""
    tag = uuid.uuid4().hex[:6]
    keys: dict[int, NewKey] = {}
    for i in range(count):
        key = await create_account(client, f"bench-{tag}-{i}")
        keys[key.account_id] = key
    assets = sorted({a.symbol for s in symbols for a in (exchange.markets[s].base_asset,
                                                         exchange.markets[s].quote_asset)})
    deposits = [(account, deposit_command(exchange.markets, account, asset, "1000000000"))
                for account in keys for asset in assets]
    for start in range(0, len(deposits), 500):
        await exchange.orders_in.send_many(deposits[start:start + 500])
    deadline = time.monotonic() + 180
    while True:
        async with client.pipeline(transaction=False) as pipe:
            for account in keys:
                pipe.hlen(f"balances:{account}")
            lengths = await pipe.execute()
        funded = sum(1 for n in lengths if int(n) >= len(assets))
        if funded == len(keys):
            return keys
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {funded} of {len(keys)} accounts funded after 180 s")
        await asyncio.sleep(0.1)


async def _consumed(exchange: Exchange) -> dict[str, int]:
    """Messages each of the exchange's agents has committed, summed over its input streams."""
    out: dict[str, int] = {}
    for row in await consumer_lag(exchange.app.transport):
        if row.consumer in exchange.app.agents:
            out[row.consumer] = out.get(row.consumer, 0) + row.consumed
    return out


async def _pipeline_lag(exchange: Exchange) -> int:
    return sum(row.lag for row in await consumer_lag(exchange.app.transport) if row.consumer in exchange.app.agents)


async def offer(config: LoadConfig, sender: Sender, mix: OrderMix, recorder: Recorder,
                watchers: list[Any]) -> int:
    """Send on schedule (open loop) for the configured duration; returns when the last one is due."""
    interval = 1e9 / config.rate
    total = int(config.rate * config.duration)
    start = recorder.start_ns
    sent = 0
    next_report = start + 1_000_000_000
    while sent < total:
        now = time.perf_counter_ns()
        due = min(total, int((now - start) / interval) + 1) if now >= start else 0
        if due > sent:
            batch = []
            for i in range(sent, due):
                sched = start + int(i * interval)
                recorder.offered(sched)
                batch.append((sched, mix.next()))
            sender.submit(batch)
            sent = due
        if now >= next_report:
            _progress(recorder, sender, (now - start) // 1_000_000_000, watchers)
            next_report += 1_000_000_000
        await asyncio.sleep(TICK_S)
    return total


def _progress(recorder: Recorder, sender: Sender, second: int, watchers: list[Any]) -> None:
    c = recorder.counts
    recent = {m: recorder.window(m, max(0, second - 1)) for m in MEASURES}
    late = "".join(f" {m} p99 {recent[m]['p99']:.1f}ms" for m in MEASURES if recent[m]["count"])
    _say(f"  t={second:>3}s offered {c.offered} sent {c.sent} acked {c.acked} rejected {c.rejected} "
         f"failed {c.failed + c.not_sent} in-flight {sender.in_flight} trades {c.trades} ws {c.ws_trades} |"
         f"{late or ' (no latencies yet)'}")


async def run_load(config: LoadConfig) -> dict[str, Any]:
    """Run the whole benchmark; the report as a JSON-ready dict."""
    from bench.load.system import EmbeddedExchange, start_exchange

    embedded: EmbeddedExchange | None = None
    base_url, url = config.base_url, config.redis_url
    if base_url is None:
        port = config.port or _free_port()
        _say(f"starting an exchange of its own (embedded servers, port {port}) ...")
        embedded = await start_exchange(port, market_maker=config.market_maker)
        base_url, url = embedded.base_url, embedded.redis_url
        # accounts are created here, so API secrets must be sealed with that exchange's server key,
        # which lives in its data dir (as for `exchange admin` run against it)
        os.environ["EXCHANGE_DATA_DIR"] = str(embedded.data_dir)
        _say(f"exchange up at {base_url}")
    if url is None:
        from infra.cli.common import redis_url

        url = redis_url()
    pids = {"load generator": os.getpid()}
    if embedded is not None:
        from infra.config import ServicesConfig
        from infra.services.embedded import EmbeddedServices

        services = EmbeddedServices(ServicesConfig(data_dir=embedded.data_dir))
        pids["exchange (api + agents + persister)"] = embedded.process.pid
        for name, pid in (("valkey", services.valkey.pid), ("postgres", services.postgres.pid)):
            if pid is not None:
                pids[name] = pid
    try:
        return await _run(config, base_url, url, embedded is not None, pids)
    finally:
        if embedded is not None:
            _say("stopping the exchange it started ...")
            await embedded.stop()


async def _run(config: LoadConfig, base_url: str, url: str, embedded: bool, pids: dict[str, int]) -> dict[str, Any]:
    from bench.load import profile
    transport = RedisTransport(url)
    exchange = build_exchange(transport, PipelineConfig.from_env())
    unknown = set(config.symbols) - set(exchange.markets)
    if unknown:
        raise ValueError(f"unknown markets {sorted(unknown)}; known: {', '.join(sorted(exchange.markets))}")
    markets = {s: exchange.markets[s] for s in config.symbols}
    client = transport.client
    watchers: list[Any] = []
    sender: Sender | None = None
    load_start = os.getloadavg()
    try:
        baseline = None
        if config.baseline:
            from bench.load.baseline import plain_hop_rate

            _say(f"baseline: plain redis-py hop over {config.baseline_events} events ...")
            baseline = await plain_hop_rate(url, config.baseline_events)
            _say(f"baseline: {baseline:,.0f} events/s")
        _say(f"creating and funding {config.accounts} accounts ...")
        keys = await setup_accounts(exchange, client, config.accounts, config.symbols)
        mix = OrderMix(markets, sorted(keys), config.seed, config.mix)
        recorder = Recorder(time.perf_counter_ns() + 200_000_000)
        trades = TradeWatcher(exchange, url, recorder)
        await trades.start()
        watchers.append(trades)
        ws_url = base_url.replace("http://", "ws://").replace("https://", "wss://")
        ws_watch: WsTradeWatcher | None = None
        if config.ws_watch:
            ws_watch = WsTradeWatcher(ws_url, config.symbols, recorder)
            await ws_watch.start()
            watchers.append(ws_watch)
        common: tuple[Any, ...] = (markets, keys, mix, recorder, config.max_in_flight)
        connections = config.connections or default_connections(config.via, config.rate)
        if config.via == "http":
            sender = HttpSender(base_url, connections, *common)
        elif config.via == "ws":
            sender = WsApiSender(ws_url, connections, *common)
        else:
            sender = StreamSender(exchange, client, *common)
        await sender.start()
        consumed_before = await _consumed(exchange)
        spy = None
        spy_path = None
        exchange_pid = pids.get("exchange (api + agents + persister)")
        if config.profile and exchange_pid:
            os.makedirs(config.profile, exist_ok=True)
            spy_path = os.path.join(config.profile, f"exchange-{config.via}.txt")
            spy = await profile.start_py_spy(exchange_pid, spy_path)
        cpu_before = profile.process_cpu(pids)
        _say(f"offering {config.rate:,.0f}/s for {config.duration:g} s via {config.via} ...")
        await offer(config, sender, mix, recorder, watchers)
        offered_end = time.perf_counter_ns()
        _say("draining: answers in flight, then the pipeline, then the WebSocket ...")
        deadline = time.monotonic() + config.drain_s
        while sender.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        lag = await _pipeline_lag(exchange)
        while lag and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            lag = await _pipeline_lag(exchange)
        caught_up = time.perf_counter_ns()
        consumed_after = await _consumed(exchange)
        cpu_after = profile.process_cpu(pids)
        if spy is not None:
            await profile.stop_py_spy(spy)
        answered = recorder.counts.acked + recorder.counts.rejected
        cpu = {name: {"seconds": round(cpu_after[name] - cpu_before[name], 3),
                      "us_per_request": round((cpu_after[name] - cpu_before[name]) / max(1, recorder.counts.sent) * 1e6,
                                              1),
                      # per sent request understates the cost when many are still unanswered at the end
                      "us_per_answered": round((cpu_after[name] - cpu_before[name]) / max(1, answered) * 1e6, 1)}
               for name in cpu_after if name in cpu_before}
        ws_deadline = time.monotonic() + min(5.0, config.drain_s)
        while ws_watch is not None and recorder.ws_missing and time.monotonic() < ws_deadline:
            await asyncio.sleep(0.02)
        report = _report(config, recorder, sender, baseline, base_url, embedded, offered_end, caught_up, lag,
                         consumed_before, consumed_after, ws_watch, load_start)
        report["profile"] = profile.summary(spy_path, cpu)
        return report
    finally:  # each close bounded: a hung close must not keep the run (and its exchange) alive forever
        if sender is not None:
            await _bounded(sender.close(), "the sender")
        for watcher in watchers:
            await _bounded(watcher.close(), type(watcher).__name__)
        await transport.close()


async def _bounded(closing: Coroutine[Any, Any, None], what: str, seconds: float = 15.0) -> None:
    try:
        await asyncio.wait_for(closing, seconds)
    except TimeoutError:
        _say(f"warning: closing {what} took over {seconds:g} s; left behind")


def _report(config: LoadConfig, recorder: Recorder, sender: Sender, baseline: float | None, base_url: str,
            embedded: bool, offered_end: int, caught_up: int, lag: int, before: dict[str, int],
            after: dict[str, int], ws_watch: WsTradeWatcher | None,
            load_start: tuple[float, float, float]) -> dict[str, Any]:
    c = recorder.counts
    start = recorder.start_ns
    run_s = (caught_up - start) / 1e9
    acked_s = (recorder.last_ack_ns - start) / 1e9 if recorder.last_ack_ns else 0.0
    dropped = c.not_sent + c.failed + sender.in_flight + (recorder.ws_missing if ws_watch else 0)
    throughput: dict[str, Any] = {
        "offered_per_s": round(c.offered / config.duration, 1),
        "acked_per_s": round(c.acked / acked_s, 1) if acked_s > 0 else None,
        "completed_per_s": round((c.acked + c.rejected) / run_s, 1) if run_s > 0 and not lag else None,
        "drain_after_offer_s": round((caught_up - offered_end) / 1e9, 3),
        "pipeline_lag_at_end": lag,
        "agent_messages_per_s": {a: round((after.get(a, 0) - before.get(a, 0)) / run_s, 1)
                                 for a in sorted(after)} if run_s > 0 else {},
        "trades_per_s": round(c.trades / run_s, 1) if run_s > 0 else None,
    }
    if baseline is not None:
        throughput["baseline_plain_hop_per_s"] = round(baseline, 1)
        if throughput["completed_per_s"]:
            throughput["completed_vs_baseline"] = round(throughput["completed_per_s"] / baseline, 3)
    counts = {k: v for k, v in asdict(c).items() if k != "errors"}
    counts.update(errors=dict(c.errors), in_flight_at_end=sender.in_flight,
                  ws_missing=recorder.ws_missing if ws_watch else None, dropped=dropped)
    return {
        "config": {**{k: v for k, v in asdict(config).items() if k not in ("mix",)}, "mix": asdict(config.mix),
                   "connections": config.connections or default_connections(config.via, config.rate),
                   "base_url": base_url, "embedded": embedded},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_start": load_start,
                    "loadavg_end": os.getloadavg(), "when_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())},
        "counts": counts,
        "throughput": throughput,
        "latency_ms": {m: recorder.summary(m) for m in MEASURES},
        "series": {m: recorder.per_second(m) for m in MEASURES},
        "offered_series": [{"t": t, "count": n} for t, n in sorted(recorder.offered_per_s.items())],
        "ws_watch": {"enabled": ws_watch is not None, "closed": ws_watch.closed if ws_watch else ""},
    }
