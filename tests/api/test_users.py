"""Sign-up, login, logout and the session cookie as a way into the signed endpoints (api.users, api.sessions)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from api.sessions import COOKIE
from pipeline.core.messages import Deposit
from tests.api.conftest import Api, error, eventually

UI = {"X-Exchange-Session": "1"}
FORM = {**UI, "Content-Type": "application/x-www-form-urlencoded"}


async def _post(client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None,
                **params: Any) -> httpx.Response:
    return await client.post(path, data=params, headers=FORM if headers is None else headers)


def _browser(api: Api) -> httpx.AsyncClient:
    """Another client (its own cookie jar) on the same app."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://testserver")


async def test_signup_logs_in_and_account_starts_empty(api: Api) -> None:
    r = await _post(api.client, "/api/x/signup", username="alice", password="correct horse")
    assert r.status_code == 200, r.text
    account_id = r.json()["accountId"]
    assert r.json() == {"accountId": account_id, "username": "alice"}
    cookie = r.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert str(await api.redis.hget(f"acct:{account_id}", "name"), "utf-8") == "alice"  # a normal account
    assert not await api.redis.smembers(f"acct:{account_id}:keys")  # without an API key
    assert b"correct horse" not in b"".join((await api.redis.hgetall("user:alice")).values())
    me = await api.client.get("/api/x/me", headers=UI)
    assert me.json() == {"accountId": account_id, "username": "alice"}
    account = await api.client.get("/api/v3/account", headers=UI)
    assert account.status_code == 200 and account.json()["uid"] == account_id
    assert account.json()["balances"] == []


async def test_signup_bad_input_and_duplicate_name(api: Api) -> None:
    assert error(await _post(api.client, "/api/x/signup", username="bob", password="short")) == (400, -1100)
    assert error(await _post(api.client, "/api/x/signup", username="b", password="long enough")) == (400, -1100)
    assert error(await _post(api.client, "/api/x/signup", username="bob<script>", password="long enough")) == (
        400, -1100)
    assert error(await _post(api.client, "/api/x/signup", password="long enough")) == (400, -1102)
    assert (await _post(api.client, "/api/x/signup", username="bob", password="long enough")).status_code == 200
    assert error(await _post(api.client, "/api/x/signup", username="BOB", password="other password")) == (409, -1000)
    assert error(await _post(api.client, "/api/x/signup", headers={}, username="carol",
                             password="long enough")) == (403, -1002)


async def test_login_logout(api: Api) -> None:
    await _post(api.client, "/api/x/signup", username="dave", password="dave's password")
    async with _browser(api) as other:
        assert error(await other.get("/api/x/me", headers=UI)) == (401, -1002)
        assert error(await _post(other, "/api/x/login", username="dave", password="wrong password")) == (401, -1002)
        assert error(await _post(other, "/api/x/login", username="nobody", password="wrong password")) == (
            401, -1002)
        assert error(await _post(other, "/api/x/login", username="x" * 300, password="wrong password")) == (
            401, -1002)
        assert error(await _post(other, "/api/x/login", username="dave")) == (400, -1102)
        r = await _post(other, "/api/x/login", username="Dave", password="dave's password")
        assert r.status_code == 200 and r.json()["username"] == "dave"
        assert (await other.get("/api/x/me", headers=UI)).status_code == 200
        token = other.cookies[COOKIE]
        r = await _post(other, "/api/x/logout")
        assert r.status_code == 200 and "Max-Age=0" in r.headers["set-cookie"]
        # the old token is dead on the server, not only forgotten by the browser
        other.cookies.set(COOKIE, token)
        assert error(await other.get("/api/v3/openOrders", headers=UI)) == (401, -1002)
    # the first session is unaffected
    assert (await api.client.get("/api/x/me", headers=UI)).status_code == 200


async def test_session_trades_only_its_own_account(api: Api) -> None:
    r = await _post(api.client, "/api/x/signup", username="erin", password="erin's password")
    erin = r.json()["accountId"]
    await api.exchange.orders_in.send(Deposit(time.time_ns(), erin, "USDT", 1000 * 10**8), key=erin)
    mallory_key = await api.account("mallory", funds={"USDT": "1000"})

    async def funded() -> bool:
        return bool(await api.redis.hget(f"balances:{erin}", "USDT"))
    await eventually(funded)
    order = dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price="20000")
    r = await _post(api.client, "/api/v3/order", **order)
    assert r.status_code == 200, r.text
    erin_order = r.json()["orderId"]
    r = await api.signed("POST", "/api/v3/order", mallory_key, **order)
    mallory_order = r.json()["orderId"]
    listed = (await api.client.get("/api/v3/openOrders", headers=UI)).json()
    assert [o["orderId"] for o in listed] == [erin_order]
    # someone else's order is unknown to the session
    r = await api.client.delete(f"/api/v3/order?symbol=BTCUSDT&orderId={mallory_order}", headers=UI)
    assert error(r) == (400, -2011)
    r = await api.client.get(f"/api/v3/order?symbol=BTCUSDT&orderId={mallory_order}", headers=UI)
    assert error(r) == (400, -2013)
    assert (await api.order_view("BTCUSDT", mallory_order) or {})["status"] == "NEW"
    # a session is not an admin
    r = await _post(api.client, "/api/x/admin/deposit", account=str(erin), asset="USDT", amount="5")
    assert error(r) == (401, -2015)
    # its own order it can cancel; the user data stream's listenKey comes with the session too
    r = await api.client.delete(f"/api/v3/order?symbol=BTCUSDT&orderId={erin_order}", headers=UI)
    assert r.status_code == 200 and r.json()["status"] == "CANCELED"
    r = await api.client.post("/api/v3/userDataStream", headers=UI)
    assert r.status_code == 200 and len(r.json()["listenKey"]) == 60


async def test_session_without_csrf_header_is_refused(api: Api) -> None:
    r = await _post(api.client, "/api/x/signup", username="frank", password="frank's password")
    account_id = r.json()["accountId"]
    order = dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price="1")
    r = await api.client.post("/api/v3/order", data=order)  # what a cross-site form post would look like
    assert error(r) == (403, -1002)
    assert error(await api.client.get("/api/v3/account")) == (403, -1002)
    assert error(await api.client.post("/api/v3/userDataStream")) == (403, -1002)
    assert error(await api.client.post("/api/x/logout")) == (403, -1002)
    assert not await api.redis.hgetall(f"orders:open:{account_id}")
    assert (await api.client.get("/api/x/me", headers=UI)).status_code == 200  # still logged in


async def test_repeated_failed_logins_lock_the_name(api: Api) -> None:
    await _post(api.client, "/api/x/signup", username="gina", password="gina's password")
    async with _browser(api) as other:
        for _ in range(10):
            assert error(await _post(other, "/api/x/login", username="gina", password="guess guess")) == (401, -1002)
        r = await _post(other, "/api/x/login", username="gina", password="gina's password")
        assert error(r) == (429, -1003) and r.headers["retry-after"]

