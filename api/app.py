"""The Litestar application: health now; the Binance-compatible API builds on it.

`create_app(exchange)` serves the exchange whose agents run in this process (or
elsewhere: the API reads only streams and read models in Redis, never agent memory).
"""

from __future__ import annotations

import time

from litestar import Litestar, MediaType, Response, get
from litestar.datastructures import State

from api.health import Health, pipeline_health
from pipeline.exchange import Exchange

DEFAULT_MAX_LAG = 10_000


@get("/healthz")
async def healthz(state: State) -> Response[Health]:
    """200 when every agent is running and caught up within its lag limit, else 503."""
    exchange: Exchange = state.exchange
    health = await pipeline_health(exchange.app, state.max_lag)
    return Response(health, status_code=200 if health.ok else 503, media_type=MediaType.JSON)


@get("/api/v3/ping")
async def ping() -> dict[str, object]:
    """Binance: test connectivity."""
    return {}


@get("/api/v3/time")
async def server_time() -> dict[str, int]:
    """Binance: the server's time in milliseconds."""
    return {"serverTime": time.time_ns() // 1_000_000}


def create_app(exchange: Exchange, *, max_lag: int = DEFAULT_MAX_LAG) -> Litestar:
    """The API over `exchange`."""
    return Litestar(
        route_handlers=[healthz, ping, server_time],
        state=State({"exchange": exchange, "max_lag": max_lag}),
    )
