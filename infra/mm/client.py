"""A small Binance Spot REST client (httpx): public GETs and HMAC-SHA256 signed requests.

Signing follows Binance (and `api/auth.py`): the hex HMAC-SHA256, keyed with the API
secret, of the url-encoded parameters, sent as `signature`, with the key in the
`X-MBX-APIKEY` header. Errors come back as `BinanceError` (the `{"code", "msg"}` answer,
or code 0 for a transport failure); 429/418/503 carry the server's `Retry-After`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any
from urllib.parse import urlencode

import httpx

from infra.mm.rules import MarketRules
from pipeline.errors import ExchangeError

KEEPALIVE_S = 2.0


def quiet_http_logs() -> None:
    """httpx logs every request at INFO: keep that out of an operator's terminal."""
    logger = logging.getLogger("httpx")
    if logger.level == logging.NOTSET or logger.level < logging.WARNING:
        logger.setLevel(logging.WARNING)


class BinanceError(ExchangeError):
    """A request the exchange refused (Binance code and message) or could not be made (code 0)."""

    def __init__(self, status: int, code: int, msg: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {msg}" if code else msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.retry_after = retry_after


class BinanceClient:
    """REST calls of one account (or none, for market data only) against one base URL."""

    def __init__(self, base_url: str, api_key: str | None = None, api_secret: str | None = None, *,
                 timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None,
                 recv_window_ms: int = 10_000) -> None:
        self._key = api_key
        self._secret = api_secret
        self._recv_window = recv_window_ms
        # Idle connections are dropped before a server would close them (uvicorn: after 5 s), so a
        # request never goes out on a connection the server is closing at that very moment.
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport,
                                       limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S),
                                       headers={"User-Agent": "exchange-mm"})

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, params: dict[str, Any], signed: bool) -> Any:
        headers: dict[str, str] = {}
        if signed:
            if not self._key or not self._secret:
                raise BinanceError(0, 0, "this request needs an API key and secret")
            params = {**params, "recvWindow": self._recv_window, "timestamp": time.time_ns() // 1_000_000}
            query = urlencode(params)
            query += "&signature=" + hmac.new(self._secret.encode(), query.encode(), hashlib.sha256).hexdigest()
            headers["X-MBX-APIKEY"] = self._key
        else:
            query = urlencode(params)
        url = f"{path}?{query}" if query else path
        try:
            response = await self._http.request(method, url, headers=headers)
        except httpx.HTTPError as exc:
            raise BinanceError(0, 0, f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 200:
            try:
                return response.json()
            except ValueError:
                raise BinanceError(200, 0, f"{method} {path}: the answer is not JSON") from None
        retry = response.headers.get("Retry-After")
        try:
            body = response.json()
            code, msg = int(body.get("code", 0)), str(body.get("msg", response.text))
        except (ValueError, AttributeError):
            code, msg = 0, f"HTTP {response.status_code}"
        raise BinanceError(response.status_code, code, msg, float(retry) if retry else None)

    async def get(self, path: str, **params: Any) -> Any:
        """A public (unsigned) GET."""
        return await self._send("GET", path, params, signed=False)

    async def signed(self, method: str, path: str, **params: Any) -> Any:
        """A SIGNED request (parameters in the query string, as Binance allows for every method)."""
        return await self._send(method, path, {k: v for k, v in params.items() if v is not None}, signed=True)

    # ------------------------------------------------------------------ the calls the bot makes

    async def markets(self) -> dict[str, MarketRules]:
        info = await self.get("/api/v3/exchangeInfo")
        return {s["symbol"]: MarketRules.from_symbol_info(s) for s in info["symbols"]}

    async def balances(self) -> dict[str, tuple[str, str]]:
        """Asset -> (free, locked) decimal strings."""
        account = await self.signed("GET", "/api/v3/account")
        return {b["asset"]: (b["free"], b["locked"]) for b in account["balances"]}

    async def open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.signed("GET", "/api/v3/openOrders", symbol=symbol)
        return result

    async def place(self, rules: MarketRules, side: str, order_type: str, price_ticks: int, lots: int, *,
                    time_in_force: str | None = None, client_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.signed(
            "POST", "/api/v3/order", symbol=rules.symbol, side=side, type=order_type, timeInForce=time_in_force,
            price=rules.price_str(price_ticks), quantity=rules.qty_str(lots), newClientOrderId=client_id,
            newOrderRespType="RESULT")
        return result

    async def cancel(self, symbol: str, order_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.signed("DELETE", "/api/v3/order", symbol=symbol, orderId=order_id)
        return result

    async def cancel_all(self, symbol: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.signed("DELETE", "/api/v3/openOrders", symbol=symbol)
        return result

    async def book_ticker(self, symbol: str | None = None) -> Any:
        return await self.get("/api/v3/ticker/bookTicker", **({"symbol": symbol} if symbol else {}))

    async def last_prices(self) -> dict[str, str]:
        return {row["symbol"]: row["price"] for row in await self.get("/api/v3/ticker/price")}
