"""The exchange's topics and what each carries: one place, for tools and schema export."""

from __future__ import annotations

from typing import Any

from pipeline.deadletter import DLQ_STREAM, DeadLetter


def topic_value_types() -> dict[str, Any]:
    """Topic name -> value type, for every topic the exchange uses."""
    topics: dict[str, Any] = {DLQ_STREAM: DeadLetter}
    try:
        from pipeline.agents.topology import TOPICS
    except ModuleNotFoundError:
        return topics
    topics.update({spec.name: spec.value_type for spec in TOPICS})
    return topics
