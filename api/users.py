"""Accounts for humans: sign-up, login, logout and "who am I" under `/api/x/`, for the web UI.

- `POST /api/x/signup` (`username`, `password`, form-encoded): a new, empty account (the
  same kind and id space as `exchange admin create-account`, without an API key) and a
  session for it.
- `POST /api/x/login` (`username`, `password`): a new session.
- `POST /api/x/logout`: ends the session.
- `GET /api/x/me`: `{"accountId", "username"}` of the session, or 401.

Each answer that starts a session sets the `exchange_session` cookie (HttpOnly,
SameSite=Strict, Secure over HTTPS); every request here, like every request the UI
makes with the cookie, must send `X-Exchange-Session: 1` (see `api.sessions`).
Passwords are hashed with Argon2id (argon2-cffi, RFC 9106 parameters) in a worker
thread, so hashing does not stall the event loop; a login for an unknown name still
verifies against a dummy hash, so timing does not tell which names exist. After
`LOGIN_FAILURES_MAX` failed logins a name is locked for `LOGIN_LOCK_S` seconds, and
after `LOGIN_IP_FAILURES_MAX` failed logins from one client IP (whatever the names)
that IP's logins are refused as long. Sign-up and login also carry heavy request
weights in the per-IP rate limit (`api.limits`).

Redis keys: ``user:{lower-case name}`` -> hash ``name``, ``account_id``, ``password``
(the Argon2 hash); ``loginfail:{lower-case name}`` and ``loginfail:ip:{ip}`` -> failed
attempts (expiring).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from litestar import MediaType, Request, Response, Router, get, post
from litestar.datastructures import Cookie

from api.accounts import create_account, revoke_api_key
from api.errors import ApiError
from api.params import Params, read_params
from api.sessions import (
    COOKIE,
    create_session,
    end_session,
    not_logged_in,
    require_csrf_header,
    session_account,
    session_token,
)
from api.store import mget, multi

USERNAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$")
PASSWORD_MIN: Final = 8
PASSWORD_MAX: Final = 128
LOGIN_FAILURES_MAX: Final = 10
LOGIN_LOCK_S: Final = 900
LOGIN_IP_FAILURES_MAX: Final = 100
"""Failed logins from one client IP (any names) within `LOGIN_LOCK_S` after which its logins are refused."""


@dataclass(frozen=True)
class UsersConfig:
    """Sessions of the web UI.

    | variable                   | default | meaning                         |
    |----------------------------|---------|---------------------------------|
    | `EXCHANGE_SESSION_TTL_S`   | 43200   | lifetime of a login session (s) |
    """

    session_ttl_s: int = 12 * 3600

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> UsersConfig:
        raw = environ.get("EXCHANGE_SESSION_TTL_S", "").strip()
        ttl = int(raw) if raw else cls.session_ttl_s
        if ttl <= 0:
            raise ValueError("EXCHANGE_SESSION_TTL_S must be > 0")
        return cls(session_ttl_s=ttl)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _credentials(params: Params) -> tuple[str, str]:
    name = params.req("username")
    password = params.req("password")
    if not USERNAME_RE.match(name):
        raise ApiError(-1100, "Illegal characters found in parameter 'username'; legal range is "
                              "'3 to 32 letters, digits, _ . - starting with a letter or digit'.")
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ApiError(-1100, f"Parameter 'password' must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long.")
    return name, password


class Users:
    """The handlers' shared state: the password hasher, a dummy hash and the config."""

    def __init__(self, config: UsersConfig) -> None:
        self.config = config
        self.hasher = PasswordHasher()
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        if stored is None:
            if self._dummy is None:
                self._dummy = await self.hash("not a real password")
            stored = self._dummy
        try:
            return await asyncio.to_thread(self.hasher.verify, stored, password) and stored is not self._dummy
        except (VerificationError, InvalidHashError):
            return False

    def session_response(self, request: Request[Any, Any, Any], body: dict[str, Any],
                         token: str | None) -> Response[dict[str, Any]]:
        secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
        cookie = Cookie(key=COOKIE, value=token or "", path="/", httponly=True, samesite="strict", secure=secure,
                        max_age=self.config.session_ttl_s if token else 0)
        return Response(body, status_code=200, media_type=MediaType.JSON, cookies=[cookie],
                        headers={"Cache-Control": "no-store"})


def users_router(config: UsersConfig | None = None) -> Router:
    """The `/api/x` sign-up, login, logout and me endpoints."""
    users = Users(config or UsersConfig.from_env())

    async def form(request: Request[Any, Any, Any]) -> Params:
        require_csrf_header(request.headers)
        return await read_params(request)

    @post("/signup", status_code=200)
    async def signup(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        """Create an account with a username and password; logs it in."""
        client = request.app.state.api.client
        name, password = _credentials(await form(request))
        hashed = await users.hash(password)
        key = f"user:{name.lower()}"
        if not await client.hsetnx(key, "name", name):
            raise ApiError(-1000, f"The username '{name}' is already taken.", 409)
        new = await create_account(client, name)
        await revoke_api_key(client, new.api_key)  # a web account starts without API keys
        await client.hset(key, mapping={"account_id": str(new.account_id), "password": hashed})
        token = await create_session(client, new.account_id, users.config.session_ttl_s)
        return users.session_response(request, {"accountId": new.account_id, "username": name}, token)

    @post("/login", status_code=200)
    async def login(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        """Start a session for a username and password."""
        client = request.app.state.api.client
        params = await form(request)
        name, password = params.req("username"), params.req("password")
        if not USERNAME_RE.match(name) or len(password) > PASSWORD_MAX:
            raise ApiError(-1002, "Incorrect username or password.", 401)  # no such account can exist
        lower = name.lower()
        by_ip = f"loginfail:ip:{request.client.host if request.client else '?'}"
        failures, ip_failures = (int(v or 0) for v in await mget(client, [f"loginfail:{lower}", by_ip]))
        if failures >= LOGIN_FAILURES_MAX:
            raise ApiError(-1003, "Too many failed logins for this username; try again later.", 429,
                           {"Retry-After": str(LOGIN_LOCK_S)})
        if ip_failures >= LOGIN_IP_FAILURES_MAX:  # one client trying many names (credential stuffing)
            raise ApiError(-1003, "Too many failed logins from this address; try again later.", 429,
                           {"Retry-After": str(LOGIN_LOCK_S)})
        record = {_text(k): _text(v) for k, v in (await client.hgetall(f"user:{lower}")).items()}
        stored = record.get("password") if record.get("account_id") else None
        if not await users.verify(stored, password):
            # On a cluster the two counters are in different slots: a plain pipeline (each INCR and its
            # EXPIRE are sent together; only a connection lost in between could leave a counter unexpired).
            async with multi(client) as pipe:
                for counter in (f"loginfail:{lower}", by_ip):
                    pipe.incr(counter)
                    pipe.expire(counter, LOGIN_LOCK_S)
                await pipe.execute()
            raise ApiError(-1002, "Incorrect username or password.", 401)
        assert stored is not None
        await client.delete(f"loginfail:{lower}")
        if users.hasher.check_needs_rehash(stored):
            await client.hset(f"user:{lower}", "password", await users.hash(password))
        account_id = int(record["account_id"])
        token = await create_session(client, account_id, users.config.session_ttl_s)
        return users.session_response(request, {"accountId": account_id, "username": record["name"]}, token)

    @post("/logout", status_code=200)
    async def logout(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        """End the session (idempotent) and clear its cookie."""
        require_csrf_header(request.headers)
        token = session_token(request.headers)
        if token is not None:
            await end_session(request.app.state.api.client, token)
        return users.session_response(request, {}, None)

    @get("/me")
    async def me(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        """The session's account id and username."""
        require_csrf_header(request.headers)
        client = request.app.state.api.client
        token = session_token(request.headers)
        account_id = await session_account(client, token) if token else None
        if account_id is None:
            raise not_logged_in()
        name = _text(await client.hget(f"acct:{account_id}", "name") or "")
        return Response({"accountId": account_id, "username": name}, media_type=MediaType.JSON,
                        headers={"Cache-Control": "no-store"})

    return Router(path="/api/x", route_handlers=[signup, login, logout, me])
