"""Binance-style errors: `{"code": ..., "msg": ...}` with Binance's codes and HTTP statuses.

Handlers raise `ApiError`; `exception_handlers()` turns it, Litestar's own HTTP errors
(404, 405, 413, ...), pipeline backpressure and anything unexpected into that JSON.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

from pipeline.core.messages import BINANCE_ERRORS
from pipeline.errors import BackpressureError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the API refuses: Binance error code, message and HTTP status."""

    def __init__(self, code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}


def mandatory(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def illegal(name: str, legal: str = "") -> ApiError:
    suffix = f"; legal range is '{legal}'." if legal else "."
    return ApiError(-1100, f"Illegal characters found in parameter '{name}'{suffix}")


def not_required(name: str) -> ApiError:
    return ApiError(-1106, f"Parameter '{name}' sent when not required.")


def invalid_symbol() -> ApiError:
    return ApiError(-1121, "Invalid symbol.")


def rejection(reason: str) -> ApiError:
    """The API error of a pipeline rejection reason (`BINANCE_ERRORS`)."""
    code, msg = BINANCE_ERRORS.get(reason, (-2010, reason))
    return ApiError(code, msg)


ORDER_DOES_NOT_EXIST = (-2013, "Order does not exist.")
UNKNOWN_ORDER = (-2011, "Unknown order sent.")
OVERLOADED = ApiError(-1008, "Server is currently overloaded with other requests. Please try again in a few minutes.",
                      503, {"Retry-After": "1"})


def _json(code: int, msg: str, status: int, headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    return Response({"code": code, "msg": msg}, status_code=status, media_type=MediaType.JSON, headers=headers)


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[dict[str, Any]]:
    return _json(exc.code, exc.msg, exc.status, exc.headers)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    if status == 413:
        return _json(-1104, "Request body too large.", 413)
    if status == 404:
        return _json(-1000, "Not found.", 404)
    if status == 405:
        return _json(-1000, "Method not allowed.", 405)
    if status >= 500:
        log.error("HTTP %s: %s", status, exc.detail)
        return _json(-1000, "An unknown error occurred while processing the request.", status)
    return _json(-1000, str(exc.detail), status, dict(exc.headers or {}))


def _backpressure(_: Request[Any, Any, Any], exc: BackpressureError) -> Response[dict[str, Any]]:
    return _api_error(_, OVERLOADED)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    # Log the path only: query strings and bodies may carry signatures.
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _json(-1000, "An unknown error occurred while processing the request.", 500)


def exception_handlers() -> dict[Any, Any]:
    """The app's exception handlers: every error leaves as Binance JSON."""
    return {
        ApiError: _api_error,
        HTTPException: _http_error,
        BackpressureError: _backpressure,
        Exception: _unexpected,
    }
