"""Request-weight rate limits, Binance style: weight per endpoint, per client IP, per minute.

Over the limit a request gets 429, code -1003, `Retry-After` (seconds to the next
minute) and `X-MBX-USED-WEIGHT-1M`. A client that keeps sending after its 429s (more
than `BAN_AFTER_REJECTED` refused requests in one minute) is banned, as Binance
does: HTTP 418, code -1003, "IP banned until <ms>", for 2 minutes, doubling for each
repeated offence up to 3 days; a banned IP's requests are refused without counting.
Counters are shared by every API replica: each counts in memory and, every `SYNC_S`,
adds what it spent to the minute's hash in Redis (``apiweight:<minute>``, field: the
IP) and reads back everybody's totals for the clients it has seen, in one pipelined
round trip. So a client spread over N replicas by a load balancer gets the same budget
as on one, give or take what it spends on the other replicas within one sync interval
(and its first request on each replica, which that replica counts alone). Without Redis (a failed sync)
each replica goes on limiting on what it knows. Bans stay per replica (a banned client
sending to another replica is refused there once the shared count shows it over).
Weights are fixed per route (Binance varies some with `limit` and
`symbol`; ours use the common case). Sign-up and login cost a lot (each hashes a
password with Argon2), so they weigh a lot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from litestar import MediaType, Request, Response

log = logging.getLogger(__name__)

DEFAULT_WEIGHT: Final = 1
WEIGHTS: Final[dict[str, int]] = {
    "/api/v3/exchangeInfo": 20, "/api/v3/depth": 5, "/api/v3/trades": 25, "/api/v3/klines": 2,
    "/api/v3/ticker/24hr": 2, "/api/v3/ticker/price": 2, "/api/v3/ticker/bookTicker": 2, "/api/v3/avgPrice": 2,
    "GET /api/v3/order": 4, "/api/v3/openOrders": 6, "/api/v3/allOrders": 20, "/api/v3/myTrades": 20,
    "/api/v3/account": 20,
    # ours: an Argon2 hash each (tens of ms of CPU), so at most 20 sign-ups and 60 logins per IP and minute
    "/api/x/signup": 300, "/api/x/login": 100,
}
BAN_AFTER_REJECTED: Final = 100
"""Refused (429) requests of one IP in one minute after which it is banned (418)."""
SYNC_S: Final = 0.2
"""How often a replica shares its spent weight and learns the others' (`WeightLimiter.sync`)."""
BAN_FIRST_S: Final = 120
BAN_MAX_S: Final = 3 * 24 * 3600


def weight_of(method: str, path: str) -> int:
    return WEIGHTS.get(f"{method} {path}", WEIGHTS.get(path, DEFAULT_WEIGHT))


class Verdict(NamedTuple):
    """What the limiter says of one request: `status` 200 (go on), 429 (over the limit) or 418 (banned)."""

    status: int
    used: int
    """Weight used this minute, this request included (0 for a banned IP)."""
    retry_s: int
    """Seconds until the client may send again (the next minute, or the ban's end)."""
    banned_until_ms: int = 0


class WeightLimiter:
    """Fixed one-minute windows of used weight per client IP, with bans for clients that do not back off."""

    def __init__(self, per_minute: int, ban_after: int = BAN_AFTER_REJECTED, client: Any = None) -> None:
        self.per_minute = per_minute
        self.ban_after = ban_after
        self.client = client
        """A redis.asyncio client shared with the other replicas (None: this process counts alone)."""
        self._minute = 0
        self._used: dict[str, int] = {}  # weight spent here this minute
        self._unsynced: dict[str, int] = {}  # ... of which not yet added to the shared count
        self._others: dict[str, int] = {}  # weight the other replicas spent this minute, as of the last sync
        self._task: asyncio.Task[None] | None = None
        self._rejected: dict[str, int] = {}
        self._banned: dict[str, float] = {}
        self._offences: dict[str, int] = {}
        self.clock: Callable[[], float] = time.time
        """Seconds since the epoch (tests fix it, so a minute does not roll over mid-test)."""

    def spend(self, client: str, weight: int, now: float | None = None) -> tuple[int, int]:
        """(weight used this minute including this request, seconds until the window resets)."""
        now = self.clock() if now is None else now
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._used, self._rejected, self._unsynced, self._others = minute, {}, {}, {}, {}
        used = self._used.get(client, 0) + weight
        self._used[client] = used
        self._unsynced[client] = self._unsynced.get(client, 0) + weight
        return used + self._others.get(client, 0), 60 - int(now % 60)

    async def sync(self) -> None:
        """Add this replica's unshared weight to the minute's shared count and learn the others' totals."""
        if self.client is None or not self._used:
            return
        minute, spent, self._unsynced = self._minute, self._unsynced, {}
        clients = list(self._used)
        key = f"apiweight:{minute}"
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for client, weight in spent.items():
                    pipe.hincrby(key, client, weight)
                pipe.expire(key, 120)
                pipe.hmget(key, clients)
                totals = (await pipe.execute())[-1]
        except Exception as exc:  # Redis away: keep the weight for the next sync, limit on what is known here
            if minute == self._minute:
                for client, weight in spent.items():
                    self._unsynced[client] = self._unsynced.get(client, 0) + weight
            log.warning("sharing request weight failed (%s); limiting on this replica's count", exc)
            return
        if minute != self._minute:
            return  # the minute turned meanwhile: its counts are gone
        for client, total in zip(clients, totals, strict=True):
            if total is not None:  # the total holds what this replica had spent up to the HINCRBY
                mine = self._used[client] - self._unsynced.get(client, 0)
                self._others[client] = max(0, int(total) - mine)

    async def start(self) -> None:
        """Sync every `SYNC_S` until `stop` (only with a client and a limit)."""
        if self.client is not None and self.per_minute > 0 and self._task is None:
            self._task = asyncio.create_task(self._sync_loop(), name="weight-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            await self.sync()

    def charge(self, client: str, weight: int, now: float | None = None) -> Verdict:
        """Charge a request of `weight` to `client` and say whether it may go on."""
        now = self.clock() if now is None else now
        until = self._banned.get(client)
        if until is not None:
            if now < until:
                return Verdict(418, 0, max(1, int(until - now + 0.999)), int(until * 1000))
            del self._banned[client]
        used, retry = self.spend(client, weight, now)
        if used <= self.per_minute:
            return Verdict(200, used, retry)
        rejected = self._rejected[client] = self._rejected.get(client, 0) + 1
        if rejected <= self.ban_after:
            return Verdict(429, used, retry)
        offences = self._offences[client] = self._offences.get(client, 0) + 1
        seconds = min(BAN_FIRST_S * 2 ** min(offences - 1, 20), BAN_MAX_S)
        self._banned[client] = now + seconds
        self._rejected.pop(client, None)
        return Verdict(418, used, seconds, int((now + seconds) * 1000))

    async def before_request(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]] | None:
        if self.per_minute <= 0 or not request.url.path.startswith("/api/"):
            return None
        client = request.client.host if request.client else "?"
        verdict = self.charge(client, weight_of(request.method, request.url.path))
        if verdict.status == 200:
            return None
        headers = {"Retry-After": str(verdict.retry_s), "X-MBX-USED-WEIGHT-1M": str(verdict.used)}
        if verdict.status == 418:
            return Response({"code": -1003, "msg": f"Way too many requests; IP({client}) banned until "
                                                   f"{verdict.banned_until_ms}. Please use the websocket for live "
                                                   "updates to avoid bans."},
                            status_code=418, media_type=MediaType.JSON, headers=headers)
        return Response({"code": -1003, "msg": f"Too many requests; current limit of IP({client}) is "
                                               f"{self.per_minute} requests per minute. Please use the "
                                               "websocket for live updates to avoid polling the API."},
                        status_code=429, media_type=MediaType.JSON, headers=headers)
