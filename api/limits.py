"""Request-weight rate limits, Binance style: weight per endpoint, per client IP, per minute.

Over the limit a request gets 429, code -1003 and `Retry-After` (seconds to the next
minute) and `X-MBX-USED-WEIGHT-1M`. Counters live in this process
(one API worker); with several workers each enforces its own share. Weights are
fixed per route (Binance varies some with `limit` and `symbol`; ours use the common case).
"""

from __future__ import annotations

import time
from typing import Any, Final

from litestar import MediaType, Request, Response

DEFAULT_WEIGHT: Final = 1
WEIGHTS: Final[dict[str, int]] = {
    "/api/v3/exchangeInfo": 20, "/api/v3/depth": 5, "/api/v3/trades": 25, "/api/v3/klines": 2,
    "/api/v3/ticker/24hr": 2, "/api/v3/ticker/price": 2, "/api/v3/ticker/bookTicker": 2, "/api/v3/avgPrice": 2,
    "GET /api/v3/order": 4, "/api/v3/openOrders": 6, "/api/v3/allOrders": 20, "/api/v3/myTrades": 20,
    "/api/v3/account": 20,
}


def weight_of(method: str, path: str) -> int:
    return WEIGHTS.get(f"{method} {path}", WEIGHTS.get(path, DEFAULT_WEIGHT))


class WeightLimiter:
    """Fixed one-minute windows of used weight per client IP."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._minute = 0
        self._used: dict[str, int] = {}

    def spend(self, client: str, weight: int, now: float | None = None) -> tuple[int, int]:
        """(weight used this minute including this request, seconds until the window resets)."""
        now = time.time() if now is None else now
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._used = minute, {}
        used = self._used.get(client, 0) + weight
        self._used[client] = used
        return used, 60 - int(now % 60)

    async def before_request(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]] | None:
        if self.per_minute <= 0 or not request.url.path.startswith("/api/"):
            return None
        client = request.client.host if request.client else "?"
        used, retry = self.spend(client, weight_of(request.method, request.url.path))
        if used > self.per_minute:
            return Response({"code": -1003, "msg": f"Too many requests; current limit of IP({client}) is "
                                                   f"{self.per_minute} requests per minute. Please use the "
                                                   "websocket for live updates to avoid polling the API."},
                            status_code=429, media_type=MediaType.JSON,
                            headers={"Retry-After": str(retry), "X-MBX-USED-WEIGHT-1M": str(used)})
        return None
