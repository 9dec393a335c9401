"""The Binance endpoints' parameters in the OpenAPI document the app serves (`/schema/openapi.json`).

Handlers read their parameters by hand (`api.params`, so that each bad input gets its
Binance code), so Litestar cannot see them; this module declares them explicitly:
query parameters for GET and DELETE, a form body (`application/x-www-form-urlencoded`)
for POST and PUT (Binance also takes those in the query string), the
`X-MBX-APIKEY` header and `timestamp` / `recvWindow` / `signature` on signed
endpoints, and Binance's error body `{"code", "msg"}` for 4xx/5xx answers.
`document(app)` attaches them to the app's handlers before the schema is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from litestar import Litestar
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)
from litestar.routes import HTTPRoute

from api.klines import BINANCE_INTERVALS
from api.params import DECIMAL_LEGAL


@dataclass(frozen=True)
class Param:
    """One Binance parameter: name, JSON schema, required, description."""

    name: str
    schema: Schema
    required: bool = False
    description: str = ""


def _int(low: int | None = None, high: int | None = None) -> Schema:
    return Schema(type=OpenAPIType.INTEGER, format="int64", minimum=low, maximum=high)  # type: ignore[arg-type]


def _str(pattern: str | None = None, enum: list[str] | None = None, max_length: int | None = None) -> Schema:
    return Schema(type=OpenAPIType.STRING, pattern=pattern, enum=enum, max_length=max_length)


SYMBOL: Final = _str("^[A-Z0-9-_.]{1,20}$")
DECIMAL: Final = _str(DECIMAL_LEGAL)
CLIENT_ID: Final = _str("^[.A-Z:/a-z0-9_-]{1,36}$")
MS_TIME: Final = _int(0)


def p(name: str, schema: Schema, required: bool = False, description: str = "") -> Param:
    return Param(name, schema, required, description)


SIGNED: Final = (
    p("timestamp", MS_TIME, True, "Milliseconds since the epoch; within recvWindow of the server's time."),
    p("recvWindow", _int(1, 60000), description="Milliseconds the request stays valid (default 5000)."),
    p("signature", _str("^[0-9a-fA-F]{64}$"), True,
      "Hex HMAC-SHA256, keyed with the API secret, of the query string followed by the body."),
)
SYMBOLS: Final = p("symbols", _str(), description='A JSON array of symbols, e.g. ["BTCUSDT","ETHUSDT"].')
ORDER_REF: Final = (p("orderId", _int(1)), p("origClientOrderId", CLIENT_ID))
NEW_ORDER: Final = (
    p("symbol", SYMBOL, True), p("side", _str(enum=["BUY", "SELL"]), True),
    p("type", _str(enum=["LIMIT", "LIMIT_MAKER", "MARKET"]), True),
    p("timeInForce", _str(enum=["GTC", "IOC", "FOK"]), description="LIMIT only (required there)."),
    p("quantity", DECIMAL), p("quoteOrderQty", DECIMAL, description="MARKET only, instead of quantity."),
    p("price", DECIMAL, description="LIMIT and LIMIT_MAKER only (required there)."),
    p("newClientOrderId", CLIENT_ID),
    p("newOrderRespType", _str(enum=["ACK", "RESULT", "FULL"]),
      description="ACK answers once the order is durably queued; RESULT and FULL wait for the engine."),
    p("selfTradePreventionMode", _str(enum=["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"])),
)
RANGE: Final = (p("startTime", MS_TIME), p("endTime", MS_TIME))

PARAMS: Final[dict[tuple[str, str], tuple[Param, ...]]] = {
    ("GET", "/api/v3/exchangeInfo"): (p("symbol", SYMBOL), SYMBOLS),
    ("GET", "/api/v3/depth"): (p("symbol", SYMBOL, True), p("limit", _int(1, 5000))),
    ("GET", "/api/v3/trades"): (p("symbol", SYMBOL, True), p("limit", _int(1, 1000))),
    ("GET", "/api/v3/historicalTrades"): (p("symbol", SYMBOL, True), p("limit", _int(1, 1000)),
                                          p("fromId", _int(0))),
    ("GET", "/api/v3/aggTrades"): (p("symbol", SYMBOL, True), p("fromId", _int(0)), *RANGE,
                                   p("limit", _int(1, 1000))),
    ("GET", "/api/v3/klines"): (p("symbol", SYMBOL, True), p("interval", _str(enum=list(BINANCE_INTERVALS)), True),
                                *RANGE, p("limit", _int(1, 1000), description="more than 1000 reads as 1000"),
                                p("timeZone", _str(r"^[+-]?[0-9]{1,2}(:[0-9]{2})?$"),
                                  description="-12:00 to +14:00; the windows of the intervals move with it")),
    ("GET", "/api/v3/ticker/24hr"): (p("symbol", SYMBOL), SYMBOLS, p("type", _str(enum=["FULL", "MINI"]))),
    ("GET", "/api/v3/ticker/price"): (p("symbol", SYMBOL), SYMBOLS),
    ("GET", "/api/v3/ticker/bookTicker"): (p("symbol", SYMBOL), SYMBOLS),
    ("GET", "/api/v3/avgPrice"): (p("symbol", SYMBOL, True),),
    ("POST", "/api/v3/order"): (*NEW_ORDER, *SIGNED),
    ("POST", "/api/v3/order/test"): (*NEW_ORDER, *SIGNED),
    ("GET", "/api/v3/order"): (p("symbol", SYMBOL, True), *ORDER_REF, *SIGNED),
    ("DELETE", "/api/v3/order"): (p("symbol", SYMBOL, True), *ORDER_REF, p("newClientOrderId", CLIENT_ID),
                                  *SIGNED),
    ("POST", "/api/v3/order/cancelReplace"): (
        *NEW_ORDER, p("cancelReplaceMode", _str(enum=["STOP_ON_FAILURE"]), True), p("cancelOrderId", _int(1)),
        p("cancelOrigClientOrderId", CLIENT_ID), p("cancelNewClientOrderId", CLIENT_ID), *SIGNED),
    ("GET", "/api/v3/openOrders"): (p("symbol", SYMBOL), *SIGNED),
    ("DELETE", "/api/v3/openOrders"): (p("symbol", SYMBOL, True), *SIGNED),
    ("GET", "/api/v3/allOrders"): (p("symbol", SYMBOL, True), p("orderId", _int(0)), *RANGE,
                                   p("limit", _int(1, 1000)), *SIGNED),
    ("GET", "/api/v3/myTrades"): (p("symbol", SYMBOL, True), p("orderId", _int(1)), p("fromId", _int(0)), *RANGE,
                                  p("limit", _int(1, 1000)), *SIGNED),
    ("GET", "/api/v3/account"): (p("omitZeroBalances", _str(enum=["true", "false"])), *SIGNED),
    ("POST", "/api/v3/userDataStream"): (),
    ("PUT", "/api/v3/userDataStream"): (p("listenKey", _str("^[A-Za-z0-9]{60}$"), True),),
    ("DELETE", "/api/v3/userDataStream"): (p("listenKey", _str("^[A-Za-z0-9]{60}$"), True),),
    ("POST", "/api/x/admin/deposit"): (p("account", _int(1), True), p("asset", _str(max_length=20), True),
                                       p("amount", DECIMAL, True), *SIGNED),
    ("POST", "/api/x/admin/market"): (p("symbol", SYMBOL, True), p("status", _str(enum=["trading", "halted"]), True),
                                      *SIGNED),
}
"""Every Binance-style endpoint's parameters, by (method, path)."""

KEY_ONLY: Final = frozenset({"/api/v3/userDataStream"})
"""Endpoints that take the API key header but no signature (Binance USER_STREAM)."""

ERROR_BODY: Final = Schema(type=OpenAPIType.OBJECT, required=["code", "msg"], properties={
    "code": Schema(type=OpenAPIType.INTEGER, description="Binance error code (negative)."),
    "msg": Schema(type=OpenAPIType.STRING)})
ERROR_STATUSES: Final = {"400": "Bad request (Binance code in the body)",
                         "401": "Missing, unknown or unauthorised API key", "404": "Not found",
                         "413": "Request body too large", "415": "Unsupported Content-Type",
                         "429": "Rate limit exceeded (Retry-After)",
                         "503": "Overloaded, or the engine did not answer in time (the order is queued, not lost)"}


def _operation_class(method: str, path: str, params: tuple[Param, ...]) -> type[Operation]:
    signed = any(param.name == "signature" for param in params)
    keyed = signed or path in KEY_ONLY
    in_body = method in ("POST", "PUT")

    @dataclass
    class BinanceOperation(Operation):
        def __post_init__(self) -> None:
            declared: list[Any] = []
            if keyed:
                declared.append(Parameter(name="X-MBX-APIKEY", param_in="header", required=True,
                                          schema=_str("^[A-Za-z0-9]{16,128}$"), description="The API key."))
            if in_body and params:
                form = Schema(type=OpenAPIType.OBJECT, properties={q.name: q.schema for q in params},
                              required=[q.name for q in params if q.required] or None, additional_properties=False)
                self.request_body = RequestBody(
                    content={"application/x-www-form-urlencoded": OpenAPIMediaType(schema=form)},
                    required=any(q.required for q in params),
                    description="Parameters, form-encoded (they may also be sent in the query string).")
            else:
                declared += [Parameter(name=q.name, param_in="query", required=q.required,
                                       schema=q.schema, description=q.description or None) for q in params]
            self.parameters = declared or None
            responses = dict(self.responses or {})
            for status, text in ERROR_STATUSES.items():
                responses.setdefault(status, OpenAPIResponse(description=text, content={
                    "application/json": OpenAPIMediaType(schema=ERROR_BODY)}))
            self.responses = responses

    BinanceOperation.__name__ = BinanceOperation.__qualname__ = "BinanceOperation"
    return BinanceOperation


def document(app: Litestar) -> None:
    """Give each Binance-style handler of `app` its declared parameters in the OpenAPI document."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, _) in route.route_handler_map.items():
            params = PARAMS.get((str(method), route.path))
            if params is not None:
                handler.operation_class = _operation_class(str(method), route.path, params)
