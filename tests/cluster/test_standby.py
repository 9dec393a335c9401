"""Standby and takeover between two apps (two workers) on one store, and shared leases of co-owners."""

from __future__ import annotations

from collections import Counter

from pipeline.app import App, wait_for_condition
from pipeline.transport.memory import MemoryTransport
from tests.runtime.pipeline_fixture import Number, build_app
from tests.runtime.test_app import outputs


async def test_a_second_worker_stands_by_and_takes_over_on_clean_shutdown() -> None:
    transport = MemoryTransport()
    first, numbers, _ = build_app(transport, partitions=3, lease_ttl_ms=60_000)
    second, _, _ = build_app(transport, partitions=3, lease_ttl_ms=400)
    await first.start()
    await first.wait_running()
    await second.start()
    await second.wait_claimed(timeout=10)  # does not wait for the partitions the first one holds
    assert second.standby == {("double", 0), ("double", 1), ("double", 2)}
    await numbers.send_many((i, Number(i)) for i in range(300))
    await first.wait_caught_up()
    await first.stop()  # releases its leases: the standby takes them within a retry interval
    await second.wait_running(timeout=10)
    assert not second.standby
    await numbers.send_many((i, Number(i)) for i in range(300, 600))
    await second.wait_caught_up()
    await second.stop()
    assert await outputs(transport, second) == Counter(range(600))


async def test_agents_with_one_lease_name_run_in_the_same_worker() -> None:
    transport = MemoryTransport()
    apps = []
    for _ in range(2):
        app = App("test", transport, lease_ttl_ms=2_000)
        topic = app.topic("in", value_type=Number)

        @app.agent(topic, name="a")
        async def a(stream: object) -> None:
            async for _ in stream:  # type: ignore[attr-defined]
                pass

        @app.agent(topic, name="b")
        async def b(stream: object) -> None:
            async for _ in stream:  # type: ignore[attr-defined]
                pass

        app.agents["a"].lease_name = app.agents["b"].lease_name = "shared"
        apps.append(app)
    first, second = apps
    await first.start(["a"])  # holds the shared lease through agent a alone
    await first.wait_running()
    await second.start()
    await second.wait_claimed(timeout=10)
    assert second.standby == {("a", 0), ("b", 0)}  # b waits too: it may not run apart from a
    await first.stop()  # releases the lease: the other app takes both agents
    await wait_for_condition(lambda: _runs_both(second), 10, "the other app to take both")
    await second.stop()


async def _runs_both(app: App) -> bool:
    return {name for (name, _), runner in app.runners.items() if runner.ready} == {"a", "b"}


async def test_max_leases_spreads_partitions_over_workers() -> None:
    transport = MemoryTransport()
    first, numbers, _ = build_app(transport, partitions=4, lease_ttl_ms=60_000)
    second, _, _ = build_app(transport, partitions=4, lease_ttl_ms=60_000)
    first.max_leases = second.max_leases = 2
    await first.start()
    await second.start()
    await first.wait_claimed(timeout=10)

    def running(app: App) -> int:
        return sum(runner.ready for runner in app.runners.values())

    async def spread() -> bool:
        return (running(first), running(second)) == (2, 2)

    await wait_for_condition(spread, 10, "two partitions in each app")
    await numbers.send_many((i, Number(i)) for i in range(200))
    await first.wait_caught_up()
    await first.stop()
    await second.stop()
    assert await outputs(transport, second) == Counter(range(200))
