"""Fixtures for the cluster tests: one local 3-master Valkey Cluster per test session.

- `cluster` (session): a `ValkeyCluster` of 3 masters on free loopback ports in a temporary
  folder, stopped and removed at the end (or `TEST_CLUSTER_URL`, an existing cluster: then
  nothing is started and the tests that kill nodes cannot run).
- `cluster_url` (function): the cluster's `redis+cluster://` URL, every master flushed first.
- `cluster_transport` (function): a `ClusterTransport` on the flushed cluster.
- `transport` (function): the same, except that `commit` returns once the outbox it wrote is
  forwarded: the transport contract tests (imported from tests/runtime) then hold on the
  cluster too (there, outputs to other partitions arrive shortly *after* the commit).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from infra.services.cluster import ValkeyCluster, free_cluster_ports
from pipeline.transport.base import Commit
from pipeline.transport.cluster import ClusterTransport
from tests.conftest import make_service_dir


@pytest.fixture(scope="session")
def cluster() -> Iterator[ValkeyCluster]:
    """A running 3-master cluster for the session."""
    folder = make_service_dir("exchange-test-cluster-")
    nodes = ValkeyCluster(folder, free_cluster_ports(3))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def cluster_url(cluster: ValkeyCluster) -> str:
    """The cluster's URL, with every master emptied (FLUSHALL) first."""
    for port in cluster.ports:
        client = redis.Redis(port=port)
        try:
            client.flushall()
        finally:
            client.close()
    return cluster.url


@pytest.fixture
async def cluster_transport(cluster_url: str) -> AsyncIterator[ClusterTransport]:
    """A `ClusterTransport` on the emptied cluster."""
    opened = ClusterTransport(cluster_url)
    yield opened
    await opened.close()


class SettledClusterTransport(ClusterTransport):
    """A `ClusterTransport` whose commits return after their outbox entries are forwarded."""

    async def commit(self, commit: Commit) -> None:
        await super().commit(commit)
        await self.drain()


@pytest.fixture
async def transport(cluster_url: str) -> AsyncIterator[ClusterTransport]:
    """A `SettledClusterTransport` on the emptied cluster (for the shared contract tests)."""
    opened = SettledClusterTransport(cluster_url)
    yield opened
    await opened.close()
