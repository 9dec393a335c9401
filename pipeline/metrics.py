"""Runtime metrics: in-process counters and histograms per agent, and lag read from the stream store.

Two kinds of figures, for the metrics endpoint (`api.metrics`) and `exchange status`:

- `Metrics` (one per `App`): what the agents running *in this process* did -- batches,
  messages in and out, dead letters, histograms of batch sizes and batch processing
  time (from the batch being read to its commit returning). Plain Python, no
  dependency, cheap enough for the hot path (one call per batch).
- `consumer_lag(transport)`: committed position, messages consumed and lag of every
  consumer on every stream, from the counters the transport keeps next to the streams
  (``meta:<stream>`` added, ``pos:<consumer>`` consumed). These are right whichever
  process runs the agents, so they are what tools and the endpoint report as lag and
  as events/s (consumed counts are monotonic: a rate over them is a consumer's throughput).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from pipeline.transport.base import Transport

BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 50000)
"""Upper bounds of the batch-size histogram (messages read in one batch)."""
BATCH_SECONDS_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)
"""Upper bounds (seconds) of the batch processing time histogram."""


@dataclass(slots=True)
class Histogram:
    """Cumulative-bucket histogram, the Prometheus way (`counts[i]`: observations <= `bounds[i]`, not cumulated)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    """Observations per bucket; the last one is above every bound (+Inf)."""
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= it) for every bucket, ending with (inf, count)."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


def _batch_sizes() -> Histogram:
    return Histogram(BATCH_SIZE_BUCKETS)


def _batch_seconds() -> Histogram:
    return Histogram(BATCH_SECONDS_BUCKETS)


@dataclass(slots=True)
class AgentCounters:
    """What one agent has done in this process since it started."""

    batches: int = 0
    events_in: int = 0
    events_out: int = 0
    dead_letters: int = 0
    batch_sizes: Histogram = field(default_factory=_batch_sizes)
    batch_seconds: Histogram = field(default_factory=_batch_seconds)


@dataclass(slots=True)
class Metrics:
    """Counters per agent (agents running in this process only)."""

    agents: dict[str, AgentCounters] = field(default_factory=dict)

    def agent(self, name: str) -> AgentCounters:
        counters = self.agents.get(name)
        if counters is None:
            counters = self.agents[name] = AgentCounters()
        return counters

    def record_commit(self, agent: str, events_in: int, outputs: int, seconds: float | None = None) -> None:
        """One committed batch: `events_in` messages consumed, `outputs` entries written, in `seconds`."""
        counters = self.agent(agent)
        counters.batches += 1
        counters.events_in += events_in
        counters.events_out += outputs
        if events_in:
            counters.batch_sizes.observe(events_in)
        if seconds is not None:
            counters.batch_seconds.observe(seconds)

    def record_dead_letter(self, agent: str) -> None:
        self.agent(agent).dead_letters += 1


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    """One consumer's committed progress on one stream."""

    consumer: str
    stream: str
    last_id: str | None
    """Last committed entry id (None: registered, nothing committed yet)."""
    consumed: int
    """Messages consumed so far (monotonic)."""
    added: int
    """Messages ever added to the stream."""

    @property
    def lag(self) -> int:
        return self.added - self.consumed


async def consumer_lag(transport: Transport) -> list[ConsumerLag]:
    """Every consumer's position and lag on every stream it reads or has read, from the stream store."""
    added = {info.stream: info.added for info in await transport.streams()}
    registered: dict[str, set[str]] = {}
    for stream in added:
        for consumer in await transport.consumers(stream):
            registered.setdefault(consumer, set()).add(stream)
    rows = []
    for consumer in sorted({*await transport.all_consumers(), *registered}):
        positions = await transport.positions(consumer)
        for stream in sorted({*positions, *registered.get(consumer, ())}):
            position = positions.get(stream)
            rows.append(ConsumerLag(consumer, stream, position.last_id if position else None,
                                    position.consumed if position else 0, added.get(stream, 0)))
    return rows
