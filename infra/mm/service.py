"""The market maker and noise trader as a background service of `exchange up`.

Started once the API answers (`start(address)` returns at once; the set-up runs in a
task): it ensures the `market-maker` and `noise-trader` accounts, tops up their funds,
then both bots trade over HTTP against `address` like any client. `stop()` stops them
and cancels the market maker's orders while the API is still up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from infra.mm.bot import MarketMaker, stderr_line
from infra.mm.client import BinanceClient, BinanceError, quiet_http_logs
from infra.mm.config import MarketMakerConfig
from infra.mm.noise import NoiseTrader
from infra.mm.setup import ensure_account, top_up
from pipeline.errors import ExchangeError
from pipeline.exchange import Exchange

log = logging.getLogger(__name__)

MM_ACCOUNT = "market-maker"
NOISE_ACCOUNT = "noise-trader"
STOP_TIMEOUT_S = 10.0
RETRY_S = 10.0


class MarketMakerService:
    """`exchange up`'s market maker (see the module docstring)."""

    def __init__(self, exchange: Exchange, config: MarketMakerConfig | None = None, *,
                 out: Callable[[str], None] = stderr_line) -> None:
        self.exchange = exchange
        self.config = config or MarketMakerConfig()
        self.maker: MarketMaker | None = None
        self.noise: NoiseTrader | None = None
        self._out = out
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._clients: list[BinanceClient] = []

    async def start(self, address: str) -> None:
        quiet_http_logs()
        address = address.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")
        self._task = asyncio.create_task(self._main(address), name="market-maker")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._task, STOP_TIMEOUT_S)
        except TimeoutError:
            self._out("market maker: did not stop in time")
        except Exception:
            log.exception("market maker failed")

    async def _main(self, address: str) -> None:
        """Set up and trade; after a failure of the exchange or the network, start over (until stopped)."""
        try:
            while not self._stop.is_set():
                try:
                    await self._trade(address)
                    return
                except (ExchangeError, OSError) as exc:
                    self._out(f"market maker: {exc}; starting over in {RETRY_S:g}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), RETRY_S)
        except (ValueError, LookupError) as exc:
            self._out(f"market maker stopped: {exc}")
        finally:
            for client in self._clients:
                with contextlib.suppress(Exception):
                    await client.close()

    def _client(self, address: str, key: str | None = None, secret: str | None = None) -> BinanceClient:
        client = BinanceClient(address, key, secret, timeout=self.config.request_timeout_seconds)
        self._clients.append(client)
        return client

    async def _trade(self, address: str) -> None:
        redis = getattr(self.exchange.app.transport, "client", None)
        if redis is None:
            raise BinanceError(0, 0, "the market maker's account set-up needs a Redis transport")
        mm_key = await ensure_account(redis, MM_ACCOUNT)
        maker = MarketMaker(self._client(address, mm_key.api_key, mm_key.secret), self.config, out=self._out)
        await maker.prepare()
        self.maker = maker
        await top_up(self.exchange, redis, mm_key.account_id, maker.funding_needs())
        q = self.config.quote
        description = (f"market maker: quoting {len(maker.markets)} markets as account {mm_key.account_id} "
                       f"({q.order_levels} levels a side from {q.bid_spread_bps}/{q.ask_spread_bps} bps, "
                       f"refresh {q.refresh_seconds:g}s)")
        noise: NoiseTrader | None = None
        if self.config.noise.enabled:  # funded before either bot trades: top-ups wait for quiet balances
            noise_key = await ensure_account(redis, NOISE_ACCOUNT)
            noise = NoiseTrader(self._client(address, noise_key.api_key, noise_key.secret),
                                {s: m.rules for s, m in maker.markets.items()}, self.config.noise,
                                seed=self.config.seed, out=self._out)
            refs = {s: m.ref_ticks for s, m in maker.markets.items()}
            await top_up(self.exchange, redis, noise_key.account_id, noise.funding_needs(refs))
            self.noise = noise
            description += f", noise trader account {noise_key.account_id}"
        if self._stop.is_set():
            return
        tasks = [asyncio.create_task(maker.run(self._stop), name="mm-quotes")]
        if noise is not None:
            tasks.append(asyncio.create_task(noise.run(self._stop), name="mm-noise"))
        self._out(description)
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await maker.close()
