"""The Redis Streams transport on a Valkey/Redis Cluster (redis-py's cluster client).

Same contract and code as `RedisTransport` (`RedisTransportBase`), with every key of a
stream, lease or partition prefixed by its hash tag (`pipeline.transport.slots`): each
batch commit runs in the slot of its partition's hash tag (``{p<N>}``): input offsets,
lease check, table changelogs and outputs to partition N of any topic, atomically, in one
round trip.

Outputs to another tag (re-keying: risk emits orders keyed by account into
``orders.accepted`` keyed by market) and read-model writes whose key hashes elsewhere
cannot join that script. They go, in the same atomic commit, into the partition's
**outbox** stream (``{p<N>}outbox:<N>``), one entry per destination; a forwarder
moves them on:

- one forwarder task per outbox, in each process that holds a lease of that partition
  or committed into it (several at once are harmless);
- an entry is applied by one script in the destination slot that also records the
  entry's id in the destination's ``fwd`` hash (field: the outbox), and skips entries
  at or below that id: forwarding is idempotent, so a forwarder that dies between
  applying and deleting an entry, or two forwarders racing, never apply it twice;
- applied entries are deleted from the outbox (`undelivered` counts what is left).

Order is kept per (outbox, destination): a destination stream receives one source
partition's entries in commit order, as on a single node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Iterable
from typing import Any

from redis.asyncio.cluster import RedisCluster

from pipeline.errors import TransportError
from pipeline.transport import slots
from pipeline.transport.base import WRITE_COMMANDS, Commit, Entry, Transport
from pipeline.transport.redis import RedisTransportBase, _bytes, _text

log = logging.getLogger(__name__)

CLUSTER_SCHEME = "redis+cluster://"

# Apply outbox entries on the node serving their destinations, skipping those already applied.
# ARGV[1]: the outbox; then (fwd hash, entry id, entry) triples; KEYS[1] is the first fwd hash (it routes
# the call); the others may be in other slots of the same node (allow-cross-slot-keys).
# An entry: u32 count of operations, then each: 'x' stream meta messages n (payload)*n | 'w' argc (arg)*argc,
# every string as u32 length + bytes.
_FORWARD = """#!lua flags=allow-cross-slot-keys
local function later(a, b)
  if not b then return true end
  local ams, aseq = string.match(a, '(%d+)-(%d+)')
  local bms, bseq = string.match(b, '(%d+)-(%d+)')
  ams, bms = tonumber(ams), tonumber(bms)
  if ams ~= bms then return ams > bms end
  return tonumber(aseq) > tonumber(bseq)
end
local applied = 0
local seen = {}
for j = 2, #ARGV, 3 do
  local marker, id, blob = ARGV[j], ARGV[j + 1], ARGV[j + 2]
  if seen[marker] == nil then seen[marker] = redis.call('HGET', marker, ARGV[1]) or false end
  local last = seen[marker]
  if later(id, last or nil) then
    local at = 1
    local function str()
      local size
      size, at = struct.unpack('>I4', blob, at)
      local s = string.sub(blob, at, at + size - 1)
      at = at + size
      return s
    end
    local ops
    ops, at = struct.unpack('>I4', blob, at)
    for _ = 1, ops do
      local kind = str()
      if kind == 'x' then
        local stream, meta = str(), str()
        local messages, n
        messages, at = struct.unpack('>I4', blob, at)
        n, at = struct.unpack('>I4', blob, at)
        for _ = 1, n do redis.call('XADD', stream, '*', 'd', str()) end
        redis.call('HINCRBY', meta, 'added', messages)
      else
        local argc
        argc, at = struct.unpack('>I4', blob, at)
        local args = {}
        for k = 1, argc do args[k] = str() end
        redis.call(unpack(args))
      end
    end
    seen[marker] = id
    redis.call('HSET', marker, ARGV[1], id)
    applied = applied + 1
  end
end
return applied
"""


def _pack(parts: Iterable[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


class _Outbound:
    """One commit's operations bound for one destination (its fwd hash), encoded as an outbox entry."""

    __slots__ = ("chunks", "ops")

    def __init__(self) -> None:
        self.ops = 0
        self.chunks: list[bytes] = []

    def stream(self, stream: str, payloads: list[bytes], messages: int) -> None:
        self.ops += 1
        self.chunks += (_pack((b"x", slots.physical(stream).encode(), f"{slots.tag(stream)}meta:{stream}".encode())),
                        struct.pack(">II", messages, len(payloads)), _pack(payloads))

    def write(self, write: tuple[str | bytes, ...]) -> None:
        self.ops += 1
        self.chunks += (_pack((b"w",)), struct.pack(">I", len(write)),
                        _pack(_bytes(p) if isinstance(p, (str, bytes)) else str(p).encode() for p in write))

    def encode(self, destination: str) -> bytes:
        return _pack((destination.encode(),)) + struct.pack(">I", self.ops) + b"".join(self.chunks)


def _decode_destination(entry: bytes) -> tuple[str, bytes]:
    (size,) = struct.unpack_from(">I", entry)
    return entry[4:4 + size].decode(), entry[4 + size:]


def cluster_url(url: str) -> str:
    """A `redis+cluster://` URL as redis-py's cluster client takes it (plain `redis://`)."""
    return "redis://" + url[len(CLUSTER_SCHEME):] if url.startswith(CLUSTER_SCHEME) else url


class ClusterTransport(RedisTransportBase[RedisCluster]):
    """Streams in a Valkey/Redis Cluster; a batch commit is one script in its partition's slot."""

    def __init__(self, url: str, *, max_connections: int = 256) -> None:
        # No socket timeout (as the single-server client): the cluster client's default, 5 s, made it
        # re-send a slow commit under load; commits are idempotent now, but producers' XADDs are not.
        super().__init__(RedisCluster.from_url(
            cluster_url(url), decode_responses=False, max_connections=max_connections, socket_timeout=None
        ), url)
        self._forward = self._redis.register_script(_FORWARD)
        self._forwarders: dict[str, asyncio.Task[None]] = {}
        self._closing = False
        self._known_tags: set[tuple[str, str]] = set()  # (consumer, tag) already in pos-tags:<consumer>

    _tag = staticmethod(slots.tag)  # every key of a stream, lease or partition starts with its hash tag

    def _reply(self, reply: Any) -> list[tuple[str, list[Entry]]]:
        """The entries of a raw XREAD reply, by logical stream name."""
        return [(slots.logical(key), entries) for key, entries in super()._reply(reply)]

    # -- reading -----------------------------------------------------------------------

    async def read(self, positions: dict[str, str], count: int, block_ms: int) -> list[tuple[str, list[Entry]]]:
        by_tag: dict[str, dict[str, str]] = {}
        for stream, position in positions.items():
            by_tag.setdefault(slots.tag(stream), {})[slots.physical(stream)] = position
        if len(by_tag) == 1:
            (physical,) = by_tag.values()
            return self._reply(await self._redis.xread(physical, count=count, block=block_ms))  # type: ignore[arg-type]
        # streams of several partitions: one read per slot, the first without blocking
        result: list[tuple[str, list[Entry]]] = []
        for physical in by_tag.values():
            result += self._reply(await self._redis.xread(physical, count=count))  # type: ignore[arg-type]
        if not result and block_ms:
            await asyncio.sleep(min(block_ms, 50) / 1000)
        return result

    # -- committing ----------------------------------------------------------------------

    def _home(self, commit: Commit) -> str:
        if commit.lease:
            return slots.tag(commit.lease[0])
        for stream in commit.offsets:
            return slots.tag(stream)
        for stream, _ in commit.outputs:
            return slots.tag(stream)
        return slots.tag("outbox:0")

    async def commit_read(
        self, commit: Commit, positions: dict[str, str], count: int
    ) -> list[tuple[str, list[Entry]]]:
        """Commit a batch in its partition's slot (other destinations via its outbox), then read on."""
        home = self._home(commit)
        if any(slots.tag(s) != home for s in positions):
            positions, count = {}, 0  # no read-ahead across slots
        for stream in commit.offsets:
            if slots.tag(stream) != home:
                raise TransportError(f"{commit.consumer}: input {stream} is not in partition tag {home}")
        local = self._via_outbox(commit, home)
        entries = await self._commit_at(local, positions, count, home)
        if local is not commit:
            self._ensure_forwarder(home)
        if commit.offsets and (commit.consumer, home) not in self._known_tags:
            await self._redis.sadd(f"pos-tags:{commit.consumer}", home)  # so `positions` finds this hash
            self._known_tags.add((commit.consumer, home))
        return entries

    def _via_outbox(self, commit: Commit, home: str) -> Commit:
        """`commit` itself if it stays in `home`'s slot; else its part there, plus the rest as outbox entries.

        The outbox entries (one per destination: a tag's or a slot's ``fwd`` hash) go last,
        as outputs to the partition's outbox stream.
        """
        grouped: dict[str, list[bytes]] = {}
        for stream, data in commit.outputs:
            grouped.setdefault(stream, []).append(data)
        outbound: dict[str, _Outbound] = {}
        elsewhere: set[str] = set()
        for stream, payloads in grouped.items():
            stream_tag = slots.tag(stream)
            if stream_tag != home:
                elsewhere.add(stream)
                messages = commit.messages.get(stream, len(payloads))
                outbound.setdefault(stream_tag + "fwd", _Outbound()).stream(stream, payloads, messages)
        home_slot = slots.tag_slot(home)
        local: list[tuple[str | bytes, ...]] = []
        for write in commit.writes:
            if write[0] not in WRITE_COMMANDS:
                raise ValueError(f"unsupported write {write[0]!r}")
            target = slots.slot(write[1])
            if target == home_slot:
                local.append(write)
            else:
                outbound.setdefault(slots.marker_key(target), _Outbound()).write(write)
        if not outbound:
            return commit
        outbox = f"outbox:{home[2:-1]}"
        outputs = [(stream, data) for stream, data in commit.outputs if stream not in elsewhere]
        outputs += ((outbox, out.encode(destination)) for destination, out in outbound.items())
        return Commit(commit.consumer, commit.offsets, outputs, commit.lease, local, commit.messages)

    # -- the outbox forwarder -----------------------------------------------------------------

    def _ensure_forwarder(self, home: str) -> None:
        task = self._forwarders.get(home)
        if (task is None or task.done()) and not self._closing:
            self._forwarders[home] = asyncio.create_task(self._forward_loop(home), name=f"forward:{home}")

    async def _forward_loop(self, home: str) -> None:
        outbox = slots.physical(f"outbox:{home[2:-1]}")
        cursor = "0-0"
        while True:
            try:
                reply = await self._redis.xread({outbox: cursor}, count=500, block=100)
                for _, entries in self._reply(reply):
                    await self.forward_entries(outbox, entries)
                    cursor = entries[-1][0]
                if self._closing:
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("forwarding %s failed; retrying", outbox)
                cursor = "0-0"  # idempotent: start over
                await asyncio.sleep(0.5)

    async def forward_entries(self, outbox: str, entries: list[Entry]) -> None:
        """Apply outbox entries, in order per destination: one script call per node they go to."""
        by_node: dict[str, list[Any]] = {}
        nodes = self._redis.nodes_manager
        for entry_id, data in entries:
            destination, body = _decode_destination(data)
            node = nodes.get_node_from_slot(slots.slot(destination))
            by_node.setdefault(node.name, []).extend((destination, entry_id, body))
        for args in by_node.values():
            await self._forward(keys=[args[0]], args=[outbox, *args])
        await self._redis.xdel(outbox, *[entry_id for entry_id, _ in entries])

    async def undelivered(self) -> int:
        """Outbox entries not yet forwarded, over all partitions."""
        total = 0
        for info in await self.streams("outbox:"):
            total += info.length
        return total

    async def drain(self) -> None:
        """Forward every outbox once, now (whoever wrote it)."""
        for info in await self.streams("outbox:"):
            outbox = slots.physical(info.stream)
            while entries := self._entries(await self._redis.xrange(outbox, count=500)):
                await self.forward_entries(outbox, entries)

    # -- where the rest of the contract differs from one server ---------------------------------

    async def get(self, key: str) -> bytes | None:
        """A read-model value; a lease key (``lease:...``, as tools read them) is looked up in its slot."""
        return await super().get(slots.physical(key) if key.startswith("lease:") else key)

    async def _position_tags(self, consumer: str) -> list[str]:
        return sorted(_text(t) for t in await self._redis.smembers(f"pos-tags:{consumer}"))

    async def register_consumer(self, stream: str, consumer: str) -> None:
        tag = slots.tag(stream)
        await self._redis.sadd(f"{tag}consumers:{stream}", consumer)
        await self._redis.sadd(f"pos-tags:{consumer}", tag)
        self._known_tags.add((consumer, tag))
        await self._redis.sadd("consumers", consumer)

    async def acquire_lease(self, key: str, owner: str, ttl_ms: int) -> str | None:
        value = await super().acquire_lease(key, owner, ttl_ms)
        if value:
            self._ensure_forwarder(slots.tag(key))  # a dead owner's outbox may still hold entries
        return value

    async def _stream_keys(self, prefix: str) -> list[tuple[str, str]]:
        """Every node's streams (their keys start with a tag, so the prefix cannot be matched by SCAN)."""
        keys = {_text(k) async for k in self._redis.scan_iter(match="*", count=1000, _type="stream")}
        named = [(key, slots.logical(key)) for key in keys]
        return sorted(((key, name) for key, name in named if name.startswith(prefix) and key == slots.physical(name)),
                      key=lambda pair: pair[1])

    async def close(self) -> None:
        """Let each forwarder finish the outbox entries it can see, then close the connections."""
        self._closing = True
        tasks = list(self._forwarders.values())
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5.0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await super().close()


def open_transport(url: str) -> Transport:
    """`ClusterTransport` for a ``redis+cluster://`` URL, else `RedisTransport` (single server)."""
    if url.startswith(CLUSTER_SCHEME):
        return ClusterTransport(url)
    from pipeline.transport.redis import RedisTransport

    return RedisTransport(url)


__all__ = ["CLUSTER_SCHEME", "ClusterTransport", "cluster_url", "open_transport"]
