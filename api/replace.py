"""POST /api/v3/order/cancelReplace: cancel an open order and place a new one in one engine step.

Only `cancelReplaceMode=STOP_ON_FAILURE` (the engine's `CancelReplace`): if the cancel
fails, the new order is not placed. If validation or risk refuses the new order, the
whole command is refused before the matcher and the old order stays open
(`cancelResult` NOT_ATTEMPTED). Failures answer -2021 with Binance's `data` object.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, Router, post

from api.errors import UNKNOWN_ORDER, ApiError, illegal, rejection
from api.orders import (
    MS,
    OPEN,
    cancel_json,
    client_order_id_param,
    fill_json,
    find_order,
    load_view,
    parse_order,
    result_json,
    signed_request,
    timeout_error,
    user_fills,
    wait_for,
)
from pipeline.agents.publish.messages import OrderView
from pipeline.core.messages import CancelReplace


def _failure(cancel: str, new: str, cancel_response: Any, new_response: Any) -> Response[dict[str, Any]]:
    partial = cancel == "SUCCESS"
    return Response({"code": -2021 if partial else -2022,
                     "msg": "Order cancel-replace partially failed." if partial else "Order cancel-replace failed.",
                     "data": {"cancelResult": cancel, "newOrderResult": new, "cancelResponse": cancel_response,
                              "newOrderResponse": new_response}}, status_code=400, media_type=MediaType.JSON)


@post("/order/cancelReplace", status_code=200)
async def cancel_replace(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    ctx, params, key = await signed_request(request, "trade")
    mode = params.req("cancelReplaceMode")
    if mode != "STOP_ON_FAILURE":
        raise illegal("cancelReplaceMode", "STOP_ON_FAILURE")
    cancel_id = params.integer("cancelOrderId", low=1)
    cancel_client_id = params.text("cancelOrigClientOrderId")
    if cancel_id is None and cancel_client_id is None:
        raise ApiError(-1102, "Param 'cancelOrigClientOrderId' or 'cancelOrderId' must be sent, but both were "
                              "empty/null!")
    cancel_new_id = client_order_id_param(params, "cancelNewClientOrderId")
    order, market, resp_type, stp = parse_order(ctx, params, key.account_id)
    old = await find_order(ctx, key.account_id, market, cancel_id, cancel_client_id, wait=True)
    if old is None or old.status not in OPEN:
        code, msg = UNKNOWN_ORDER
        return _failure("FAILURE", "NOT_ATTEMPTED", {"code": code, "msg": msg}, None)
    ts = time.time_ns()

    def command(oid: int) -> CancelReplace:
        new_order = msgspec.structs.replace(order, order_id=oid, ts=ts)
        return CancelReplace(ts, key.account_id, market.symbol, new_order, cancel_order_id=old.order_id)

    _, written = await ctx.writer.write_new(key.account_id, market.symbol, command)
    order = written.new_order
    order_id = order.order_id

    async def outcome() -> tuple[OrderView, OrderView] | None:
        new = await load_view(ctx, market.symbol, order_id)
        if new is None:
            return None
        current = await load_view(ctx, market.symbol, old.order_id)
        return (new, current) if current is not None else None

    views = await wait_for(outcome, ctx.config.result_timeout_s)
    if views is None:
        raise timeout_error(market, order_id, "the cancel-replace")
    new, current = views
    canceled = current.status == "CANCELED"
    cancel_response = cancel_json(market, current, cancel_new_id, ts // MS)
    if new.status == "REJECTED":
        if new.reason == "CANCEL_REPLACE_FAILED":
            code, msg = UNKNOWN_ORDER
            return _failure("FAILURE", "NOT_ATTEMPTED", {"code": code, "msg": msg}, None)
        error = rejection(new.reason)
        new_error = {"code": error.code, "msg": error.msg}
        if canceled:
            return _failure("SUCCESS", "FAILURE", cancel_response, new_error)
        return _failure("NOT_ATTEMPTED", "FAILURE", None, new_error)
    new_response: dict[str, Any] = (
        {"symbol": market.symbol, "orderId": order_id, "orderListId": -1, "clientOrderId": order.client_order_id,
         "transactTime": ts // MS} if resp_type == "ACK" else result_json(market, new, ts // MS, stp))
    if resp_type == "FULL":
        fills = await user_fills(ctx, key.account_id, market.symbol, order_id) if new.filled_lots else []
        new_response["fills"] = [fill_json(market, f) for f in fills]
    return Response({"cancelResult": "SUCCESS", "newOrderResult": "SUCCESS", "cancelResponse": cancel_response,
                     "newOrderResponse": new_response}, status_code=200, media_type=MediaType.JSON)


replace_router = Router(path="/api/v3", route_handlers=[cancel_replace])
