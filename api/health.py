"""Health of the pipeline as the API reports it: every agent running and caught up."""

from __future__ import annotations

import msgspec

from pipeline.app import App


class AgentHealth(msgspec.Struct, frozen=True):
    """One agent partition's state."""

    agent: str
    partition: int
    running: bool
    lag: int


class Health(msgspec.Struct, frozen=True):
    """The answer of `GET /healthz`."""

    ok: bool
    agents: list[AgentHealth]
    max_lag: int


async def pipeline_health(app: App, max_lag: int) -> Health:
    """Whether every agent of `app` runs here and lags at most `max_lag` entries on each input."""
    lags = await app.lag()
    rows = []
    for name, agent in sorted(app.agents.items()):
        for partition in range(agent.partitions):
            runner = app.runners.get((name, partition))
            lag = max((lags.get((name, t.stream(partition)), 0) for t in agent.topics), default=0)
            rows.append(AgentHealth(name, partition, bool(runner and runner.ready), lag))
    ok = all(row.running and row.lag <= max_lag for row in rows)
    return Health(ok, rows, max_lag)
