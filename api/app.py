"""The Litestar application: health, the Binance-compatible REST and WebSocket APIs, admin actions.

WebSockets (`api.ws`) need the app's lifespan: start-up starts the stream hub (the
fan-out reader of the published streams), shutdown stops it.

`create_app(exchange)` serves the exchange whose agents run in this process (or
elsewhere: the API reads only streams and read models in Redis, never agent memory).
The exchange's transport must be a `RedisTransport` or a `ClusterTransport` (its client serves the
read models; on a cluster `api.store` covers what differs).
"""

from __future__ import annotations

import functools
import time
from typing import Any

from litestar import Litestar, MediaType, Response, get
from litestar.datastructures import State

from api.accounts import seal_plain_secrets
from api.admin import admin_router
from api.context import ApiConfig, ApiContext
from api.errors import exception_handlers
from api.health import Health, archive_health, pipeline_health
from api.limits import WeightLimiter
from api.metrics import ApiMetrics, metrics_endpoint
from api.openapi import document
from api.orders import orders_router
from api.public import public_router
from api.replace import replace_router
from api.users import users_router
from api.writer import CommandWriter
from api.ws.hub import STOP_WAIT_S, Hub
from api.ws.limits import ConnectionAttempts
from api.ws.streams import stream_handlers
from api.ws.userdata import user_stream_router
from api.ws.wsapi import ws_api
from pipeline.exchange import Exchange
from ui import ui_router

DEFAULT_MAX_LAG = 10_000


@get("/healthz")
async def healthz(state: State) -> Response[Health]:
    """200 when every agent is running and caught up within its lag limit, else 503.

    Also reports the persister's archive lag (503 past `EXCHANGE_HEALTH_MAX_ARCHIVE_LAG`, if set: `api.health`).
    """
    exchange: Exchange = state.exchange
    health = await pipeline_health(exchange.app, state.max_lag, await archive_health(state))
    return Response(health, status_code=200 if health.ok else 503, media_type=MediaType.JSON)


@get("/api/v3/ping")
async def ping() -> dict[str, object]:
    """Binance: test connectivity."""
    return {}


@get("/api/v3/time")
async def server_time() -> dict[str, int]:
    """Binance: the server's time in milliseconds."""
    return {"serverTime": time.time_ns() // 1_000_000}


def create_app(exchange: Exchange, *, max_lag: int = DEFAULT_MAX_LAG, config: ApiConfig | None = None,
               client: Any = None, database_url: str | None = None) -> Litestar:
    """The API over `exchange` (`client`: a redis.asyncio client; default the transport's own).

    `database_url`: the archive's PostgreSQL, for `/metrics` and `/healthz` (default: DATABASE_URL,
    else the embedded PostgreSQL next to an embedded Valkey).
    """
    config = config or ApiConfig.from_env()
    if client is None:
        client = getattr(exchange.app.transport, "client", None)
        if client is None:
            raise TypeError("the API needs a Redis transport (or pass client=)")
    api = ApiContext(exchange, client, CommandWriter(exchange.orders_in, client), config)
    hub = Hub(api)
    metrics = ApiMetrics(database_url=database_url, database_resolved=database_url is not None)
    limiter = WeightLimiter(config.weight_per_minute, client=client)  # shared by every replica
    app = Litestar(
        route_handlers=[healthz, ping, server_time, public_router, orders_router, replace_router,
                        admin_router, user_stream_router, *stream_handlers, ws_api, users_router(), ui_router(),
                        metrics_endpoint],
        state=State({"exchange": exchange, "max_lag": max_lag, "api": api, "hub": hub, "limiter": limiter,
                     "database_url": database_url,
                      "metrics": metrics, "ws_attempts": ConnectionAttempts(config.ws_connections_per_5m)}),
        exception_handlers=exception_handlers(),
        # every parameter bound: Litestar passes the app to a hook that still takes one (here: `box`)
        on_startup=[hub.start, api.keys.start, limiter.start, functools.partial(seal_plain_secrets, client, None)],
        on_shutdown=[functools.partial(hub.stop, STOP_WAIT_S), api.keys.stop, limiter.stop, api.writer.close],
        before_request=limiter.before_request,
        request_max_body_size=config.max_body_bytes,
        middleware=[metrics.middleware],
    )
    document(app)  # the Binance parameters in the OpenAPI document
    return app
