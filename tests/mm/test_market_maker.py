"""The market maker against the real pipeline and API (session Valkey, httpx ASGI transport or uvicorn).

"Ten minutes" of trading are compressed: each refresh is driven directly (120 refreshes
= 10 minutes at the default 5 s refresh), with the noise trader's orders in between, and
a fake clock for the back-off.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from redis.asyncio import Redis

from api.accounts import NewKey
from api.admin import market_command, set_market_status
from api.context import ApiConfig
from infra.mm.bot import MarketMaker
from infra.mm.client import BinanceClient, BinanceError
from infra.mm.config import MarketMakerConfig, NoiseParams, QuoteParams
from infra.mm.noise import NoiseTrader
from infra.mm.quoting import BPS, ladder
from infra.mm.service import MarketMakerService
from infra.mm.setup import ACCOUNTS_KEY, balances, ensure_account, top_up, top_up_deposits
from infra.runner import run_exchange
from pipeline.exchange import Exchange, build_exchange
from pipeline.transport.redis import RedisTransport
from tests.api.conftest import eventually, start_api
from tests.serving import free_port

pytestmark = pytest.mark.redis


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyTransport(httpx.AsyncBaseTransport):
    """The ASGI transport, except that while `failing` is set requests fail (503 or no connection)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.failing: str | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.failing == "503":
            return httpx.Response(503, json={"code": -1008, "msg": "Server is currently overloaded."},
                                  headers={"Retry-After": "1"})
        if self.failing == "down":
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


@dataclass
class Rig:
    exchange: Exchange
    redis: Any
    transport: FlakyTransport
    mm_key: NewKey
    taker_key: NewKey

    def client(self, key: NewKey | None) -> BinanceClient:
        return BinanceClient("http://testserver", key.api_key if key else None, key.secret if key else None,
                             transport=self.transport)


@pytest.fixture
async def rig(redis_url: str) -> AsyncIterator[Rig]:
    exchange, transport, app = await start_api(redis_url, config=ApiConfig(result_timeout_s=5.0, lookup_wait_s=1.0,
                                                                           weight_per_minute=0))
    try:
        mm_key = await ensure_account(transport.client, "market-maker")
        taker_key = await ensure_account(transport.client, "noise-trader")
        yield Rig(exchange, transport.client, FlakyTransport(httpx.ASGITransport(app=app)), mm_key, taker_key)
    finally:
        await app.state.api.writer.close()
        await exchange.app.stop()
        await transport.close()


PARAMS = QuoteParams(bid_spread_bps=20, ask_spread_bps=30, order_levels=2, level_spacing_bps=10,
                     refresh_tolerance_bps=2, skew_price_bps=5, inventory_range_pct=50, walk_step_bps=10)


async def make_bot(rig: Rig, symbols: tuple[str, ...], params: QuoteParams = PARAMS,
                   clock: FakeClock | None = None, funding: int = 30) -> tuple[MarketMaker, BinanceClient]:
    client = rig.client(rig.mm_key)
    config = MarketMakerConfig(markets=symbols, quote=params, status_seconds=0, funding_multiple=funding)
    bot = MarketMaker(client, config, clock=clock or FakeClock(), out=lambda line: None)
    await bot.prepare()
    await top_up(rig.exchange, rig.redis, rig.mm_key.account_id, bot.funding_needs())
    return bot, client


def assert_quotes_inside_spreads(bot: MarketMaker, orders: list[dict[str, Any]]) -> None:
    """Every resting order lies within the configured band around the market's reference price.

    The band: the configured spread (+ spacing per level) widened by the largest skew shift,
    the refresh tolerance (a kept order may be that far from its wanted price) and one tick.
    """
    for o in orders:
        m = bot.markets[o["symbol"]]
        p = m.params
        ref = m.ref_ticks
        price = m.rules.ticks(o["price"])
        slack = p.skew_price_bps + p.refresh_tolerance_bps
        deepest = (p.order_levels - 1) * p.level_spacing_bps
        if o["side"] == "BUY":
            assert ref * (BPS - p.bid_spread_bps - deepest - slack) // BPS - 1 <= price, (o, ref)
            assert price <= ref * (BPS - p.bid_spread_bps + slack) // BPS + 1, (o, ref)
        else:
            assert ref * (BPS + p.ask_spread_bps - slack) // BPS - 1 <= price, (o, ref)
            assert price <= ref * (BPS + p.ask_spread_bps + deepest + slack) // BPS + 1, (o, ref)


def assert_within_limits(bot: MarketMaker, totals: dict[str, int]) -> None:
    for asset, (low, high) in bot.limits.items():
        assert low <= totals[asset] <= high, (asset, low, totals[asset], high)


def assert_spread_in_config(bot: MarketMaker, orders: list[dict[str, Any]]) -> int:
    """Each market's quoted spread (best ask - best bid of the bot's orders, in bps of the reference) lies
    within the configured bid + ask spread, give or take the skew shift and refresh tolerance on each side;
    how many markets were quoted on both sides."""
    two_sided = 0
    for symbol, m in bot.markets.items():
        p = m.params
        bids = [m.rules.ticks(o["price"]) for o in orders if o["symbol"] == symbol and o["side"] == "BUY"]
        asks = [m.rules.ticks(o["price"]) for o in orders if o["symbol"] == symbol and o["side"] == "SELL"]
        if not bids or not asks:
            continue
        two_sided += 1
        spread_bps = (min(asks) - max(bids)) * BPS / m.ref_ticks
        slack = 2 * (p.skew_price_bps + p.refresh_tolerance_bps) + 2 * BPS / m.ref_ticks  # + a tick each side
        configured = p.bid_spread_bps + p.ask_spread_bps
        assert configured - slack <= spread_bps <= configured + slack, (symbol, spread_bps, configured, slack)
    return two_sided


async def noise_due(noise: NoiseTrader, now: float) -> int:
    """The noise trader's orders that fall due by `now` on its own (exponential) schedule; lots filled."""
    filled = 0
    for symbol, t in noise.markets.items():
        while t.next_at <= now:
            filled += await noise.trade(symbol)
            noise._schedule(t, t.next_at)
    return filled


@pytest.mark.slow
async def test_ten_minutes_of_quoting_stays_in_spread_and_limits(rig: Rig) -> None:
    """Ten minutes on a compressed clock: the bot's clock and the noise trader's schedule advance by the
    refresh time (5 s) per step, 120 steps: the taker orders due in that interval hit the book, then the
    bot refreshes. After every refresh: its quotes inside the configured band, each market's quoted
    spread inside the configuration, and the account's balances *in the exchange* (the read model, not
    the bot's view) inside the inventory limits."""
    symbols = ("BTCUSDT", "ETHBTC")
    clock = FakeClock()
    started = clock.now
    bot, client = await make_bot(rig, symbols, clock=clock)
    taker = rig.client(rig.taker_key)
    noise = NoiseTrader(taker, {s: m.rules for s, m in bot.markets.items()}, NoiseParams(interval_seconds=3.0),
                        clock=clock, out=lambda line: None)
    await top_up(rig.exchange, rig.redis, rig.taker_key.account_id,
                 noise.funding_needs({s: m.ref_ticks for s, m in bot.markets.items()}))
    for t in noise.markets.values():
        noise._schedule(t, clock.now)
    account = rig.mm_key.account_id
    refs: list[int] = []
    filled = two_sided = 0
    seen: dict[str, list[int]] = {}
    try:
        await bot.refresh()
        for _ in range(120):  # 10 minutes at the default 5 s refresh
            orders = await client.open_orders()
            assert len(orders) <= 2 * PARAMS.order_levels * len(symbols)  # replaced, never piled up
            assert_quotes_inside_spreads(bot, orders)
            two_sided += assert_spread_in_config(bot, orders)
            await rig.exchange.app.wait_caught_up(timeout=30)
            truth = await balances(rig.redis, account)
            assert_within_limits(bot, truth)
            for asset, units in truth.items():
                seen.setdefault(asset, []).append(units)
            clock.now += PARAMS.refresh_seconds
            filled += await noise_due(noise, clock.now)
            await bot.refresh()
            refs.append(bot.markets["BTCUSDT"].ref_ticks)
        await rig.exchange.app.wait_caught_up(timeout=30)
        assert_within_limits(bot, await balances(rig.redis, account))
        assert clock.now - started == 600  # ten minutes of the bot's clock
        assert len(set(refs)) > 30  # the reference walked
        assert two_sided >= 0.9 * 120 * len(symbols)  # liquid on both sides nearly all the time
        assert filled > 0 and sum(m.filled_lots for m in bot.markets.values()) > 0
        assert sum(t.orders for t in noise.markets.values()) > 150  # about 200 taker orders in 10 minutes
        assert max(seen["BTC"]) > min(seen["BTC"])  # the inventory moved while the limits held
        assert sum(m.placed for m in bot.markets.values()) > 120  # it re-quoted as the price moved
        assert all(m.errors == 0 for m in bot.markets.values())
        assert_within_limits(bot, await bot.read_totals())
        # a minute of klines shows trades from the noise flow
        klines = await taker.get("/api/v3/klines", symbol="BTCUSDT", interval="1m")
        assert klines and Decimal(klines[-1][5]) > 0
    finally:
        await bot.cancel_everything()
        await client.close()
        await taker.close()
    assert await client_open(rig) == []


async def client_open(rig: Rig) -> list[dict[str, Any]]:
    client = rig.client(rig.mm_key)
    try:
        return await client.open_orders()
    finally:
        await client.close()


async def test_one_sided_flow_stops_at_the_inventory_limit(rig: Rig) -> None:
    params = QuoteParams(bid_spread_bps=10, ask_spread_bps=10, order_levels=2, inventory_range_pct=20,
                         order_notional_multiple=10, walk_step_bps=0)
    bot, client = await make_bot(rig, ("BTCUSDT",), params, funding=3)
    taker = rig.client(rig.taker_key)
    await top_up(rig.exchange, rig.redis, rig.taker_key.account_id, {"USDT": Decimal(1_000_000)})
    rules = bot.markets["BTCUSDT"].rules
    try:
        one_sided = 0
        for _ in range(40):
            await bot.refresh()
            assert_within_limits(bot, bot.totals)
            book = await taker.book_ticker("BTCUSDT")
            if Decimal(book["askPrice"]) == 0:
                one_sided += 1
                continue
            await taker.place(rules, "BUY", "LIMIT", rules.ticks(book["askPrice"]), rules.lots(book["askQty"]),
                              time_in_force="IOC")
            assert_within_limits(bot, await bot.read_totals())
        low = bot.limits["BTC"][0]
        assert one_sided > 0  # the limit was reached: no more asks ...
        side = sum(q.lots for q in ladder(rules, params, bot.markets["BTCUSDT"].ref_ticks) if q.side == "SELL")
        totals = await bot.read_totals()
        assert low <= totals["BTC"] <= low + rules.base_units(2 * side)  # stopped within old + new asks of it
        assert bot.markets["BTCUSDT"].skew_ppm < -500_000  # ... and the skew leans to buying back
    finally:
        await bot.cancel_everything()
        await client.close()
        await taker.close()


async def test_survives_a_halted_market_and_api_errors(rig: Rig) -> None:
    clock = FakeClock()
    params = msgspec.structs.replace(PARAMS, refresh_seconds=0.1)
    bot, client = await make_bot(rig, ("BTCUSDT", "ETHUSDT"), params, clock=clock)
    try:
        await bot.refresh()
        assert len(await client.open_orders("ETHUSDT")) == 2 * PARAMS.order_levels

        async def send(key: Any, value: Any) -> None:
            await rig.exchange.orders_in.send(value, key=key)

        await set_market_status(rig.redis, send, market_command(rig.exchange.markets, "ETHUSDT", "halted"))
        for _ in range(3):  # rejected while halted; the other market goes on
            clock.now += 60
            await bot.refresh()
        eth, btc = bot.markets["ETHUSDT"], bot.markets["BTCUSDT"]
        assert eth.rejected > 0 and eth.errors > 0 and eth.resume_at > clock.now
        assert btc.errors == 0 and len(await client.open_orders("BTCUSDT")) == 2 * PARAMS.order_levels

        await set_market_status(rig.redis, send, market_command(rig.exchange.markets, "ETHUSDT", "trading"))
        clock.now += 120  # past the back-off
        await bot.refresh()
        assert len(await client.open_orders("ETHUSDT")) == 2 * PARAMS.order_levels

        rig.transport.failing = "503"
        for _ in range(2):
            with pytest.raises(BinanceError) as failed:
                await bot.refresh()
            assert "overloaded" in str(failed.value)
        rig.transport.failing = "down"
        stop = asyncio.Event()
        running = asyncio.create_task(bot.run(stop))
        await asyncio.sleep(0)  # it keeps trying (no exception escapes run)
        assert not running.done()
        rig.transport.failing = None
        refreshes = bot.refreshes
        await eventually(lambda: _async(bot.refreshes > refreshes), timeout=15)
        stop.set()
        await asyncio.wait_for(running, 10)
        assert await client.open_orders() == []  # stopping cancels every order
    finally:
        rig.transport.failing = None
        await client.close()


async def _async(value: bool) -> bool:
    return value


async def test_account_setup_is_idempotent(rig: Rig) -> None:
    again = await ensure_account(rig.redis, "market-maker")
    assert (again.account_id, again.api_key, again.secret) == (rig.mm_key.account_id, rig.mm_key.api_key,
                                                              rig.mm_key.secret)
    targets = {"BTC": Decimal("2.5"), "USDT": Decimal("1000")}
    account = rig.mm_key.account_id
    # a run stopped right after sending its deposits: the next run's top-up counts them, sends nothing
    for deposit in top_up_deposits(rig.exchange, account, {}, targets):
        await rig.exchange.orders_in.send(deposit, key=account)
    assert await top_up(rig.exchange, rig.redis, account, targets) == {}
    funded = {"BTC": 250_000_000, "USDT": 100_000_000_000}
    assert await balances(rig.redis, account) == funded
    assert await top_up(rig.exchange, rig.redis, account, targets) == {}  # again: nothing
    assert await balances(rig.redis, account) == funded
    # a balance that fell (or a higher target) is brought back up to the target, not beyond
    assert await top_up(rig.exchange, rig.redis, account, {"BTC": Decimal(3)}) == {"BTC": 50_000_000}
    assert (await balances(rig.redis, account))["BTC"] == 300_000_000


async def test_service_over_http_quotes_trades_and_stops_cleanly(redis_url: str) -> None:
    exchange, transport, app = await start_api(redis_url)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    lines: list[str] = []
    config = MarketMakerConfig(markets=("BTCUSDT", "SOLUSDT"), quote=QuoteParams(refresh_seconds=0.2),
                               noise=NoiseParams(interval_seconds=0.1), status_seconds=0.5, funding_multiple=20)
    service = MarketMakerService(exchange, config, out=lines.append)
    public = BinanceClient(f"http://127.0.0.1:{port}")
    try:
        while not server.started:
            assert not serving.done()
            await asyncio.sleep(0.01)
        await service.start(f"http://0.0.0.0:{port}")

        async def traded() -> bool:
            rows = await public.get("/api/v3/klines", symbol="SOLUSDT", interval="1s", limit=20)
            return len({row[4] for row in rows}) >= 2  # at least two different closes: the candles move

        await eventually(traded, timeout=30)
        depth = await public.get("/api/v3/depth", symbol="BTCUSDT")
        # never empty: new quotes go in before the old ones go (so, for a moment, up to both ladders)
        assert 1 <= len(depth["bids"]) <= 6 and 1 <= len(depth["asks"]) <= 6
        await eventually(lambda: _async(any(line.startswith("mm BTCUSDT: ref") for line in lines)), timeout=10)
        started = time.monotonic()
        await service.stop()
        assert time.monotonic() - started < 10
        depth = await public.get("/api/v3/depth", symbol="BTCUSDT")
        assert depth["bids"] == [] and depth["asks"] == []  # its quotes were cancelled at stop
        assert any(line.startswith("market maker: quoting 2 markets") for line in lines)
    finally:
        await public.close()
        server.should_exit = True
        await serving
        await exchange.app.stop()
        await transport.close()


async def test_a_market_can_follow_another_markets_mid(rig: Rig) -> None:
    client = rig.client(rig.mm_key)
    config = MarketMakerConfig(markets=("BTCUSDT", "ETHUSDT"), quote=PARAMS, status_seconds=0, funding_multiple=5,
                               overrides={"ETHUSDT": {"reference": "BTCUSDT", "order_amount": "0.001"}})
    bot = MarketMaker(client, config, out=lambda line: None)
    try:
        await bot.prepare()
        assert bot.markets["ETHUSDT"].walk is None
        await top_up(rig.exchange, rig.redis, rig.mm_key.account_id, bot.funding_needs())
        await bot.refresh()  # BTCUSDT quotes around its walk; ETHUSDT then follows BTCUSDT's mid
        await bot.refresh()
        book = await client.book_ticker("BTCUSDT")
        mid = (Decimal(book["bidPrice"]) + Decimal(book["askPrice"])) / 2
        eth = bot.markets["ETHUSDT"]
        assert abs(eth.ref_ticks - eth.rules.ticks(mid)) <= bot.markets["BTCUSDT"].ref_ticks * 20 // BPS
        assert len(await client.open_orders("ETHUSDT")) == 2 * PARAMS.order_levels, (bot.describe(), eth.last_error,
                                                                                    bot.totals, bot.limits)
    finally:
        await bot.cancel_everything()
        await client.close()


async def test_exchange_up_runner_starts_the_mm_after_the_api_and_stops_it_first(redis_url: str) -> None:
    """`run_exchange(..., clients=[mm])` as `exchange up` runs it: quoting once the API answers; on SIGTERM
    the market maker cancels its orders while the API still serves, then everything stops."""
    transport = RedisTransport(redis_url)
    await transport.client.flushall()
    exchange = build_exchange(transport)
    config = MarketMakerConfig(markets=("ETHUSDT",), quote=QuoteParams(refresh_seconds=0.2), status_seconds=0,
                               funding_multiple=5, noise=NoiseParams(interval_seconds=1.0))
    lines: list[str] = []
    service = MarketMakerService(exchange, config, out=lines.append)
    ready: list[str | None] = []
    running = asyncio.create_task(run_exchange(exchange, port=free_port(), on_ready=ready.append,
                                               clients=[service]))
    await eventually(lambda: _async(bool(ready) or running.done()), timeout=60)
    assert ready and ready[0] is not None, running
    redis = Redis.from_url(redis_url)
    try:
        async def quoting() -> str | None:
            account = await redis.hget(ACCOUNTS_KEY, "market-maker")
            orders = await redis.hgetall(f"orders:open:{int(account)}") if account else {}
            return f"orders:open:{int(account)}" if len(orders) >= 4 else None

        open_key = await eventually(quoting, timeout=30)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(running, 30)
        assert await redis.hgetall(open_key) == {}  # cancelled before the API stopped
        assert not any("could not cancel" in line for line in lines)
    finally:
        if not running.done():
            running.cancel()
        await redis.aclose()
