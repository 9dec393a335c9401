"""Browser sessions for the web UI: an opaque random token in an HttpOnly, SameSite=Strict cookie.

The browser never holds an API secret. After sign-up or login (`api.users`) it holds
only the session cookie; the signed `/api/v3` endpoints accept that cookie instead of
an API key and signature (`session_key`, called by `api.auth` when no
`X-MBX-APIKEY` is sent). Against cross-site request forgery every request made with
the cookie must also carry the `X-Exchange-Session: 1` header, which a cross-site
form or image cannot send (and a cross-site script cannot without a CORS preflight
that this app never grants); SameSite=Strict keeps the cookie off cross-site requests
in the first place.

Redis keys: ``session:{sha256(token)}`` -> account id, expiring after the session's
lifetime (the token itself is never stored, so a read of Redis does not yield live
sessions). A session can trade and read, never act as admin.
"""

from __future__ import annotations

import hashlib
import secrets
from http.cookies import CookieError, SimpleCookie
from typing import Any, Final

from api.accounts import ApiKey
from api.errors import ApiError

COOKIE: Final = "exchange_session"
CSRF_HEADER: Final = "x-exchange-session"
SESSION_PERMISSIONS: Final = frozenset({"read", "trade"})
TOKEN_RE_LEN: Final = 43
"""Length of `secrets.token_urlsafe(32)`."""


def _redis_key(token: str) -> str:
    return "session:" + hashlib.sha256(token.encode()).hexdigest()


def session_token(headers: Any) -> str | None:
    """The session cookie's value in a request's `Cookie` header, if any."""
    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    if morsel is None or len(morsel.value) != TOKEN_RE_LEN:
        return None
    return morsel.value


async def create_session(client: Any, account_id: int, ttl_s: int) -> str:
    """A new session token for `account_id`, valid `ttl_s` seconds."""
    token = secrets.token_urlsafe(32)
    await client.set(_redis_key(token), str(account_id), ex=ttl_s)
    return token


async def session_account(client: Any, token: str) -> int | None:
    """The account of a live session token."""
    raw = await client.get(_redis_key(token))
    return int(raw) if raw is not None else None


async def end_session(client: Any, token: str) -> None:
    await client.delete(_redis_key(token))


def not_logged_in() -> ApiError:
    return ApiError(-1002, "You are not authorized to execute this request: not logged in or the session expired.",
                    401)


def require_csrf_header(headers: Any) -> None:
    """Refuse a cookie-authenticated request without the anti-CSRF header."""
    if headers.get(CSRF_HEADER) != "1":
        raise ApiError(-1002, "You are not authorized to execute this request: a session request must send the "
                              "header X-Exchange-Session: 1.", 403)


async def session_key(client: Any, headers: Any, permission: str) -> ApiKey | None:
    """The session's account as an `ApiKey` (no secret), None if the request has no session cookie.

    Raises an ApiError for a missing anti-CSRF header, an unknown or expired session,
    or a permission sessions do not have (admin).
    """
    token = session_token(headers)
    if token is None:
        return None
    require_csrf_header(headers)
    account_id = await session_account(client, token)
    if account_id is None:
        raise not_logged_in()
    if permission not in SESSION_PERMISSIONS:
        raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    return ApiKey("session", account_id, "", SESSION_PERMISSIONS)
