"""The exchange as separate OS processes, a steady order flow through its API, and what must hold after crashes.

    procs = ExchangeProcesses(redis_url, database_url, port=8510, log_dir=path)
    await procs.start_all()
    flow = OrderFlow(redis_url, port=8510, seed=seed); await flow.setup(); flow.start()
    procs.kill("match"); await procs.start("match")
    ...
    await flow.stop(); await procs.settle(); await procs.stop_all()
    await check_everything(redis_url, database_url, flow)

Processes (each a real `exchange` command, killed with SIGKILL and restarted): one
worker per agent group (validate; risk + settle, which share the accounts state;
match; publish), the persister, and the API (`exchange api`). Leases are short so a
restarted worker takes its partitions over quickly.

With ``env={"EXCHANGE_ACCOUNT_PARTITIONS": "3", ...}`` every process (and the flow and the
checks, which read the same environment) runs the partitioned exchange: each worker runs
every partition of its agents, and the checks read every partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import msgspec
import redis.asyncio as aioredis

from api.accounts import NewKey, create_account
from api.auth import sign
from pipeline.agents.topology import ORDERS_EVENTS, ORDERS_IN
from pipeline.config import PipelineConfig
from pipeline.core.accounts import Accounts, AccountsSnapshot
from pipeline.core.markets import Market, load_markets
from pipeline.core.messages import (
    CancelOrder,
    Deposit,
    FeeCharged,
    FeesTransferred,
    LegSettled,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    TradeExecuted,
)
from pipeline.deadletter import DLQ_STREAM
from pipeline.exchange import Exchange, build_exchange, merged_accounts
from pipeline.messages import Codec
from pipeline.transport.base import START
from pipeline.transport.redis import RedisTransport
from recovery.persister import app_streams, topology_streams
from recovery.replay import ReplayCore, replay_state
from recovery.replay_source import read_range
from tests.cluster.exchange_checks import as_matched, by_market, difference

EXCHANGE = str(Path(sys.executable).with_name("exchange"))
AGENT_TOPICS = ("orders.in", "orders.valid", "orders.accepted", "orders.settle", "orders.events", "orders.rejected",
                "accounts.events")
"""The topics the agents read (``orders.settle`` only exists with several accounts partitions)."""
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def harness_exchange(transport: RedisTransport, env: Mapping[str, str]) -> Exchange:
    """The exchange as the processes with environment `env` build it (its partitions), not started."""
    return build_exchange(transport, PipelineConfig.from_env(env))


def partitioned(env: Mapping[str, str]) -> bool:
    """Whether `env` runs markets or accounts on several partitions."""
    config = PipelineConfig.from_env(env)
    return config.market_partitions > 1 or config.account_partitions > 1


def archived_streams(exchange: Exchange) -> list[str]:
    """Every stream the persister archives: every partition of every topic of `exchange`."""
    return app_streams(exchange.app)


def free_port(low: int = 8500, high: int = 8600) -> int:
    """A port of this test set's range (8500-8599) that nothing listens on now."""
    import socket

    for port in random.sample(range(low, high), high - low):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high - 1}")


@dataclass
class Spec:
    name: str
    argv: list[str]
    ready: str
    """Text the process prints on stdout once it is serving."""


@dataclass
class Running:
    process: asyncio.subprocess.Process
    out: Path
    started: float


class ExchangeProcesses:
    """Start, SIGKILL and restart the exchange's processes; their output goes to `log_dir`."""

    def __init__(self, redis_url: str, database_url: str, *, port: int, log_dir: Path, lease_ttl_ms: int = 1500,
                 only: tuple[str, ...] | None = None, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.data_dir = log_dir / "var"
        self.env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
                    "EXCHANGE_LEASE_TTL_MS": str(lease_ttl_ms), "EXCHANGE_API_WEIGHT_PER_MINUTE": "0",
                    "EXCHANGE_DATA_DIR": str(log_dir / "var"), "PERSISTER_BACKOFF_MAX": "1", **(env or {})}
        worker = [EXCHANGE, "worker", "--agents"]
        self.specs = {
            "validate": Spec("validate", [*worker, "validate"], "worker running"),
            "risk": Spec("risk", [*worker, "risk,settle"], "worker running"),
            "match": Spec("match", [*worker, "match"], "worker running"),
            "publish": Spec("publish", [*worker, "publish"], "worker running"),
            "persister": Spec("persister", [EXCHANGE, "persister"], "persister is up"),
        }
        self.specs["api"] = Spec("api", [EXCHANGE, "api", "--port", str(port)], "api is up")
        if only is not None:
            self.specs = {name: spec for name, spec in self.specs.items() if name in only}
        self.running: dict[str, Running] = {}
        self.starts: Counter[str] = Counter()
        self.kills: Counter[str] = Counter()

    async def start(self, name: str, *, wait: bool = True) -> None:
        spec = self.specs[name]
        self.starts[name] += 1
        out = self.log_dir / f"{name}.{self.starts[name]}.out"
        with out.open("wb") as stdout, (self.log_dir / f"{name}.{self.starts[name]}.err").open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(*spec.argv, stdout=stdout, stderr=stderr, env=self.env)
        self.running[name] = Running(process, out, time.monotonic())
        if wait:
            await self.wait_ready(name)

    def is_ready(self, name: str) -> bool:
        running = self.running.get(name)
        return running is not None and self.specs[name].ready in running.out.read_text(errors="replace")

    async def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_ready(name):
            running = self.running[name]
            if running.process.returncode is not None:
                raise AssertionError(f"{name} exited with {running.process.returncode}: {self.tail(name)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not ready after {timeout}s: {self.tail(name)}")
            await asyncio.sleep(0.02)

    def describe(self) -> str:
        """Each process: ready, starting for N s, or exited with its code (for failure messages)."""
        now, parts = time.monotonic(), []
        for name, running in self.running.items():
            code = running.process.returncode
            state = (f"exited {code}" if code is not None else "ready" if self.is_ready(name)
                     else f"starting for {now - running.started:.0f} s")
            parts.append(f"{name} {state}")
        return ", ".join(parts) or "none running"

    def tail(self, name: str) -> str:
        err = self.log_dir / f"{name}.{self.starts[name]}.err"
        return err.read_text(errors="replace")[-2000:] if err.exists() else ""

    async def start_all(self) -> None:
        for name in self.specs:
            await self.start(name, wait=False)
        for name in self.specs:
            await self.wait_ready(name)

    async def kill(self, name: str) -> None:
        """SIGKILL the process (no clean-up of any kind) and reap it."""
        running = self.running.pop(name)
        with contextlib.suppress(ProcessLookupError):
            running.process.send_signal(signal.SIGKILL)
        await running.process.wait()
        self.kills[name] += 1

    async def stop(self, name: str, timeout: float = 30.0) -> int:
        """SIGTERM (a clean shutdown); if it does not exit in `timeout` seconds, SIGKILL it and fail."""
        running = self.running[name]
        with contextlib.suppress(ProcessLookupError):
            running.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(running.process.wait(), timeout)
        except TimeoutError:
            await self.kill(name)
            raise AssertionError(f"{name} did not stop within {timeout}s of SIGTERM: {self.tail(name)}") from None
        del self.running[name]
        return code

    async def stop_all(self) -> dict[str, int]:
        return {name: await self.stop(name) for name in list(self.running)}

    async def kill_all(self) -> None:
        for name in list(self.running):
            await self.kill(name)


# ------------------------------------------------------------------------------ the order flow


@dataclass(frozen=True)
class Ack:
    symbol: str
    order_id: int
    client_order_id: str
    account_id: int


@dataclass
class OrderFlow:
    """Signed LIMIT/MARKET orders through the API (newOrderRespType=ACK), cancels into orders.in.

    An order counts as acknowledged only when the API answered 200 with its order id.
    Failures (API down, Redis restarting, 503) are counted and retried with new orders.
    """

    redis_url: str
    port: int | None
    """The API's port; None sends orders straight into orders.in (as the API's writer does)."""
    seed: int
    env: dict[str, str]
    """The processes' environment: it names the server key that seals API secrets."""
    accounts: int = 4
    concurrency: int = 4
    pause: float = 0.004
    acks: list[Ack] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    cancels: int = 0
    deposits: dict[str, int] = field(default_factory=dict)
    keys: list[NewKey] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _counter: int = 0
    last_error: str = ""

    async def setup(self) -> None:
        """Accounts with API keys, funded through orders.in (deposits with request ids)."""
        from api.secretbox import SecretBox

        box = SecretBox.from_env(self.env)
        client = aioredis.Redis.from_url(self.redis_url)
        transport = RedisTransport(self.redis_url)
        try:
            exchange = harness_exchange(transport, self.env)  # deposits keyed onto the account's partition
            assets = sorted({a for s in SYMBOLS for a in (exchange.markets[s].base_asset.symbol,
                                                          exchange.markets[s].quote_asset.symbol)})
            for n in range(self.accounts):
                key = await create_account(client, f"crash{n}", box=box)
                self.keys.append(key)
                for asset in assets:
                    amount = 10**15
                    await exchange.orders_in.send(Deposit(time.time_ns(), key.account_id, asset, amount,
                                                          request_id=f"fund-{key.account_id}-{asset}"),
                                                  key=key.account_id)
                    self.deposits[asset] = self.deposits.get(asset, 0) + amount
        finally:
            await client.aclose()
            await transport.close()

    def start(self) -> None:
        self._stop.clear()
        self._tasks = [asyncio.create_task(self._run(i)) for i in range(self.concurrency)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, worker: int) -> None:
        rng = random.Random(self.seed * 100 + worker)
        transport = RedisTransport(self.redis_url)
        exchange = harness_exchange(transport, self.env)  # cancels keyed onto the account's partition
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port or 9}", timeout=5.0) as http:
            try:
                while not self._stop.is_set():
                    try:
                        if self.acks and rng.random() < 0.15:
                            await self._cancel(exchange, rng)
                        elif self.port is None:
                            await self._order_direct(exchange, rng, worker)
                        else:
                            await self._order(http, rng, worker)
                    except Exception as exc:  # Redis restarting, API down: count it and go on
                        self.failures[type(exc).__name__] += 1
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(self.pause)
            finally:
                await transport.close()

    def _params(self, rng: random.Random, worker: int) -> dict[str, Any]:
        symbol = rng.choice(SYMBOLS)
        side = rng.choice(("BUY", "SELL"))
        self._counter += 1
        params: dict[str, Any] = {"symbol": symbol, "side": side, "newOrderRespType": "ACK",
                                  "newClientOrderId": f"w{worker}n{self._counter}"}
        if rng.random() < 0.1:  # a market buy by quantity would hold "all available": timing-dependent, so by quote
            params.update(type="MARKET", **({"quantity": f"{rng.randint(6, 20) / 100:.2f}"} if side == "SELL"
                                            else {"quoteOrderQty": f"{rng.randint(600, 2000) / 100:.2f}"}))
        else:
            tif = rng.choice(("GTC", "GTC", "GTC", "IOC", "FOK"))
            price = 100 + rng.randint(-6, 6) * 0.01 * (1 if side == "SELL" else -1)
            params.update(type="LIMIT", timeInForce=tif, quantity=f"{rng.randint(6, 20) / 100:.2f}",
                          price=f"{price:.2f}")
        return params

    async def _order_direct(self, exchange: Exchange, rng: random.Random, worker: int) -> None:
        """The API's write path without HTTP: an order id from ``orderid:{SYMBOL}``, then orders.in."""
        key = rng.choice(self.keys)
        p = self._params(rng, worker)
        market = exchange.markets[p["symbol"]]
        client = exchange.app.transport.client  # type: ignore[attr-defined]
        order_id = int(await client.incr(f"orderid:{p['symbol']}"))
        order = PlaceOrder(
            ts=time.time_ns(), account_id=key.account_id, symbol=p["symbol"], order_id=order_id,
            client_order_id=p["newClientOrderId"], side=p["side"], order_type=p["type"],
            time_in_force=p.get("timeInForce", "GTC"),
            price_ticks=market.price_to_ticks(Decimal(p["price"])) or 0 if "price" in p else 0,
            qty_lots=market.qty_to_lots(Decimal(p["quantity"])) or 0 if "quantity" in p else 0,
            quote_qty=market.quote_asset.to_units(Decimal(p["quoteOrderQty"])) or 0 if "quoteOrderQty" in p else 0)
        await exchange.orders_in.send(order, key=key.account_id)
        self.acks.append(Ack(order.symbol, order_id, order.client_order_id, key.account_id))

    async def _order(self, http: httpx.AsyncClient, rng: random.Random, worker: int) -> None:
        key = rng.choice(self.keys)
        params = self._params(rng, worker)
        params["timestamp"] = time.time_ns() // 1_000_000
        payload = urlencode(params)
        body = f"{payload}&signature={sign(key.secret, payload)}"
        try:
            response = await http.post("/api/v3/order", content=body, headers={
                "X-MBX-APIKEY": key.api_key, "Content-Type": "application/x-www-form-urlencoded"})
        except httpx.HTTPError as exc:
            self.failures[type(exc).__name__] += 1
            await asyncio.sleep(0.02)
            return
        if response.status_code != 200:
            self.failures[f"http {response.status_code}"] += 1
            self.last_error = response.text[:300]
            await asyncio.sleep(0.02)
            return
        answer = response.json()
        self.acks.append(Ack(answer["symbol"], answer["orderId"], answer["clientOrderId"], key.account_id))

    async def _cancel(self, exchange: Exchange, rng: random.Random) -> None:
        ack = rng.choice(self.acks)
        try:
            await exchange.orders_in.send(CancelOrder(time.time_ns(), ack.account_id, ack.symbol, ack.order_id),
                                          key=ack.account_id)
            self.cancels += 1
        except Exception as exc:  # Redis restarting: retried with another cancel later
            self.failures[type(exc).__name__] += 1
            await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------ waiting


async def stream_added(client: Any, stream: str) -> int:
    return int(await client.hget(f"meta:{stream}", "added") or 0)


async def agents_lag(exchange: Exchange) -> int:
    """Messages of the pipeline's topics (`AGENT_TOPICS`, every partition) some agent has not committed yet.

    Counted from what each agent of `exchange` reads, not from the consumers a stream has seen: a
    partition no worker ever claimed has no consumer yet, and all its messages count as lag.
    """
    lag = await exchange.app.lag()
    return sum(n for (_, stream), n in lag.items() if stream.rpartition(":")[0] in AGENT_TOPICS)


async def archive_lag(client: Any, database_url: str, streams: list[str] | None = None) -> int:
    """Messages of the exchange's streams (default: one partition each) not archived in PostgreSQL yet."""
    conn = await asyncpg.connect(database_url)
    try:
        archived = {r["stream"]: int(r["messages"]) for r in
                    await conn.fetch("SELECT stream, messages FROM archive_positions")}
    except asyncpg.UndefinedTableError:
        archived = {}
    finally:
        await conn.close()
    total = 0
    for stream in topology_streams() if streams is None else streams:
        total += await stream_added(client, stream) - archived.get(stream, 0)
    return total


async def wait_until(probe: Any, timeout: float, what: str | Callable[[], str]) -> None:
    """Poll `probe`; on timeout fail naming `what` (a callable is asked then, so it describes the end of the wait)."""
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.05)


async def finish(procs: ExchangeProcesses, flow: OrderFlow, redis_url: str, database_url: str | None) -> None:
    """Stop the flow, let every agent (and the persister) catch up, then stop every process cleanly."""
    await flow.stop()
    client = aioredis.Redis.from_url(redis_url)
    transport = RedisTransport(redis_url)
    exchange = harness_exchange(transport, procs.env)
    archived = archived_streams(exchange) if partitioned(procs.env) else None
    try:
        async def agents_done() -> bool:
            return await agents_lag(exchange) == 0

        # twice: settle sends fees from one accounts partition to another's stream, which may be read before it
        for _ in range(2):
            await wait_until(agents_done, 90, "the agents to process everything")
        for name in [n for n in procs.running if n != "persister"]:
            assert await procs.stop(name) == 0, procs.tail(name)
        if database_url is not None and "persister" in procs.running:
            async def all_archived() -> bool:
                return await archive_lag(client, database_url, archived) == 0

            await wait_until(all_archived, 90, "the persister to archive everything")
            assert await procs.stop("persister") == 0, procs.tail("persister")
    finally:
        await client.aclose()
        await transport.close()


async def flowing(flow: OrderFlow, more: int, what: str, timeout: float = 60,
                  procs: ExchangeProcesses | None = None) -> None:
    """Wait until `more` further orders were acknowledged.

    On timeout the message says what happened *during* the wait (acks, failures by kind, the
    last error, and which processes were not ready or had exited), not what was known before it.
    """
    start_acks, start_failures = len(flow.acks), Counter(flow.failures)
    target = start_acks + more

    async def enough() -> bool:
        return len(flow.acks) >= target

    def during() -> str:
        failures = dict(Counter(flow.failures) - start_failures)
        state = f"; processes: {procs.describe()}" if procs is not None else ""
        return (f"{what} ({len(flow.acks) - start_acks} of {more} acks; failures meanwhile {failures};"
                f" last error {flow.last_error!r}{state})")

    await wait_until(enough, timeout, during)


# ------------------------------------------------------------------------------ the checks


ORDER_STATUS = {OrderAccepted: "NEW", OrderFilled: "FILLED", OrderCanceled: "CANCELED", OrderRejected: "REJECTED"}


def final_statuses(core: ReplayCore, commands: list[Any]) -> dict[tuple[str, int], tuple[str, int]]:
    """Apply `commands` to `core`; (symbol, order id) -> (final status, filled lots) of every order."""
    status: dict[tuple[str, int], tuple[str, int]] = {}
    for command in commands:
        for event in core.apply(command):
            kind = type(event)
            if kind is TradeExecuted:
                for oid in (event.maker_order_id, event.taker_order_id):
                    _, filled = status.get((event.symbol, oid), ("NEW", 0))
                    status[(event.symbol, oid)] = ("PARTIALLY_FILLED", filled + event.qty_lots)
            elif kind is OrderExpired:
                status[(event.symbol, event.order_id)] = (event.status, event.filled_lots)
            elif kind in (OrderFilled, OrderCanceled):
                status[(event.symbol, event.order_id)] = (ORDER_STATUS[kind], event.filled_lots)
            elif kind is OrderAccepted:
                status[(event.symbol, event.order_id)] = ("NEW", 0)
            elif kind is OrderRejected and (event.symbol, event.order_id) not in status:
                status[(event.symbol, event.order_id)] = ("REJECTED", 0)
    return status


async def stream_values(client: Any, stream: str, value_type: Any) -> list[Any]:
    codec: Codec[Any] = Codec(value_type)
    return [codec.decode(raw) async for _, raw in read_range(client, stream, None, None)]


async def live_accounts(redis_url: str, markets: dict[str, Market], env: Mapping[str, str] | None = None) -> Accounts:
    """Risk and settle's accounts state as they committed it: their tables, restored from the changelogs.

    With several accounts partitions (`env`): every partition's tables, merged (`merged_accounts`).
    """
    transport = RedisTransport(redis_url)
    try:
        if env is not None and partitioned(env):
            exchange = build_exchange(transport, PipelineConfig.from_env(env), markets=markets)
            any_state = exchange.accounts[0]
            for partition in exchange.accounts:
                for table in (any_state.balances, any_state.holds, any_state.requests):
                    if table is not None:
                        await table.restore(transport, partition)
            return merged_accounts(exchange)
        exchange = build_exchange(transport)
        shared = exchange.accounts[0]
        requests = getattr(shared, "requests", None)
        tables = [shared.balances, shared.holds, *([requests] if requests is not None else [])]
        for table in tables:
            await table.restore(transport, 0)
        extra = [sorted(shared.requests.partition(0))] if len(tables) == 3 else []
        return Accounts.restore(markets, AccountsSnapshot(
            0, sorted(shared.balances.partition(0).values(), key=lambda b: (b.account_id, b.asset)),
            sorted(shared.holds.partition(0).values(), key=lambda h: (h.symbol, h.order_id)), *extra))
    finally:
        await transport.close()


def accounts_diff(live: Accounts, replay: Accounts) -> str:
    a, b = live.snapshot(), replay.snapshot()
    out = []
    for name in ("balances", "holds"):
        x, y = set(getattr(a, name)), set(getattr(b, name))
        out.append(f"{name}: live only {sorted(x - y, key=repr)[:6]}, replay only {sorted(y - x, key=repr)[:6]}")
    fields = [f for f in a.__struct_fields__ if f not in ("balances", "holds")]
    out += [f"{f}: {getattr(a, f)!r:.200} vs {getattr(b, f)!r:.200}" for f in fields if getattr(a, f) != getattr(b, f)]
    return "; ".join(out)


async def check_settled_once(client: Any, exchange: Exchange, orders_events: list[Any]) -> None:
    """Over accounts partitions: each trade's two legs settled once, and every fee charged reached the fee account."""
    accounts_events = [e for stream in exchange.accounts_events.streams
                       for e in await stream_values(client, stream, exchange.accounts_events.value_type)]
    trades = sorted((e.symbol, e.trade_id) for e in orders_events if type(e) is TradeExecuted)
    legs = sorted((e.symbol, e.trade_id) for e in accounts_events if type(e) is LegSettled)
    assert legs == sorted(trades * 2), f"{len(legs)} legs settled for {len(trades)} trades (two each, once)"
    charged: Counter[str] = Counter()
    transferred: Counter[str] = Counter()
    for event in accounts_events:
        if type(event) is FeeCharged:
            charged[event.asset] += event.amount
        elif type(event) is FeesTransferred:
            transferred[event.asset] += event.amount
    assert transferred == charged, f"fees charged {dict(charged)}, transferred to the fee account {dict(transferred)}"


@dataclass
class Verdict:
    """What the checks found (for the test's report)."""

    acked: int
    orders_in: int
    statuses: Counter[str]
    trades: int
    state_hash: str


async def check_everything(redis_url: str, database_url: str, flow: OrderFlow, *,
                           archive: bool = True) -> Verdict:
    """Every check of the crash tests; raises AssertionError naming the first thing that does not hold.

    With several partitions (the flow's environment says how many): every partition of
    ``orders.in`` is read, the clean replay applies the commands in the order match saw them
    (`as_matched`: each market's sequence as its partition of ``orders.accepted`` has it),
    the accounts are every partition's merged, match's output is compared market by market,
    and every trade must be settled exactly once on each side (legs, fees to the fee account).
    """
    markets = load_markets(None)
    several = partitioned(flow.env)
    client = aioredis.Redis.from_url(redis_url)
    transport = RedisTransport(redis_url)
    exchange = build_exchange(transport, PipelineConfig.from_env(flow.env), markets=markets)
    try:
        dead = await client.xlen(DLQ_STREAM)
        assert dead == 0, f"{dead} dead letters: input an agent refused (see `exchange topics dlq`)"
        commands = [c for stream in exchange.orders_in.streams
                    for c in await stream_values(client, stream, ORDERS_IN.value_type)]
        # 1. every acknowledged order is in orders.in, exactly once, as acknowledged
        placed = Counter((c.symbol, c.order_id) for c in commands if isinstance(c, PlaceOrder))
        by_id = {(c.symbol, c.order_id): c for c in commands if isinstance(c, PlaceOrder)}
        for ack in flow.acks:
            key = (ack.symbol, ack.order_id)
            assert placed[key] == 1, f"acknowledged order {key} is in orders.in {placed[key]} times"
            assert (by_id[key].client_order_id, by_id[key].account_id) == (ack.client_order_id, ack.account_id)
        assert len({(a.symbol, a.order_id) for a in flow.acks}) == len(flow.acks), "an order id acknowledged twice"

        # 2. a clean replay of the same input: statuses, books, balances, hashes
        # (holds do not depend on that order: accounts are funded far beyond their orders, market buys by quote)
        core = ReplayCore(markets)
        statuses = final_statuses(core, await as_matched(exchange, commands) if several else commands)
        core.validate_internal_state()
        live = await live_accounts(redis_url, markets, flow.env)
        live.validate_internal_state()
        assert live.state_hash() == core.accounts.state_hash(), \
            f"accounts differ from a clean replay: {accounts_diff(live, core.accounts)}"
        totals = live.total_by_asset()
        assert {a: n for a, n in totals.items() if n} == flow.deposits, f"assets not conserved: {totals}"
        books = await replay_state("orders.accepted", redis_url=redis_url, markets=markets)
        assert books.engine.state_hash() == core.engine.state_hash(), "match's committed input differs from replay"

        # match's output is exactly what its committed input gives: nothing lost, nothing emitted twice
        expected_events: list[Any] = []
        again = ReplayCore(markets, stages="orders.accepted")
        await replay_state("orders.accepted", redis_url=redis_url, base=again,
                           on_step=lambda _, __, events: expected_events.extend(events))
        events = [e for stream in exchange.orders_events.streams
                  for e in await stream_values(client, stream, ORDERS_EVENTS.value_type)]
        if several:  # match partitions interleave their events: each market's in order
            got, want = by_market(events), by_market(expected_events)
            assert got == want, f"orders.events differs from its input's: {difference(got, want)}"
        assert len(events) == len(expected_events) and (several or events == expected_events), \
            f"orders.events has {len(events)} messages, its input gives {len(expected_events)}"
        if exchange.orders_settle is not None:
            await check_settled_once(client, exchange, expected_events)

        # 3. the read models: every acknowledged order's final status, the books, the balances
        for ack in flow.acks:
            raw = await client.get(f"order:{ack.symbol}:{ack.order_id}")
            assert raw is not None, f"acknowledged order {ack} has no order view"
            view = msgspec.json.decode(raw)
            want = statuses.get((ack.symbol, ack.order_id))
            assert want is not None, f"acknowledged order {ack} has no status in the replay"
            assert (view["status"], view["filled_lots"]) == want, f"{ack}: view {view}, replay {want}"
        for symbol in markets:
            bids, asks = core.engine.book(symbol).depth(10**9)
            for side, levels in (("bids", bids), ("asks", asks)):
                stored = {int(p): int(q) for p, q in (await client.hgetall(f"depth:{{{symbol}}}:{side}")).items()}
                assert stored == dict(levels), f"depth {symbol} {side} differs from the replayed book"
        for balance in core.accounts.snapshot().balances:
            raw = await client.hget(f"balances:{balance.account_id}", balance.asset)
            assert raw is not None and msgspec.json.decode(raw) == {
                "available": balance.available, "locked": balance.locked}, f"balance view {balance}"
    finally:
        await client.aclose()
        await transport.close()

    # 4. the archive: every event exactly once, orders with their final status
    if archive:
        from tests.recovery.checks import assert_archive_complete

        conn = await asyncpg.connect(database_url)
        transport = RedisTransport(redis_url)
        try:
            await assert_archive_complete(conn, harness_exchange(transport, flow.env))  # every partition
            rows = {(r["symbol"], r["order_id"]): (r["status"], r["filled_lots"])
                    for r in await conn.fetch("SELECT symbol, order_id, status, filled_lots FROM orders")}
            for ack in flow.acks:
                assert rows.get((ack.symbol, ack.order_id)) == statuses[(ack.symbol, ack.order_id)], \
                    f"archived order {ack}: {rows.get((ack.symbol, ack.order_id))}"
        finally:
            await conn.close()
            await transport.close()
    return Verdict(len(flow.acks), len(commands), Counter(s for s, _ in statuses.values()),
                   sum(type(e) is TradeExecuted for e in expected_events), core.state_hash())


__all__ = ["START", "ExchangeProcesses", "OrderFlow", "agents_lag", "archive_lag", "check_everything", "finish",
           "flowing", "wait_until"]
