"""`exchange status`: one screen of the exchange's health for an operator at a terminal.

Services up or down, the live workers (what they run, how many leases they hold), each
agent partition's lease owner, lag and events/s per consumer
and stream (consumed counters sampled over `--sample` seconds), dead letters, the
persister's archive lag, snapshots (age, pause, encode time) and the API's `/healthz`.
Everything is read from Redis, PostgreSQL and the API, so it is right whichever
processes run the agents. From the API's `/metrics` come the figures only a process
knows: batch sizes and processing time of the agents that API process runs, request
latency by route, open WebSockets and slow consumers dropped.
`--watch` redraws every `--interval` seconds until Ctrl-C.

Exit code (without --watch): 0 when everything is up and the API is healthy, 3 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from infra.cli.common import ToolError, database_url, print_table, redis_url
from infra.config import ConfigError, ServicesConfig

EXIT_OK = 0
EXIT_UNHEALTHY = 3
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("status", help="one screen of health: services, agents, lag, events/s, API")
    parser.add_argument("--base-url", default=os.environ.get("EXCHANGE_API_URL", DEFAULT_BASE_URL),
                        help=f"the API to check (default $EXCHANGE_API_URL or {DEFAULT_BASE_URL})")
    parser.add_argument("--sample", type=float, default=1.0, help="seconds to sample events/s over (default 1)")
    parser.add_argument("--watch", action="store_true", help="redraw until Ctrl-C")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between redraws with --watch")
    parser.set_defaults(func=cmd_status)


@dataclass
class Report:
    """What one look at the exchange found (printed by `render`)."""

    when: str
    services: list[tuple[str, str, str]] = field(default_factory=list)
    workers: list[tuple[str, str, int, float]] | None = None
    """(owner, agent set, leases held, seconds until its announcement expires) of each live worker."""
    agents: list[tuple[str, int, str, int, float]] = field(default_factory=list)
    lag: list[tuple[str, str, int, int, float]] = field(default_factory=list)
    layout: str = ""
    """The partition layout the data was written with (`pipeline.layout`), and whether this environment agrees."""
    dead_letters: int | None = None
    last_dead_letter: str = ""
    persister: dict[str, int] | None = None
    persister_error: str = ""
    snapshots: list[Any] | None = None
    api: str = ""
    api_ok: bool = False
    batches: list[tuple[str, int, float, float, str]] = field(default_factory=list)
    """(agent, batches, mean batch size, mean batch ms, p99 batch ms) of the API process's agents."""
    routes: list[tuple[str, str, int, float, str, str]] = field(default_factory=list)
    """(method, route, requests, mean ms, p50 ms, p99 ms) from the API's request histogram."""
    ws_clients: int | None = None
    ws_dropped: int | None = None
    metrics_error: str = ""
    problems: list[str] = field(default_factory=list)


def _services(config: ServicesConfig, report: Report) -> None:
    from infra.services import EmbeddedServices

    for row in EmbeddedServices(config).status():
        report.services.append((row.name, str(row.state), row.url or "-"))
        if not row.state.ok:
            report.problems.append(f"{row.name} is {row.state}")


async def _pipeline(url: str, sample: float, report: Report) -> None:
    from pipeline.config import PipelineConfig
    from pipeline.deadletter import DEAD_LETTER_ENTRIES, DLQ_STREAM
    from pipeline.exchange import build_exchange
    from pipeline.metrics import consumer_lag
    from pipeline.transport.cluster import open_transport

    transport = open_transport(url)  # redis+cluster:// -> ClusterTransport (tagged keys, logical names)
    try:
        exchange = build_exchange(transport, PipelineConfig.from_env())
        first, started = await consumer_lag(transport), time.perf_counter()
        await asyncio.sleep(sample)
        rows, elapsed = await consumer_lag(transport), time.perf_counter() - started
        before = {(r.consumer, r.stream): r.consumed for r in first}
        rates = {(r.consumer, r.stream): (r.consumed - before.get((r.consumer, r.stream), r.consumed)) / elapsed
                 for r in rows}
        report.lag = [(r.consumer, r.stream, r.consumed, r.lag, rates[(r.consumer, r.stream)]) for r in rows]
        by_agent: dict[str, list[Any]] = {}
        for r in rows:
            by_agent.setdefault(r.consumer, []).append(r)
        holders: dict[str, str] = {}  # lease key -> owner (the lease value is "<owner>#<token>")
        for name, agent in sorted(exchange.app.agents.items()):
            for partition in range(agent.partitions):
                lease = await transport.get(agent.lease_key(partition))
                owner = lease.decode() if lease else "(nobody)"
                if lease:
                    holders[agent.lease_key(partition)] = owner.rpartition("#")[0]
                streams = {t.stream(partition) for t in agent.topics}
                mine = [r for r in by_agent.get(name, []) if r.stream in streams]
                lag = max((r.lag for r in mine), default=0)
                rate = sum(rates[(r.consumer, r.stream)] for r in mine)
                report.agents.append((name, partition, owner, lag, rate))
                if lease is None:
                    report.problems.append(f"{name}:{partition} has no owner")
        await _workers(transport, exchange.app.workers_key, holders, report)
        await _layout(exchange, report)
        added = {info.stream: info.added for info in await transport.streams()}
        report.dead_letters = added.get(DLQ_STREAM, 0)
        last = await transport.read_reverse(DLQ_STREAM, 1)
        if last:
            letters = DEAD_LETTER_ENTRIES.decode(last[0][1])
            if letters:
                letter = letters[-1]
                report.last_dead_letter = f"{letter.agent} on {letter.stream}: {letter.error[:70]}"
        await _persister(exchange, report)
    finally:
        await transport.close()


async def _workers(transport: Any, key: str, holders: dict[str, str], report: Report) -> None:
    """The workers announced in `key` (rebalancing workers heartbeat there) that have not expired."""
    now_ms = time.time_ns() // 1_000_000
    report.workers = []
    for member, expiry in await transport.zrange(key):
        owner, _, agents = member.decode().rpartition("|")
        if expiry > now_ms and owner:
            held = sum(1 for holder in holders.values() if holder == owner)
            report.workers.append((owner, agents, held, (expiry - now_ms) / 1000))


async def _layout(exchange: Any, report: Report) -> None:
    """The recorded partition layout, compared with the one this process's environment gives."""
    from pipeline.layout import differences, layout_of, pin_markets, read_layout

    stored = await read_layout(exchange.app.transport)
    if stored is None:
        report.layout = "not recorded yet (recorded by the first worker, API or exchange up)"
        return
    pin_markets(exchange, stored)  # as a starting process does: recorded markets stay where they are
    report.layout = (f"{stored['account_partitions']} accounts partition(s), {stored['market_partitions']} match"
                     f" partition(s), {len(stored.get('markets') or {})} markets")
    problems = differences(stored, layout_of(exchange))
    if problems:
        report.layout += f"; THIS ENVIRONMENT DIFFERS: {'; '.join(problems)}"
        report.problems.append("this environment's partition layout differs from the data's")


async def _persister(exchange: Any, report: Report) -> None:
    from recovery.archive_lag import archive_lag, latest_snapshots
    from recovery.persister import app_streams

    try:
        url = database_url()
        report.persister = await archive_lag(exchange.app.transport, url, app_streams(exchange.app))
        report.snapshots = await latest_snapshots(url)
    except ToolError as exc:
        report.persister_error = str(exc)
    except Exception as exc:
        report.persister_error = f"{type(exc).__name__}: {exc}"
        report.problems.append("PostgreSQL not readable")


async def _api(base_url: str, report: Report) -> None:
    import httpx

    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=3.0) as client:
            response = await client.get("/healthz")
        body = response.json()
        report.api_ok = response.status_code == 200
        lagging = [f"{a['agent']}:{a['partition']}" for a in body.get("agents", [])
                   if not a.get("running") or a.get("lag", 0) > body.get("max_lag", 0)]
        report.api = f"{base_url}: {response.status_code} {'healthy' if report.api_ok else 'unhealthy'}"
        if lagging:
            report.api += f" (not running here or behind: {', '.join(lagging)})"
    except (httpx.HTTPError, ValueError) as exc:
        report.api = f"{base_url}: not answering ({type(exc).__name__})"
    if not report.api_ok:
        report.problems.append("API not healthy")


def _quantile(buckets: list[tuple[float, float]], q: float) -> str:
    """The histogram bucket holding quantile `q`, as "<= N ms" (Prometheus buckets are upper bounds)."""
    if not buckets or buckets[-1][1] <= 0:
        return "-"
    want = q * buckets[-1][1]
    for bound, cumulative in sorted(buckets):
        if cumulative >= want:
            return "> last bucket" if bound == float("inf") else f"<= {bound * 1000:g}"
    return "-"


def api_figures(text: str, report: Report, top_routes: int = 12) -> None:
    """Fill the per-process figures of `report` from the API's `/metrics` exposition `text`."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))

    def by(name: str, *keys: str) -> dict[tuple[str, ...], float]:
        return {tuple(labels.get(k, "") for k in keys): v for labels, v in samples.get(name, [])}

    def buckets(name: str, *keys: str) -> dict[tuple[str, ...], list[tuple[float, float]]]:
        out: dict[tuple[str, ...], list[tuple[float, float]]] = {}
        for labels, v in samples.get(name, []):
            out.setdefault(tuple(labels.get(k, "") for k in keys), []).append((float(labels["le"]), v))
        return out

    batches = by("exchange_agent_batches_total", "agent")
    size_sum, size_count = by("exchange_agent_batch_size_sum", "agent"), by("exchange_agent_batch_size_count", "agent")
    secs_sum, secs_count = (by("exchange_agent_batch_seconds_sum", "agent"),
                            by("exchange_agent_batch_seconds_count", "agent"))
    secs_buckets = buckets("exchange_agent_batch_seconds_bucket", "agent")
    for key, n in sorted(batches.items()):
        report.batches.append((key[0], int(n), size_sum.get(key, 0) / max(1, size_count.get(key, 0)),
                               1000 * secs_sum.get(key, 0) / max(1, secs_count.get(key, 0)),
                               _quantile(secs_buckets.get(key, []), 0.99)))
    count, total = (by("exchange_api_request_seconds_count", "method", "route"),
                    by("exchange_api_request_seconds_sum", "method", "route"))
    route_buckets = buckets("exchange_api_request_seconds_bucket", "method", "route")
    for key, n in sorted(count.items(), key=lambda kv: -kv[1])[:top_routes]:
        report.routes.append((key[0], key[1], int(n), 1000 * total.get(key, 0) / max(1, n),
                              _quantile(route_buckets.get(key, []), 0.5), _quantile(route_buckets.get(key, []), 0.99)))
    report.ws_clients = int(sum(by("exchange_ws_clients", "route").values()))
    report.ws_dropped = int(sum(by("exchange_ws_slow_consumers_dropped_total").values()))


async def _api_metrics(base_url: str, report: Report) -> None:
    import httpx

    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
            response = await client.get("/metrics")
        if response.status_code != 200:
            report.metrics_error = f"/metrics answered {response.status_code}"
            return
        api_figures(response.text, report)
    except (httpx.HTTPError, ValueError) as exc:
        report.metrics_error = f"/metrics not readable ({type(exc).__name__})"


async def look(base_url: str, sample: float) -> Report:
    """Gather one report (services, pipeline, persister, API)."""
    report = Report(datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    config = ServicesConfig.from_env()
    _services(config, report)
    try:
        url = redis_url(config)
    except ToolError as exc:
        report.problems.append(str(exc))
        await _api(base_url, report)
        return report
    await asyncio.gather(_pipeline(url, sample, report), _api(base_url, report), _api_metrics(base_url, report))
    return report


def render(report: Report, out: TextIO | None = None) -> None:
    """Print the report as a few aligned tables (to `out`, default the current `sys.stdout`)."""
    out = sys.stdout if out is None else out
    verdict = "OK" if not report.problems else "PROBLEMS: " + "; ".join(report.problems)
    print(f"exchange status at {report.when}: {verdict}\n", file=out)
    print_table(("service", "state", "url"), report.services, out)
    print(file=out)
    if report.workers:
        print_table(("worker", "agents (by lease)", "leases held", "announced for (s)"),
                    [(o, a, n, round(ttl, 1)) for o, a, n, ttl in report.workers], out)
        print(file=out)
    elif report.workers is not None:
        print("workers: none announced (only a rebalancing `exchange worker` announces itself; `exchange up` and"
              " --no-rebalance workers do not)\n", file=out)
    if report.agents:
        print_table(("agent", "partition", "lease owner", "lag", "events/s"),
                    [(a, p, o, lag, round(rate)) for a, p, o, lag, rate in report.agents], out)
        print(file=out)
    if report.lag:
        print_table(("consumer", "stream", "consumed", "lag", "events/s"),
                    [(c, s, n, lag, round(rate)) for c, s, n, lag, rate in report.lag], out)
        print(file=out)
    if report.layout:
        print(f"partition layout: {report.layout}", file=out)
    if report.dead_letters is not None:
        last = f" (last: {report.last_dead_letter})" if report.last_dead_letter else ""
        print(f"dead letters: {report.dead_letters}{last}", file=out)
    if report.persister is not None:
        behind = {s: n for s, n in report.persister.items() if n}
        detail = ", ".join(f"{s} {n}" for s, n in sorted(behind.items())) or "caught up"
        print(f"persister lag: {sum(report.persister.values())} messages ({detail})", file=out)
    elif report.persister_error:
        print(f"persister lag: unknown ({report.persister_error})", file=out)
    if report.snapshots:
        print_table(("snapshot of", "partition", "age (s)", "capture (ms)", "encode (ms)", "size (bytes)"),
                    [(s.unit, s.partition, round(s.age_s, 1), round(s.capture_ms, 1), round(s.encode_ms, 1), s.size)
                     for s in report.snapshots], out)
    elif report.snapshots is not None:
        print("snapshots: none taken yet", file=out)
    print(f"API: {report.api}", file=out)
    if report.batches:
        print(file=out)
        print_table(("agent (in the API process)", "batches", "mean size", "mean ms", "p99 ms"),
                    [(a, n, round(size, 1), round(ms, 3), p99) for a, n, size, ms, p99 in report.batches], out)
    if report.routes:
        print(file=out)
        print_table(("method", "route", "requests", "mean ms", "p50 ms", "p99 ms"),
                    [(m, r, n, round(ms, 2), p50, p99) for m, r, n, ms, p50, p99 in report.routes], out)
    if report.ws_clients is not None:
        print(f"WebSocket clients: {report.ws_clients} open, {report.ws_dropped} dropped as slow consumers", file=out)
    elif report.metrics_error:
        print(f"API metrics: {report.metrics_error}", file=out)


def cmd_status(args: argparse.Namespace) -> int:
    try:
        ServicesConfig.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        while True:
            report = asyncio.run(look(args.base_url, max(0.05, args.sample)))
            if args.watch:
                sys.stdout.write("\x1b[H\x1b[2J")
            render(report)
            if not args.watch:
                return EXIT_OK if not report.problems else EXIT_UNHEALTHY
            sys.stdout.flush()
            time.sleep(max(0.0, args.interval - args.sample))
    except KeyboardInterrupt:
        return 0
