"""Rate limits: request weights (sign-up and login too), bans (418) for clients that ignore 429s,
and brute-force protection of login by client IP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar

from api.context import ApiConfig
from api.errors import ApiError
from api.limits import BAN_FIRST_S, BAN_MAX_S, WeightLimiter
from api.users import LOGIN_IP_FAILURES_MAX
from api.ws.wsapi import _spend
from tests.api.conftest import error, start_api

UI = {"X-Exchange-Session": "1", "Content-Type": "application/x-www-form-urlencoded"}


def test_a_client_that_ignores_429s_is_banned_longer_each_time() -> None:
    limiter = WeightLimiter(10, ban_after=3)
    assert limiter.charge("a", 10, now=60.0).status == 200
    assert [limiter.charge("a", 1, now=61.0).status for _ in range(3)] == [429, 429, 429]
    ban = limiter.charge("a", 1, now=62.0)
    assert ban.status == 418 and ban.retry_s == BAN_FIRST_S and ban.banned_until_ms == (62 + BAN_FIRST_S) * 1000
    assert limiter.charge("b", 1, now=62.0).status == 200  # per IP
    banned = limiter.charge("a", 1, now=100.0)  # banned requests are refused without counting
    assert banned.status == 418 and banned.used == 0 and banned.retry_s == 62 + BAN_FIRST_S - 100
    after = 62.0 + BAN_FIRST_S
    assert limiter.charge("a", 1, now=after).status == 200  # the ban is over
    for _ in range(4):
        limiter.charge("a", 10, now=after)
    second = limiter.charge("a", 10, now=after)
    assert second.status == 418 and second.retry_s == 2 * BAN_FIRST_S  # a repeat offence: twice as long
    limiter._offences["a"] = 100
    limiter._banned.clear()
    for _ in range(6):
        last = limiter.charge("a", 10, now=after + 1000)
    assert last.status == 418 and last.retry_s == BAN_MAX_S


def test_websocket_api_answers_429_then_418() -> None:
    limiter = WeightLimiter(1, ban_after=1)
    _spend(limiter, "ip", "order.place")
    with pytest.raises(ApiError) as limited:
        _spend(limiter, "ip", "order.place")
    assert (limited.value.status, limited.value.code) == (429, -1003)
    with pytest.raises(ApiError) as banned:
        _spend(limiter, "ip", "order.place")
    assert (banned.value.status, banned.value.code) == (418, -1003)
    assert int(banned.value.headers["retryAfter"]) > 0


@pytest.fixture
async def limited_app(redis_url: str) -> AsyncIterator[Litestar]:
    _, transport, app = await start_api(redis_url, start_agents=False, config=ApiConfig(weight_per_minute=300))
    app.state.limiter.clock = lambda: 6_000_000.0  # one minute throughout the test
    try:
        yield app
    finally:
        await app.state.api.writer.close()
        await transport.close()


def _client(app: Litestar, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 1234)), base_url="http://t")


async def test_http_ban_after_ignored_429s(limited_app: Litestar) -> None:
    limited_app.state.limiter.ban_after = 2
    async with _client(limited_app) as client:
        statuses = [(await client.get("/api/v3/exchangeInfo")).status_code for _ in range(15)]
        assert statuses[:15] == [200] * 15
        assert [(await client.get("/api/v3/exchangeInfo")).status_code for _ in range(2)] == [429, 429]
        r = await client.get("/api/v3/ping")
        assert error(r) == (418, -1003) and "banned until" in r.json()["msg"]
        assert int(r.headers["Retry-After"]) == BAN_FIRST_S
        assert (await client.get("/api/v3/ping")).status_code == 418  # even the lightest request
    async with _client(limited_app, "10.1.2.3") as other:
        assert (await other.get("/api/v3/ping")).status_code == 200


async def test_signup_and_login_weigh_heavily(limited_app: Litestar) -> None:
    async with _client(limited_app) as client:
        r = await client.post("/api/x/signup", content="username=hana&password=hana's password", headers=UI)
        assert r.status_code == 200, r.text
        r = await client.post("/api/x/signup", content="username=ivan&password=ivan's password", headers=UI)
        assert error(r) == (429, -1003) and r.headers["Retry-After"]
        assert not await limited_app.state.api.client.exists("user:ivan")  # refused before any work
    async with _client(limited_app, "10.0.0.9") as other:
        for _ in range(3):
            r = await other.post("/api/x/login", content="username=hana&password=hana's password", headers=UI)
            assert r.status_code == 200, r.text
        r = await other.post("/api/x/login", content="username=hana&password=hana's password", headers=UI)
        assert error(r) == (429, -1003)


async def test_failed_logins_from_one_address_lock_that_address(redis_url: str) -> None:
    _, transport, app = await start_api(redis_url, start_agents=False)
    redis: Any = app.state.api.client
    try:
        async with _client(app, "10.0.0.7") as attacker, _client(app, "10.0.0.8") as user:
            r = await user.post("/api/x/signup", content="username=jill&password=jill's password", headers=UI)
            assert r.status_code == 200
            # many names tried from one address: the last allowed failure, then the address is locked
            await redis.set("loginfail:ip:10.0.0.7", LOGIN_IP_FAILURES_MAX - 1)
            r = await attacker.post("/api/x/login", content="username=kim&password=wrong password", headers=UI)
            assert error(r) == (401, -1002)
            r = await attacker.post("/api/x/login", content="username=jill&password=jill's password", headers=UI)
            assert error(r) == (429, -1003) and r.headers["Retry-After"]
            assert "exchange_session" not in r.headers.get("set-cookie", "")
            # the name itself is not locked for others
            r = await user.post("/api/x/login", content="username=jill&password=jill's password", headers=UI)
            assert r.status_code == 200
    finally:
        await app.state.api.writer.close()
        await transport.close()


async def test_replicas_share_one_budget_per_client(redis_url: str) -> None:
    """Two API replicas (two limiters on one Redis): a client's weight on one counts on the other
    after a sync, so spreading requests over replicas buys no extra budget; other clients are apart."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    await client.flushall()
    a, b = WeightLimiter(50, client=client), WeightLimiter(50, client=client)
    now = 6_000_030.0  # mid-minute, the same for both
    assert a.charge("ip", 30, now=now).status == 200
    await a.sync()
    await b.sync()  # b has no weight of its own yet: learns nothing, shares nothing
    assert b.charge("ip", 15, now=now).status == 200  # b knows nothing of a's 30 until it syncs with weight
    await b.sync()
    refused = b.charge("ip", 10, now=now)
    assert (refused.status, refused.used) == (429, 30 + 15 + 10)  # a's 30 counted on b
    assert b.charge("other ip", 40, now=now).status == 200
    await b.sync()
    await a.sync()
    assert a.charge("ip", 1, now=now).status == 429  # and b's spending (its refused request too) on a
    assert int(await client.hget("apiweight:100000", "ip") or 0) == 30 + 15 + 10  # a's last 1 not shared yet
    assert int(await client.hget("apiweight:100000", "other ip") or 0) == 40
    assert a.charge("ip", 1, now=now + 60).status == 200  # a new minute: a new budget
    await client.aclose()


async def test_a_failed_sync_keeps_limiting_on_the_local_count() -> None:
    class Down:
        def pipeline(self, transaction: bool = False) -> Any:
            raise ConnectionError("redis is down")

    limiter = WeightLimiter(10, client=Down())
    now = 6_000_030.0
    assert limiter.charge("ip", 8, now=now).status == 200
    await limiter.sync()  # logged, not raised; the 8 stay to be shared later
    assert limiter._unsynced == {"ip": 8}
    assert limiter.charge("ip", 3, now=now).status == 429
