"""`GET /metrics`: the exchange's health figures in Prometheus text format.

Figures that must be right whichever process runs the agents come from Redis at
scrape time (`pipeline.metrics.consumer_lag`: consumed counters and lag per
consumer and stream, messages added per stream, leases, dead letters) and from
PostgreSQL (the persister's archive positions, `recovery.archive_lag`). Figures of
this process come from memory: the agents it runs (`App.metrics`: batches, batch
sizes and processing time), its HTTP requests by route and its WebSocket clients
(the middleware below), and slow consumers its hub dropped.

Series (all prefixed ``exchange_``):

| name | type | labels | source |
|---|---|---|---|
| `agent_events_consumed_total` | counter | agent, stream | Redis (`rate()` = events/s) |
| `stream_messages_added_total` | counter | stream | Redis |
| `consumer_lag_messages` | gauge | consumer, stream | Redis |
| `agent_lease_held` | gauge | agent, partition, owner | Redis |
| `dead_letters_total` | counter | | Redis (`dlq` stream) |
| `persister_lag_messages` | gauge | stream | PostgreSQL + Redis |
| `snapshot_age_seconds`, `snapshot_size_bytes` | gauge | agent, partition | PostgreSQL (latest snapshot) |
| `snapshot_capture_seconds`, `snapshot_encode_seconds` | gauge | agent, partition | PostgreSQL (latest snapshot) |
| `agent_batches_total`, `agent_messages_in_total` | counter | agent | this process |
| `agent_messages_out_total`, `agent_dead_letters_total` | counter | agent | this process |
| `agent_batch_size` | histogram | agent | this process |
| `agent_batch_seconds` | histogram | agent | this process |
| `api_request_seconds` | histogram | method, route | this process |
| `api_requests_total` | counter | method, route, status | this process |
| `ws_clients` | gauge | route | this process |
| `ws_slow_consumers_dropped_total` | counter | | this process |
| `metrics_scrape_errors_total` | counter | source | this process |
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from litestar import Response, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from pipeline.deadletter import DLQ_STREAM
from pipeline.exchange import Exchange
from pipeline.metrics import ConsumerLag, consumer_lag
from pipeline.metrics import Histogram as RuntimeHistogram

log = logging.getLogger(__name__)

REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds (seconds) of the request latency histogram."""


def metrics_database_url(redis_url: str, environ: Any = os.environ) -> str | None:
    """Where the persister archives: DATABASE_URL, else the embedded PostgreSQL that sits next to
    the embedded Valkey this API uses (same data dir), else None (no persister figures)."""
    url = str(environ.get("DATABASE_URL", "")).strip()
    if url:
        return url
    from infra.config import ServicesConfig  # the operator's layout; imported only when scraped
    from infra.services.embedded import EmbeddedServices

    try:
        services = EmbeddedServices(ServicesConfig.from_env(environ))
        if services.valkey.url == redis_url:
            return services.postgres.url
    except Exception:
        log.debug("no embedded PostgreSQL found for the metrics", exc_info=True)
    return None


@dataclass
class ApiMetrics:
    """This process's own metrics (a registry per app: no global state) and the scrape's sources."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    database_url: str | None = None
    database_resolved: bool = False

    def __post_init__(self) -> None:
        self.request_seconds = Histogram("exchange_api_request_seconds", "HTTP request latency by route",
                                         ["method", "route"], buckets=REQUEST_BUCKETS, registry=self.registry)
        self.requests = Counter("exchange_api_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.ws_clients = Gauge("exchange_ws_clients", "Open WebSocket connections by route", ["route"],
                                registry=self.registry)
        self.scrape_errors = Counter("exchange_metrics_scrape_errors", "Sources a scrape could not read",
                                     ["source"], registry=self.registry)
        self._children: dict[tuple[str, str], Any] = {}
        self._counters: dict[tuple[str, str, int], Any] = {}

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware: request latency and count by route template; open WebSockets by route."""

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            route = str(scope.get("path_template") or "unmatched")
            if scope["type"] == ScopeType.WEBSOCKET:
                gauge = self.ws_clients.labels(route)
                gauge.inc()
                try:
                    await app(scope, receive, send)
                finally:
                    gauge.dec()
                return
            method = str(scope.get("method", ""))
            start = time.perf_counter()
            status = [500]

            async def send_wrapper(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = int(message["status"])
                await send(message)

            try:
                await app(scope, receive, send_wrapper)
            finally:
                key = (method, route)
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = self.request_seconds.labels(method, route)
                child.observe(time.perf_counter() - start)
                counted = (method, route, status[0])
                counter = self._counters.get(counted)
                if counter is None:  # labels() per request was a measurable share of a small request
                    counter = self._counters[counted] = self.requests.labels(method, route, str(status[0]))
                counter.inc()

        return middleware


class _Families:
    """A scrape: this process's registry plus the metric families read for this scrape."""

    def __init__(self, registry: CollectorRegistry, families: list[Any]) -> None:
        self.registry = registry
        self.families = families

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()
        yield from self.families


def _histogram(family: HistogramMetricFamily, labels: list[str], hist: RuntimeHistogram) -> None:
    buckets = [("+Inf" if bound == float("inf") else repr(float(bound)), float(n)) for bound, n in hist.cumulative()]
    family.add_metric(labels, buckets, hist.total)


def runtime_families(exchange: Exchange) -> list[Any]:
    """In-process counters and histograms of the agents this process runs."""
    batches = CounterMetricFamily("exchange_agent_batches", "Batches committed (agents in this process)",
                                  labels=["agent"])
    msgs_in = CounterMetricFamily("exchange_agent_messages_in", "Messages consumed (agents in this process)",
                                  labels=["agent"])
    msgs_out = CounterMetricFamily("exchange_agent_messages_out", "Messages emitted (agents in this process)",
                                   labels=["agent"])
    dead = CounterMetricFamily("exchange_agent_dead_letters", "Messages dead-lettered (agents in this process)",
                               labels=["agent"])
    sizes = HistogramMetricFamily("exchange_agent_batch_size", "Messages per batch (agents in this process)",
                                  labels=["agent"])
    seconds = HistogramMetricFamily("exchange_agent_batch_seconds",
                                    "Batch time from read to commit, seconds (agents in this process)",
                                    labels=["agent"])
    for name, counters in sorted(exchange.app.metrics.agents.items()):
        batches.add_metric([name], counters.batches)
        msgs_in.add_metric([name], counters.events_in)
        msgs_out.add_metric([name], counters.events_out)
        dead.add_metric([name], counters.dead_letters)
        _histogram(sizes, [name], counters.batch_sizes)
        _histogram(seconds, [name], counters.batch_seconds)
    return [batches, msgs_in, msgs_out, dead, sizes, seconds]


def lag_families(rows: Iterable[ConsumerLag], added: dict[str, int]) -> list[Any]:
    """Consumed counters and lag per consumer and stream, messages added per stream, dead letters."""
    consumed = CounterMetricFamily("exchange_agent_events_consumed",
                                   "Messages a consumer has committed on a stream (rate = events/s)",
                                   labels=["agent", "stream"])
    lag = GaugeMetricFamily("exchange_consumer_lag_messages", "Messages added to a stream not yet committed by "
                            "a consumer", labels=["consumer", "stream"])
    for row in rows:
        consumed.add_metric([row.consumer, row.stream], row.consumed)
        lag.add_metric([row.consumer, row.stream], row.lag)
    streams = CounterMetricFamily("exchange_stream_messages_added", "Messages ever added to a stream",
                                  labels=["stream"])
    for stream, n in sorted(added.items()):
        streams.add_metric([stream], n)
    dead = CounterMetricFamily("exchange_dead_letters", "Messages sent to the dead-letter stream")
    dead.add_metric([], added.get(DLQ_STREAM, 0))
    return [consumed, lag, streams, dead]


async def lease_family(exchange: Exchange) -> Any:
    """1 per (agent, partition) whose lease is held, with the holder; 0 when nobody holds it."""
    held = GaugeMetricFamily("exchange_agent_lease_held", "Whether an agent partition's lease is held, and by whom",
                             labels=["agent", "partition", "owner"])
    for name, agent in sorted(exchange.app.agents.items()):
        for partition in range(agent.partitions):
            value = await exchange.app.transport.get(agent.lease_key(partition))
            owner = value.decode().rsplit("#", 1)[0] if value else ""
            held.add_metric([name, str(partition), owner], 1 if value else 0)
    return held


async def persister_family(exchange: Exchange, database_url: str) -> Any:
    from recovery.archive_lag import archive_lag
    from recovery.persister import app_streams

    lag = GaugeMetricFamily("exchange_persister_lag_messages", "Messages of a stream not archived in PostgreSQL yet",
                            labels=["stream"])
    for stream, n in (await archive_lag(exchange.app.transport, database_url, app_streams(exchange.app))).items():
        lag.add_metric([stream], n)
    return lag


async def snapshot_families(database_url: str) -> list[Any]:
    from recovery.archive_lag import latest_snapshots

    names = (("age", "Seconds since the latest snapshot was taken"),
             ("capture", "Seconds the agent paused to capture its latest snapshot"),
             ("encode", "Seconds spent encoding and compressing the latest snapshot"))
    families = {name: GaugeMetricFamily(f"exchange_snapshot_{name}_seconds", text, labels=["agent", "partition"])
                for name, text in names}
    size = GaugeMetricFamily("exchange_snapshot_size_bytes", "Compressed size of the latest snapshot",
                             labels=["agent", "partition"])
    for snap in await latest_snapshots(database_url):
        labels = [snap.unit, str(snap.partition)]
        families["age"].add_metric(labels, snap.age_s)
        families["capture"].add_metric(labels, snap.capture_ms / 1000)
        families["encode"].add_metric(labels, snap.encode_ms / 1000)
        size.add_metric(labels, snap.size)
    return [*families.values(), size]


async def scrape(state: State) -> bytes:
    """The whole exposition text, reading Redis and PostgreSQL now."""
    exchange: Exchange = state.exchange
    metrics: ApiMetrics = state.metrics
    families: list[Any] = runtime_families(exchange)
    transport = exchange.app.transport
    try:
        added = {info.stream: info.added for info in await transport.streams()}
        families += lag_families(await consumer_lag(transport), added)
        families.append(await lease_family(exchange))
    except Exception:
        log.warning("metrics: cannot read the stream store", exc_info=True)
        metrics.scrape_errors.labels("redis").inc()
    dropped = CounterMetricFamily("exchange_ws_slow_consumers_dropped",
                                  "WebSocket clients closed because they fell too far behind")
    dropped.add_metric([], getattr(state.hub, "dropped_slow", 0))
    families.append(dropped)
    if not metrics.database_resolved:
        metrics.database_url = metrics_database_url(str(getattr(transport, "url", "")))
        metrics.database_resolved = True
    if metrics.database_url:
        try:
            families.append(await persister_family(exchange, metrics.database_url))
            families += await snapshot_families(metrics.database_url)
        except Exception:
            log.warning("metrics: cannot read the archive positions", exc_info=True)
            metrics.scrape_errors.labels("postgres").inc()
    collector: Collector = _Families(metrics.registry, families)
    return generate_latest(collector)


@get("/metrics", include_in_schema=False)
async def metrics_endpoint(state: State) -> Response[bytes]:
    """Prometheus text exposition of the exchange's metrics."""
    return Response(await scrape(state), media_type=CONTENT_TYPE_LATEST)
