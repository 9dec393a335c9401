"""Signed requests (Binance SIGNED endpoints): API key, HMAC-SHA256 signature, timestamp window.

The signature is HMAC-SHA256, keyed with the API secret, of the query string
concatenated with the request body (Binance's `totalParams`), without the
`signature` parameter itself; hex, case-insensitive. `timestamp` (ms) must not be
more than 1 s ahead of the server and not older than `recvWindow` (default 5000,
at most 60000). Errors: -2014 missing/malformed key, -2015 unknown key or missing
permission, -1022 bad signature, -1021 timestamp, -1102 missing parameter.
"""

from __future__ import annotations

import hmac
import re
import time
from typing import Any, Final

from api.accounts import ApiKey, find_api_key
from api.errors import ApiError, mandatory
from api.keycache import KeyCache
from api.params import Params
from api.sessions import session_key

API_KEY_HEADER: Final = "x-mbx-apikey"
KEY_RE: Final = re.compile(r"^[A-Za-z0-9]{16,128}$")
SIGNATURE_RE: Final = re.compile(r"^[0-9a-fA-F]{64}$")
DEFAULT_RECV_WINDOW: Final = 5000
MAX_RECV_WINDOW: Final = 60000
MAX_AHEAD_MS: Final = 1000


def sign(secret: str, payload: str) -> str:
    """The hex HMAC-SHA256 of `payload` (what a client sends as `signature`)."""
    return hmac.digest(secret.encode(), payload.encode(), "sha256").hex()  # one-shot HMAC (OpenSSL)


def _without_signature(raw: str) -> tuple[str, str | None]:
    if "signature=" not in raw:
        return raw, None
    kept, found = [], None
    for part in raw.split("&"):
        if part.startswith("signature="):
            found = part[len("signature="):]
        else:
            kept.append(part)
    return "&".join(kept), found


def signed_payload(params: Params) -> tuple[str, str | None]:
    """(totalParams without the signature, the signature sent)."""
    query, in_query = _without_signature(params.query)
    body, in_body = _without_signature(params.body)
    return query + body, in_query or in_body


async def api_key_only(client: Any, headers: Any, permission: str = "read") -> ApiKey:
    """The API key of a USER_STREAM request (key only, no signature), or an ApiError."""
    key_text = headers.get(API_KEY_HEADER)
    if not key_text and (session := await session_key(client, headers, permission)) is not None:
        return session  # the web UI's session cookie instead of a key (api.sessions)
    if not key_text or not KEY_RE.match(key_text):
        raise ApiError(-2014, "API-key format invalid.", 401)
    api_key = await find_api_key(client, key_text)
    if api_key is None or not api_key.allows(permission):
        raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    return api_key


async def authenticate(client: Any, headers: Any, params: Params, permission: str,
                       now_ms: int | None = None, *, keys: KeyCache | None = None) -> ApiKey:
    """The API key of a correctly signed, timely request allowed `permission`, or an ApiError.

    `keys`: look the key up through this cache (`api.keycache`) instead of in Redis every time.
    """
    key_text = headers.get(API_KEY_HEADER)
    if not key_text and (session := await session_key(client, headers, permission)) is not None:
        return session  # the web UI's session cookie instead of a key and signature (api.sessions)
    if not key_text or not KEY_RE.match(key_text):
        raise ApiError(-2014, "API-key format invalid.", 401)
    payload, signature = signed_payload(params)
    if not signature:
        raise mandatory("signature")
    timestamp = params.integer("timestamp", required=True)
    recv_window = params.integer("recvWindow", low=1)
    recv_window = DEFAULT_RECV_WINDOW if recv_window is None else recv_window
    if recv_window > MAX_RECV_WINDOW:
        raise ApiError(-1131, "recvWindow must be less than 60000")
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    assert timestamp is not None
    if timestamp - now > MAX_AHEAD_MS:
        raise ApiError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if now - timestamp > recv_window:
        raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")
    api_key = await (find_api_key(client, key_text) if keys is None else keys.get(key_text))
    if api_key is None or not api_key.allows(permission):
        raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    if not SIGNATURE_RE.match(signature) or not hmac.compare_digest(
            sign(api_key.secret, payload), signature.lower()):
        raise ApiError(-1022, "Signature for this request is not valid.")
    return api_key
