"""Rebalancing: a worker added to a running set gets its fair share of the leases, handed over at
a batch boundary, while the partitions that stay keep trading; it gives them back when it stops."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from pipeline.app import App, fair_share, wait_for_condition
from pipeline.topics import Topic
from pipeline.transport.base import Transport
from pipeline.transport.cluster import open_transport
from pipeline.transport.memory import MemoryTransport
from tests.runtime.pipeline_fixture import Number, build_app
from tests.runtime.test_app import outputs, table_counts


def test_fair_share_is_the_ceiling_of_leases_per_live_worker() -> None:
    assert fair_share(6, 1) == 6
    assert fair_share(6, 2) == 3
    assert fair_share(6, 4) == 2
    assert fair_share(7, 2) == 4
    assert fair_share(2, 5) == 1  # more workers than leases: each may still hold one
    assert fair_share(6, 0) == 6  # nobody counted (heartbeat not read yet): this worker alone
    for leases in range(1, 12):
        for workers in range(1, 8):
            share = fair_share(leases, workers)
            assert share == math.ceil(leases / workers)
            assert share * workers >= leases  # the shares always cover every lease


async def test_leases_above_the_share_are_given_only_to_a_live_other_worker() -> None:
    app, _, _ = build_app(MemoryTransport(), partitions=4, lease_ttl_ms=60_000)
    app.rebalance = True
    app.rebalance_hold_s = 0.0
    await app.start()
    await app.wait_running()
    assert app.live_workers == 1 and app.claim_limit() == 4
    assert app.leases_to_give() == []  # alone: never give anything away
    app.live_workers = 2
    assert app.claim_limit() == 2
    assert len(app.leases_to_give()) == 2
    app.live_workers = 3  # share 2 of 4: still two to give, not more
    assert len(app.leases_to_give()) == 2
    app.rebalance_hold_s = 3600.0  # held too briefly: kept (no flapping right after a claim)
    assert app.leases_to_give() == []
    app.rebalance_hold_s = 0.0
    newest = max(app._acquired_at, key=app._acquired_at.__getitem__)
    app.live_workers = 4  # share 1: three to give, the most recently acquired first
    assert app.leases_to_give()[0] == newest
    await app.stop()


def _forwarded(transport: Transport) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await transport.undelivered() == 0  # type: ignore[attr-defined]
    return check


def _running(app: App) -> set[tuple[str, int]]:
    return {key for key, runner in app.runners.items() if runner.ready}


@pytest.mark.parametrize("store", ["valkey", "cluster"])
async def test_a_worker_added_later_gets_half_the_leases_and_gives_them_back(
    store: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue("redis_flush" if store == "valkey" else "cluster_url")
    ttl = 900
    first_transport, second_transport = open_transport(url), open_transport(url)
    first, numbers, _ = build_app(first_transport, partitions=6, lease_ttl_ms=ttl, batch_size=50)
    second, _, _ = build_app(second_transport, partitions=6, lease_ttl_ms=ttl, batch_size=50)
    for app in (first, second):
        app.rebalance = True
        app.rebalance_hold_s = 0.3
    await first.start()
    await first.wait_running()
    assert len(_running(first)) == 6
    sent = 0
    feeding = True

    async def feed(topic: Topic[Number]) -> None:  # a steady order flow through every partition
        nonlocal sent
        while feeding:
            await topic.send_many((i, Number(i)) for i in range(sent, sent + 30))
            sent += 30
            await asyncio.sleep(0.01)

    feeder = asyncio.create_task(feed(numbers))
    try:
        before = dict(first.runners)
        await second.start()
        await second.wait_claimed(timeout=10)

        async def halves() -> bool:
            return len(_running(first)) == 3 and len(_running(second)) == 3

        await wait_for_condition(halves, 20, "each worker to run three partitions")
        assert first.live_workers == second.live_workers == 2
        kept = _running(first)
        assert not kept & _running(second)
        # the partitions that stayed were never stopped: same runners, still processing
        assert all(first.runners[key] is before[key] for key in kept)
        done = {key: first.runners[key].processed for key in kept}

        async def kept_trading() -> bool:
            return all(first.runners[key].processed > done[key] for key in kept)

        await wait_for_condition(kept_trading, 10, "the partitions that stayed to go on processing")
        # no flapping: three more heartbeats later the split is the same
        await asyncio.sleep(3 * ttl / 1000)
        assert _running(first) == kept and len(_running(second)) == 3

        await second.stop()  # hands its three back: the first worker takes everything again

        async def all_back() -> bool:
            return len(_running(first)) == 6

        await wait_for_condition(all_back, 20, "the first worker to run every partition again")
    finally:
        feeding = False
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
    await first.wait_caught_up(timeout=30)
    if store == "cluster":
        await wait_for_condition(_forwarded(first_transport), 30, "the outboxes to drain")
    assert sent > 0
    assert await outputs(first_transport, first) == Counter(range(sent))  # nothing lost or doubled
    assert table_counts(first) == Counter(i % 5 for i in range(sent))  # state moved intact both ways
    await first.stop()
    await first_transport.close()
    await second_transport.close()


async def test_agents_sharing_a_lease_are_handed_over_together() -> None:
    transport = MemoryTransport()
    apps = []
    for _ in range(2):
        app = App("test", transport, lease_ttl_ms=1_000)
        pairs = app.topic("pairs", value_type=Number, partitions=2)
        other = app.topic("other", value_type=Number, partitions=2)

        for name, topic in (("a", pairs), ("b", pairs), ("c", other)):
            @app.agent(topic, name=name)
            async def consume(stream: object) -> None:
                async for _ in stream:  # type: ignore[attr-defined]
                    pass

        app.agents["a"].lease_name = app.agents["b"].lease_name = "shared"
        app.rebalance = True
        app.rebalance_hold_s = 0.0
        apps.append(app)
    first, second = apps
    await first.start()
    await first.wait_running()
    await second.start()

    async def split() -> bool:  # 4 leases (shared:0, shared:1, c:0, c:1): two each
        return len(first._local_leases) == 2 and len(second._local_leases) == 2 and all(
            len(_running(app)) == sum(len(first._lease_holders[key]) for key in app._local_leases)
            for app in apps)

    await wait_for_condition(split, 10, "two leases in each app")
    for partition in range(2):  # a and b of one partition always run in the same app
        assert [("a", partition) in _running(app) for app in apps] == [
            ("b", partition) in _running(app) for app in apps]
    await second.stop()

    async def back() -> bool:
        return len(_running(first)) == 6

    await wait_for_condition(back, 10, "the first app to run everything again")
    await first.stop()


async def test_three_workers_joining_one_by_one_end_with_two_leases_each(redis_flush: str) -> None:
    ttl = 600
    transports = [open_transport(redis_flush) for _ in range(3)]
    apps = [build_app(transport, partitions=6, lease_ttl_ms=ttl)[0] for transport in transports]
    for app in apps:
        app.rebalance = True
        app.rebalance_hold_s = 0.2

    def split() -> list[int]:
        return [len(_running(app)) for app in apps]

    async def spread(expected: list[int]) -> None:
        async def check() -> bool:
            return split() == expected
        await wait_for_condition(check, 20, f"leases spread as {expected}")

    await apps[0].start()
    await spread([6, 0, 0])
    await apps[1].start()
    await spread([3, 3, 0])
    await apps[2].start()
    await spread([2, 2, 2])
    owned = [_running(app) for app in apps]
    await asyncio.sleep(3 * ttl / 1000)  # no flapping: three heartbeats later, nothing moved
    assert [_running(app) for app in apps] == owned
    for app in reversed(apps):
        await app.stop()
    for transport in transports:
        await transport.close()


async def test_workers_running_other_agents_do_not_shrink_a_share() -> None:
    """The fair share is counted among the workers running the same agents only: a worker running
    `match` alone next to workers running other agents claims every match partition at once, and a
    second match worker splits them with it while the other workers keep theirs.

    (With one count over every worker of the app, the match worker claimed only its "share" and
    left the rest to the two-lifetime orphan rule: restarted often enough, never.)"""
    transport = MemoryTransport()

    def worker() -> App:
        app = App("test", transport, lease_ttl_ms=6_000)  # heartbeats every 2 s; orphans taken after 12 s
        for name in ("match", "risk", "publish"):
            topic = app.topic(f"{name}.in", value_type=Number, partitions=2)

            @app.agent(topic, name=name)
            async def consume(stream: object) -> None:
                async for _ in stream:  # type: ignore[attr-defined]
                    pass
        app.rebalance = True
        app.rebalance_hold_s = 0.0
        return app

    risk, publish, match, second_match = worker(), worker(), worker(), worker()
    for app, agents in ((risk, ["risk"]), (publish, ["publish"]), (match, ["match"])):
        await app.start(agents)
    for app in (risk, publish, match):
        await app.wait_running(timeout=5)  # every partition of its agents, without waiting for orphans
    assert match.live_workers == 1 and len(_running(match)) == 2

    await second_match.start(["match"])

    async def split() -> bool:
        return len(_running(match)) == 1 and len(_running(second_match)) == 1

    await wait_for_condition(split, 11, "the two match workers to run one match partition each")
    assert match.live_workers == second_match.live_workers == 2
    assert len(_running(risk)) == len(_running(publish)) == 2  # other families untouched
    for app in (second_match, match, publish, risk):
        await app.stop()
