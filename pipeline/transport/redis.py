"""Redis Streams transport (Valkey or Redis >= 7), on redis-py with the hiredis parser.

Keys it uses, besides the streams themselves:
- ``meta:<stream>``       hash, ``added``: messages ever appended through the runtime;
- ``pos:<consumer>``      hash, ``<stream>``: last committed id, ``n:<stream>``: entries consumed;
- ``consumers:<stream>``  set of consumers registered on a stream; ``consumers`` all of them;
- ``<lease key>``         the owner value of a partition lease, ``<lease key>:token`` its fencing counter.

`RedisTransportBase` is the one implementation, for one server and for a cluster alike: each
key of a stream, lease or partition is prefixed by `_tag(name)`, empty here and the name's
hash tag in `pipeline.transport.cluster` (see `pipeline.transport.slots`).

A batch commit is one EVALSHA: Lua scripts run atomically and are written to the
AOF as one MULTI/EXEC block, so outputs, offsets and the fencing check are applied
all together or not at all, with a single round trip. A commit whose first input
position is not past the committed one was applied already (redis-py retries a command
whose reply was lost to a connection error) and is skipped: commits are idempotent.
"""

from __future__ import annotations

import struct
from typing import Any, Generic, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from pipeline.errors import BackpressureError, FencedError, TransportError
from pipeline.transport.base import WRITE_COMMANDS, Commit, Entry, Position, StreamInfo

_COMMIT = """
local lease = ARGV[1]
if lease ~= '' and redis.call('GET', KEYS[1]) ~= lease then
  return redis.error_reply('FENCED lease lost')
end
local read_count = tonumber(ARGV[3])
local nread = tonumber(ARGV[4])
local i = 5 + 2 * nread
if tonumber(ARGV[2]) > 0 then
  -- applied already (the client retried after a lost reply): committed positions only move forward
  local stored = redis.call('HGET', KEYS[2], ARGV[i])
  if stored then
    local sms, sseq = string.match(stored, '(%d+)-(%d+)')
    local nms, nseq = string.match(ARGV[i + 1], '(%d+)-(%d+)')
    sms, nms = tonumber(sms), tonumber(nms)
    if sms > nms or (sms == nms and tonumber(sseq) >= tonumber(nseq)) then return 0 end
  end
end
for _ = 1, tonumber(ARGV[2]) do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[2], 'n:' .. ARGV[i], ARGV[i + 2])
  i = i + 3
end
local k = 3
while k <= #KEYS do
  local blob, lengths, messages = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local at, pos = 1, 1
  while at <= #lengths do
    local size
    size, at = struct.unpack('>I4', lengths, at)
    redis.call('XADD', KEYS[k], '*', 'd', string.sub(blob, pos, pos + size - 1))
    pos = pos + size
  end
  redis.call('HINCRBY', KEYS[k + 1], 'added', messages)
  i = i + 3
  k = k + 2
end
if ARGV[i] == 'm' then
  for _, write in ipairs(cmsgpack.unpack(ARGV[i + 1])) do
    redis.call(unpack(write))
  end
else
  local writes = tonumber(ARGV[i] or '0')
  i = i + 1
  for _ = 1, writes do
    local argc = tonumber(ARGV[i])
    redis.call(unpack(ARGV, i + 1, i + argc))
    i = i + 1 + argc
  end
end
if read_count > 0 then
  -- commit-then-read: the consumer's next batch, if one is already waiting (never blocks)
  return redis.call('XREAD', 'COUNT', read_count, 'STREAMS', unpack(ARGV, 5, 4 + 2 * nread))
end
return 1
"""

# KEYS: the stream, its meta hash, its consumers set; ARGV: limit, messages, payloads (from FIRST on).
_PRODUCE = """
local limit = tonumber(ARGV[1])
if limit >= 0 then
  local added = tonumber(redis.call('HGET', KEYS[2], 'added') or '0')
  local low = nil
  for _, c in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local n = tonumber(redis.call('HGET', POSITIONS .. c, 'n:' .. NAME) or '0')
    if low == nil or n < low then low = n end
  end
  if low ~= nil and added - low >= limit then
    return redis.error_reply('BACKPRESSURE ' .. (added - low))
  end
end
local ids = {}
for i = FIRST, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'd', ARGV[i])
end
redis.call('HINCRBY', KEYS[2], 'added', ARGV[2])
return ids
"""
# Untagged keys: positions in ``pos:<consumer>``, the stream's name is its key.
_PRODUCE_PLAIN = _PRODUCE.replace("POSITIONS", "'pos:'").replace("NAME", "KEYS[1]").replace("FIRST", "3")
# Tagged keys: ARGV[3] is the stream's tag (its consumers' position hashes start with it), ARGV[4] its name.
# (Two more arguments cost the client about 4% of a produce call: the plain variant does without them.)
_PRODUCE_TAGGED = _PRODUCE.replace("POSITIONS", "ARGV[3] .. 'pos:'").replace("NAME", "ARGV[4]").replace("FIRST", "5")

_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local value = ARGV[1] .. '#' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""

_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


def _raw_reply(response: Any, **options: Any) -> Any:
    return response


_msgpack = msgspec.msgpack.Encoder().encode
_STR_ONLY = frozenset([str])


def _writes_blob(writes: list[tuple[str | bytes, ...]]) -> bytes | None:
    """All read-model writes as one msgpack array of string arrays, or None if one cannot be.

    redis-py packs every argument of a command in Python (~0.3-0.5 us each) and publish
    writes dozens per order; one msgpack argument, unpacked by the script (cmsgpack),
    moves that work into C. cmsgpack has no binary type, so bytes travel as msgpack
    strings, which is lossless for UTF-8 (publish's values are JSON); anything else
    takes the argument-per-value path.
    """
    out: list[tuple[str | bytes, ...]] = []
    for write in writes:
        if write[0] not in WRITE_COMMANDS:
            raise ValueError(f"unsupported write {write[0]!r}")
        if _STR_ONLY.issuperset(map(type, write)):
            out.append(write)
            continue
        parts: list[str] = []
        for part in write:
            if type(part) is str:
                parts.append(part)
            elif type(part) is bytes:
                try:
                    parts.append(part.decode())
                except UnicodeDecodeError:
                    return None
            else:
                return None  # let redis-py encode it, as it always did
        out.append(tuple(parts))
    return _msgpack(out)


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


SOCKET_TIMEOUT_S = 30.0
"""How long a reply may take before the connection is given up (redis-py's default is 5 s).

Above every XREAD block time (agents 0.1 s, the API's hub 1 s, the persister 0.2 s) and
above the partition lease TTL (10 s): a server stalled by overload for a few seconds
(fsync, a long script, a starved CPU) then delays the agents instead of failing them into
a rebuild of their state; a stall longer than the lease is settled by the lease's fencing."""
CONNECT_TIMEOUT_S = 5.0
"""How long connecting may take (a server that is down is reported within this)."""


ClientT = TypeVar("ClientT", aioredis.Redis, RedisCluster)


class RedisTransportBase(Generic[ClientT]):
    """The Redis Streams transport over a redis-py client, every key named through `_tag`.

    The subclasses add how to connect, `read`, and `register_consumer`; a cluster also
    routes commits by partition (`pipeline.transport.cluster`).
    """

    def __init__(self, client: ClientT, url: str) -> None:
        self.url = url
        self._redis: ClientT = client
        # Take XREAD replies raw: redis-py's default parser builds a dict per entry.
        client.set_response_callback("XREAD", _raw_reply)
        self._commit_script = client.register_script(_COMMIT)
        self._produce_plain = client.register_script(_PRODUCE_PLAIN)
        self._produce_tagged = client.register_script(_PRODUCE_TAGGED)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @staticmethod
    def _tag(name: str) -> str:
        """The prefix of every key of stream, lease or partition `name`: none on one server."""
        return ""

    @property
    def client(self) -> ClientT:
        """The underlying client, for tools that need plain commands."""
        return self._redis

    def _reply(self, reply: Any) -> list[tuple[str, list[Entry]]]:
        """The entries of a raw XREAD reply, by stream key."""
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3
            reply = list(reply.items())
        # raw entries are [id, [field, value, ...]]; the runtime writes one field, "d"
        return [
            (stream.decode(), [(entry_id.decode(), fields[1]) for entry_id, fields in raw if fields])
            for stream, raw in reply
        ]

    @staticmethod
    def _entries(raw: Any) -> list[Entry]:
        return [(_text(entry_id), fields[b"d"]) for entry_id, fields in raw if b"d" in fields]

    async def read_range(self, stream: str, after: str, count: int) -> list[Entry]:
        raw = await self._redis.xrange(self._tag(stream) + stream, min=f"({after}", max="+", count=count)
        return self._entries(raw)

    async def read_reverse(self, stream: str, count: int) -> list[Entry]:
        return self._entries(await self._redis.xrevrange(self._tag(stream) + stream, count=count))

    async def commit(self, commit: Commit) -> None:
        await self.commit_read(commit, {}, 0)

    async def commit_read(
        self, commit: Commit, positions: dict[str, str], count: int
    ) -> list[tuple[str, list[Entry]]]:
        """`commit`, then (same round trip) `read(positions, count, block_ms=0)` without blocking.

        Saves a busy consumer one round trip per batch: the next batch comes back with
        the commit of the last one; an empty result means "nothing waiting yet".
        """
        return await self._commit_at(commit, positions, count)

    async def _commit_at(
        self, commit: Commit, positions: dict[str, str], count: int, home: str = ""
    ) -> list[tuple[str, list[Entry]]]:
        """`commit_read` with every key the commit script names prefixed by `home`.

        `home` is the tag of every stream, lease and write in `commit` and `positions`
        (on a cluster, the slot the script runs in); empty on one server.
        """
        keys: list[str] = [home + commit.lease[0] if commit.lease else home + "_", f"{home}pos:{commit.consumer}"]
        args: list[Any] = [commit.lease[1] if commit.lease else "", len(commit.offsets),
                           count if positions else 0, len(positions),
                           *([home + stream for stream in positions] if home else positions), *positions.values()]
        for stream, (last_id, consumed) in commit.offsets.items():
            args += (stream, last_id, consumed)
        grouped: dict[str, list[bytes]] = {}
        for stream, data in commit.outputs:
            grouped.setdefault(stream, []).append(data)
        for stream, payloads in grouped.items():
            # All payloads of a stream travel as one argument plus their lengths, which the
            # script splits: packing one argument per entry costs the client ~0.5 us each.
            keys += (home + stream, f"{home}meta:{stream}")
            args += (b"".join(payloads), struct.pack(f">{len(payloads)}I", *map(len, payloads)),
                     commit.messages.get(stream, len(payloads)))
        blob = _writes_blob(commit.writes) if commit.writes else None
        if blob is not None:
            # Read-model writes go last; their keys are not declared (on a cluster they are
            # in the commit's slot, like the backpressure check's consumer positions).
            args += ("m", blob)
        elif commit.writes:
            args.append(len(commit.writes))
            for write in commit.writes:
                if write[0] not in WRITE_COMMANDS:
                    raise ValueError(f"unsupported write {write[0]!r}")
                args.append(len(write))
                args += write
        try:
            reply = await self._commit_script(keys=keys, args=args)
        except ResponseError as exc:
            if str(exc).startswith("FENCED"):
                raise FencedError(f"{commit.consumer}: {exc}") from None
            raise TransportError(str(exc)) from exc
        return self._reply(reply) if isinstance(reply, list) else []

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(key)
        return value.encode() if isinstance(value, str) else value

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        raw: dict[bytes | str, bytes | str] = await self._redis.hgetall(key)
        return {_bytes(k): _bytes(v) for k, v in raw.items()}

    async def zrange(self, key: str) -> list[tuple[bytes, float]]:
        raw: list[Any] = await self._redis.zrange(key, 0, -1, withscores=True)
        return [(_bytes(member), float(score)) for member, score in raw]

    async def produce(
        self, stream: str, payloads: list[bytes], max_pending: int | None = None, messages: int | None = None
    ) -> list[str]:
        limit = -1 if max_pending is None else max_pending
        count = len(payloads) if messages is None else messages
        tag = self._tag(stream)
        keys = [tag + stream, f"{tag}meta:{stream}", f"{tag}consumers:{stream}"]
        try:
            if tag:
                ids = await self._produce_tagged(keys=keys, args=[limit, count, tag, stream, *payloads])
            else:
                ids = await self._produce_plain(keys=keys, args=[limit, count, *payloads])
        except ResponseError as exc:
            message = str(exc)
            if message.startswith("BACKPRESSURE"):
                raise BackpressureError(stream, int(message.split()[1]), limit) from None
            raise TransportError(message) from exc
        return [_text(i) for i in ids]

    async def _position_tags(self, consumer: str) -> list[str]:
        """The tags of the position hashes `consumer` has committed into."""
        return [""]

    async def positions(self, consumer: str) -> dict[str, Position]:
        result: dict[str, Position] = {}
        for tag in await self._position_tags(consumer):
            raw = {_text(k): _text(v) for k, v in (await self._redis.hgetall(f"{tag}pos:{consumer}")).items()}
            result.update({
                stream: Position(last_id, int(raw.get(f"n:{stream}", "0")))
                for stream, last_id in raw.items() if not stream.startswith("n:")
            })
        return result

    async def consumers(self, stream: str) -> list[str]:
        return sorted(_text(c) for c in await self._redis.smembers(f"{self._tag(stream)}consumers:{stream}"))

    async def pending(self, stream: str) -> int:
        tag = self._tag(stream)
        added = int(await self._redis.hget(f"{tag}meta:{stream}", "added") or 0)
        consumers = await self.consumers(stream)
        if not consumers:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for consumer in consumers:
                pipe.hget(f"{tag}pos:{consumer}", f"n:{stream}")
            consumed = [int(n or 0) for n in await pipe.execute()]
        return added - min(consumed)

    async def acquire_lease(self, key: str, owner: str, ttl_ms: int) -> str | None:
        stored = self._tag(key) + key
        value = await self._acquire(keys=[stored, f"{stored}:token"], args=[owner, ttl_ms])
        return _text(value) if value else None

    async def renew_lease(self, key: str, value: str, ttl_ms: int) -> bool:
        return bool(await self._renew(keys=[self._tag(key) + key], args=[value, ttl_ms]))

    async def release_lease(self, key: str, value: str) -> None:
        await self._release(keys=[self._tag(key) + key], args=[value])

    async def _stream_keys(self, prefix: str) -> list[tuple[str, str]]:
        """(key, name) of every stream whose name starts with `prefix`, in name order."""
        keys = {_text(k) async for k in self._redis.scan_iter(match=f"{prefix}*", count=1000, _type="stream")}
        return [(key, key) for key in sorted(keys)]

    async def streams(self, prefix: str = "") -> list[StreamInfo]:
        result = []
        for key, name in await self._stream_keys(prefix):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xlen(key)
                pipe.hget(f"{self._tag(name)}meta:{name}", "added")
                pipe.xrevrange(key, count=1)
                length, added, last = await pipe.execute()
            last_id = _text(last[0][0]) if last and last[0][0] is not None else None
            result.append(StreamInfo(name, int(length), int(added or 0), last_id))
        return result

    async def all_consumers(self) -> list[str]:
        return sorted(_text(c) for c in await self._redis.smembers("consumers"))

    async def close(self) -> None:
        await self._redis.aclose()


class RedisTransport(RedisTransportBase[aioredis.Redis]):
    """Streams in a Redis/Valkey server; every method is one round trip."""

    def __init__(self, url: str, *, max_connections: int = 64, socket_timeout: float = SOCKET_TIMEOUT_S,
                 connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.socket_timeout = socket_timeout
        # A blocking pool: when every connection is busy (each blocked XREAD holds one), a
        # command waits for a free one instead of failing at once.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, decode_responses=False, max_connections=max_connections, timeout=30,
            socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout, socket_keepalive=True,
        )
        super().__init__(aioredis.Redis.from_pool(pool), url)  # the client owns the pool: closed with it

    # The agents' hot path: the shared body itself, no key prefix and no extra coroutine per batch.
    commit_read = RedisTransportBase._commit_at

    async def read(self, positions: dict[str, str], count: int, block_ms: int) -> list[tuple[str, list[Entry]]]:
        if block_ms >= self.socket_timeout * 1000:
            raise ValueError(f"XREAD BLOCK {block_ms} ms would outlast the socket timeout ({self.socket_timeout} s)")
        return self._reply(await self._redis.xread(positions, count=count, block=block_ms))  # type: ignore[arg-type]

    async def register_consumer(self, stream: str, consumer: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(f"consumers:{stream}", consumer)
            pipe.sadd("consumers", consumer)
            await pipe.execute()
