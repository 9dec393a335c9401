"""In-process counters of the runtime, read by status tools and the metrics endpoint."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class AgentCounters:
    """What one agent has done since the process started."""

    batches: int = 0
    events_in: int = 0
    events_out: int = 0
    dead_letters: int = 0


@dataclass(slots=True)
class Metrics:
    """Counters per agent."""

    agents: dict[str, AgentCounters] = field(default_factory=dict)

    def record_commit(self, agent: str, streams: int, outputs: int) -> None:
        counters = self.agents.get(agent)
        if counters is None:
            counters = self.agents[agent] = AgentCounters()
        counters.batches += 1
        counters.events_out += outputs
